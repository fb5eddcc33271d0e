"""The synthetic catalog generator: valid, counted and deterministic."""

from __future__ import annotations

from pathlib import Path

from wavekit.adapters.catalog import load_catalog
from wavekit.examples.synth import generate_catalog

FILES = ("packages.yaml", "identities.csv", "entitlements.csv", "memberships.csv")


def _generate(path: Path, seed: int = 0) -> dict[str, int]:
    return generate_catalog(path, identities=2_000, packages=20, waves=4, seed=seed,
                            members_per_package=(20, 150))


def test_generated_catalog_loads_and_counts_match(tmp_path: Path) -> None:
    counts = _generate(tmp_path)
    catalog = load_catalog(tmp_path)
    assert len(catalog.identities) == counts["identities"] == 2_000
    assert len(catalog.packages) == counts["packages"] == 20
    assert len(catalog.entitlements) == counts["entitlements"]
    assert sum(len(p.members) for p in catalog.packages) == counts["memberships"]
    assert sum(len(p.depends_on) for p in catalog.packages) == counts["dependencies"]
    assert len(catalog.sod_rules) == counts["sod_rules"]
    assert {w["number"] for w in catalog.waves} == {1, 2, 3, 4}
    waves = {p.key: p.wave for p in catalog.packages}
    for p in catalog.packages:
        assert p.owner_name and p.owner_slack_id and p.delegates
        assert p.fallback_plan and p.risk in ("low", "medium", "high")
        assert 5 <= len(p.entitlements) <= 15
        assert 20 <= len(p.members) <= 150
        assert all(waves[d] < p.wave for d in p.depends_on)  # earlier waves only: no cycle
    # Separation-of-duties rules never pair two entitlements of the same package.
    grants = {p.key: set(p.entitlements) for p in catalog.packages}
    for rule in catalog.sod_rules:
        assert not any({rule["entitlement_a"], rule["entitlement_b"]} <= g
                       for g in grants.values())


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _generate(a) == _generate(b)
    _generate(c, seed=1)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "memberships.csv").read_bytes() != (c / "memberships.csv").read_bytes()

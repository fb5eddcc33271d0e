"""Large synthetic catalogs in the documented format, for benchmarks and scale tests.

`generate_catalog` writes packages.yaml, identities.csv, entitlements.csv and memberships.csv
that `wavekit.adapters.catalog.load_catalog` accepts. Identities are built with numpy/pandas column
operations; the only Python loops run over packages (hundreds), never over identities.
Same arguments and seed, byte-identical files.

What the catalog holds:

- identities: people (about 95%) and service accounts, spread over departments; about 2%
  are inactive; people have Slack ids and a manager.
- entitlements: each package has its own, 5-15 by default, about 10% privileged.
- packages: an owner who is an active person of the package's department (name, Slack id,
  email) and one delegate, a risk, a wave (packages are spread evenly over the waves), a
  release date, a fallback plan (drill mostly signed), a population rule, and sometimes
  dependencies, always on packages of an earlier wave, so there is never a cycle.
- memberships: distinct active identities, drawn from the package's department when it has
  enough of them, else from every active identity.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

DEPARTMENTS = np.array(["Finance", "IT Support", "Procurement", "HR Ops", "Warehouse Ops",
                        "Sales", "Marketing", "Legal", "Engineering", "Customer Care"])
SYSTEMS = np.array(["SAP FI", "ServiceNow", "Workday", "Coupa", "Manhattan WMS", "Salesforce",
                    "M365", "Okta", "GitHub", "Zendesk"])
TITLES = np.array(["Analyst", "Specialist", "Coordinator", "Manager", "Lead", "Engineer",
                   "Associate", "Director"])
LOCATIONS = np.array(["London", "Dublin", "Austin", "Singapore", "Berlin", "Toronto", "Sydney"])
FIRST = np.array(["Ava", "Ben", "Chloe", "Dan", "Ella", "Finn", "Grace", "Hugo", "Isla", "Jack",
                  "Kara", "Liam", "Maya", "Noah", "Olivia", "Priya", "Quinn", "Ravi", "Sofia",
                  "Tom", "Uma", "Victor", "Wen", "Yusuf", "Zoe"])
LAST = np.array(["Adams", "Brown", "Chen", "Davis", "Evans", "Fernandez", "Garcia", "Hughes",
                 "Ito", "Jones", "Khan", "Lopez", "Martin", "Nguyen", "Okafor", "Patel", "Quinn",
                 "Roberts", "Smith", "Taylor", "Usman", "Varga", "Wilson", "Xu", "Young"])
RISKS = np.array(["low", "medium", "high"])
RISK_WEIGHTS = np.array([0.6, 0.3, 0.1])
START_DATE = dt.date(2026, 4, 8)
WAVE_DAYS = 7  # one wave a week


def _ids(prefix: str, n: int, width: int) -> pd.Series:
    """prefix000001, prefix000002, ... as a string Series, vectorised."""
    return prefix + pd.Series(np.arange(n)).astype(str).str.zfill(width)


def _identities(n: int, rng: np.random.Generator) -> pd.DataFrame:
    first = FIRST[rng.integers(0, len(FIRST), n)]
    last = LAST[rng.integers(0, len(LAST), n)]
    num = pd.Series(np.arange(n)).astype(str).str.zfill(6)
    ids = (pd.Series(first).str[0].str.lower() + pd.Series(last).str.lower() + num)
    kind = np.where(rng.random(n) < 0.05, "service", "person")
    person = kind == "person"
    dept = DEPARTMENTS[rng.integers(0, len(DEPARTMENTS), n)]
    # A manager is a person with a lower index (none for the first identity): no self-loops.
    boss = np.floor(rng.random(n) * np.arange(n)).astype(np.int64)
    manager = np.where(person & (np.arange(n) > 0), ids.to_numpy()[boss], "")
    display = np.where(person, pd.Series(first) + " " + pd.Series(last),
                       "svc " + ids)
    return pd.DataFrame({
        "id": ids,
        "display_name": display,
        "email": ids + "@example.com",
        "department": dept,
        "business_unit": dept,
        "title": np.where(person, TITLES[rng.integers(0, len(TITLES), n)], "Service account"),
        "location": LOCATIONS[rng.integers(0, len(LOCATIONS), n)],
        "kind": kind,
        "active": np.where(rng.random(n) < 0.02, "false", "true"),
        "slack_id": np.where(person, _ids("U", n, 8), ""),
        "manager": manager,
    })


def _dump_yaml(doc: dict[str, Any], path: Path) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w") as fh:
        fh.write("# Synthetic catalog written by wavekit.examples.synth.generate_catalog.\n")
        yaml.dump(doc, fh, Dumper=dumper, sort_keys=False, width=100,
                  default_flow_style=None)


def generate_catalog(
    out_dir: str | Path,
    *,
    identities: int = 100_000,
    packages: int = 500,
    entitlements_per_package: tuple[int, int] = (5, 15),
    members_per_package: tuple[int, int] = (20, 400),
    waves: int = 10,
    seed: int = 0,
) -> dict[str, int]:
    """Write a synthetic catalog to `out_dir`; counts of what was written, by table."""
    if identities < 1 or packages < 1 or waves < 1:
        raise ValueError("identities, packages and waves must be at least 1")
    e_lo, e_hi = entitlements_per_package
    m_lo, m_hi = members_per_package
    if not (1 <= e_lo <= e_hi and 1 <= m_lo <= m_hi):
        raise ValueError("ranges must be (low, high) with 1 <= low <= high")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    people = _identities(identities, rng)
    people.to_csv(out / "identities.csv", index=False)
    ids = people["id"].to_numpy()
    active = people["active"].to_numpy() == "true"
    is_person = people["kind"].to_numpy() == "person"
    dept_codes = pd.Categorical(people["department"], categories=DEPARTMENTS).codes
    all_active = np.flatnonzero(active)
    if len(all_active) == 0:
        raise ValueError("no active identity to make members of (use more identities)")
    pool = {d: np.flatnonzero(active & (dept_codes == d)) for d in range(len(DEPARTMENTS))}
    owners_pool = {d: np.flatnonzero(active & is_person & (dept_codes == d))
                   for d in range(len(DEPARTMENTS))}
    any_owner = np.flatnonzero(active & is_person)
    if len(any_owner) == 0:
        raise ValueError("no active person to own packages (use more identities)")

    # Entitlements: a contiguous block per package, keys p0000-e00.
    n_ent = rng.integers(e_lo, e_hi + 1, packages)
    ent_pkg = np.repeat(np.arange(packages), n_ent)
    ent_idx = np.arange(n_ent.sum()) - np.repeat(np.cumsum(n_ent) - n_ent, n_ent)
    pkg_keys = _ids("pkg-", packages, 4).to_numpy()
    ent_keys = (pd.Series(pkg_keys[ent_pkg]) + "-e"
                + pd.Series(ent_idx).astype(str).str.zfill(2))
    privileged = rng.random(len(ent_keys)) < 0.1
    ent_system = SYSTEMS[rng.integers(0, len(SYSTEMS), len(ent_keys))]
    pd.DataFrame({
        "key": ent_keys,
        "name": "Entitlement " + ent_keys,
        "system": ent_system,
        "description": "",
        "privileged": np.where(privileged, "true", "false"),
    }).to_csv(out / "entitlements.csv", index=False)
    ent_offsets = np.concatenate([[0], np.cumsum(n_ent)])

    # Packages: department, wave (even spread, ascending), risk, members.
    pkg_dept = rng.integers(0, len(DEPARTMENTS), packages)
    pkg_wave = 1 + (np.arange(packages) * waves) // packages
    pkg_risk = RISKS[rng.choice(len(RISKS), packages, p=RISK_WEIGHTS)]
    pkg_watch = rng.choice(np.array([7, 14, 21]), packages)
    drills = np.where(rng.random(packages) < 0.85, "signed", "pending")
    n_mem = rng.integers(m_lo, m_hi + 1, packages)
    member_rows: list[np.ndarray] = []
    docs: list[dict[str, Any]] = []
    ent_list = ent_keys.to_numpy()
    for p in range(packages):  # per package, never per identity
        d = int(pkg_dept[p])
        source = pool[d] if len(pool[d]) >= n_mem[p] else all_active
        chosen = np.sort(rng.choice(source, size=min(int(n_mem[p]), len(source)),
                                    replace=False))
        member_rows.append(chosen)
        owners = owners_pool[d] if len(owners_pool[d]) >= 2 else any_owner
        owner, delegate = rng.choice(owners, size=2, replace=len(owners) < 2)
        wave = int(pkg_wave[p])
        earlier = np.flatnonzero(pkg_wave < wave)
        deps: list[str] = []
        if len(earlier) and rng.random() < 0.2:
            k = min(int(rng.integers(1, 3)), len(earlier))
            deps = sorted(pkg_keys[rng.choice(earlier, size=k, replace=False)].tolist())
        dept = str(DEPARTMENTS[d])
        doc: dict[str, Any] = {
            "key": str(pkg_keys[p]),
            "name": f"{dept} role {p}",
            "description": f"Synthetic role package {p} for {dept}.",
            "owner": {"name": str(people.at[owner, "display_name"]),
                      "slack_id": str(people.at[owner, "slack_id"]),
                      "email": str(people.at[owner, "email"])},
            "delegates": [{"name": str(people.at[delegate, "display_name"]),
                           "slack_id": str(people.at[delegate, "slack_id"])}],
            "business_unit": dept,
            "risk": str(pkg_risk[p]),
            "wave": wave,
            "release_date": START_DATE + dt.timedelta(days=WAVE_DAYS * (wave - 1)),
            "watch_days": int(pkg_watch[p]),
            "entitlements": ent_list[ent_offsets[p]:ent_offsets[p + 1]].tolist(),
            "fallback": {"plan": "Revert to the prior bundle", "drill": str(drills[p])},
            "population_rule": f"department == '{dept}'",
        }
        if deps:
            doc["depends_on"] = deps
        docs.append(doc)

    sizes = np.array([len(m) for m in member_rows])
    memberships = pd.DataFrame({
        "package": np.repeat(pkg_keys, sizes),
        "identity": ids[np.concatenate(member_rows)],
    })
    memberships.to_csv(out / "memberships.csv", index=False)

    wave_docs = [{"number": w, "name": f"Wave {w}",
                  "window_start": START_DATE + dt.timedelta(days=WAVE_DAYS * (w - 1)),
                  "window_end": START_DATE + dt.timedelta(days=WAVE_DAYS * w - 1)}
                 for w in range(1, waves + 1)]
    # Separation of duties: pairs of privileged entitlements of different packages (one per
    # package), so no package's own grants conflict.
    first_priv = pd.Series(np.flatnonzero(privileged)).groupby(ent_pkg[privileged]).first()
    priv = ent_list[first_priv.to_numpy()]
    sod = [{"key": f"sod-{i:03d}", "entitlements": [str(a), str(b)],
            "description": "Synthetic separation-of-duties rule."}
           for i, (a, b) in enumerate(zip(priv[0:20:2], priv[1:20:2], strict=False))]
    _dump_yaml({"waves": wave_docs, "sod_rules": sod, "packages": docs}, out / "packages.yaml")
    return {
        "identities": identities,
        "entitlements": len(ent_keys),
        "packages": packages,
        "memberships": len(memberships),
        "waves": waves,
        "dependencies": sum(len(doc.get("depends_on", [])) for doc in docs),
        "sod_rules": len(sod),
    }

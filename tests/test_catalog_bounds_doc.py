"""The README's catalog bounds table is generated from the constants it documents: a bound
changed in code without the README (or the reverse) fails here."""

from __future__ import annotations

from pathlib import Path

from wavekit.adapters import catalog_schema as c
from wavekit.adapters import safe_yaml
from wavekit.adapters.safe_files import MB, Limits

README = Path(__file__).resolve().parents[1] / "README.md"


def _n(value: float) -> str:
    return f"{value:,g}" if value < 1e6 else f"{value:,.0f}"


def bounds_table() -> str:
    """The table as the README shows it (regenerate by printing this)."""
    limits = Limits()
    rows = [
        ("package, entitlement and `sod_rules` keys", f"`^{c.KEY_RE.pattern}$`"),
        ("`guards` names", f"`^{c.GUARD_RE.pattern}$`"),
        ("`wave`, a wave's `number`", f"1 to {_n(c.MAX_WAVE)}"),
        ("`watch_days`", f"1 to {_n(c.MAX_WATCH_DAYS)}"),
        ("health `interval_hours`, `window_hours`",
         f"{_n(c.MIN_INTERVAL_HOURS)} to {_n(c.MAX_HOURS)}"),
        ("health `start_after_hours`", f"0 to {_n(c.MAX_HOURS)}"),
        ("health `failure_limit`, `inconclusive_limit`, `error_limit`",
         f"0 to {_n(c.MAX_LIMIT)}"),
        ("rollout `soak_hours`", f"{_n(c.MIN_SOAK_HOURS)} to {_n(c.MAX_HOURS)}"),
        ("dates (`release_date`, `window_start`, `window_end`)",
         f"{c.FIRST_DATE.isoformat()} to {c.LAST_DATE.isoformat()}"),
        ("names / free text", f"{_n(c.NAME_LEN)} / {_n(c.TEXT_LEN)} characters"),
        ("`packages` / `sod_rules` / `waves` per catalog",
         f"{_n(c.MAX_PACKAGES)} / {_n(c.MAX_SOD_RULES)} / {_n(c.MAX_WAVE)}"),
        ("per package: `entitlements` / `depends_on` / `delegates` / `guards`",
         f"{_n(c.MAX_ENTITLEMENTS_PER_PACKAGE)} / {_n(c.MAX_DEPENDENCIES)} / "
         f"{_n(c.MAX_DELEGATES)} / {_n(c.MAX_GUARDS)}"),
        ("rollout steps (members and soaks) / named members",
         f"{_n(c.MAX_ROLLOUT_STEPS)} / {_n(c.MAX_NAMED_MEMBERS)}"),
        ("YAML nesting / alias expansion",
         f"{_n(safe_yaml.MAX_DEPTH)} levels / {_n(safe_yaml.MAX_EXPANSION)} nodes"),
        ("`packages.yaml` size (`WAVEKIT_MAX_YAML_MB`)", f"{_n(limits.yaml_bytes / MB)} MB"),
        ("each catalog CSV (`WAVEKIT_MAX_CSV_MB`)", f"{_n(limits.csv_bytes / MB)} MB"),
        ("each telemetry file (`WAVEKIT_MAX_TELEMETRY_MB`)",
         f"{_n(limits.telemetry_bytes / MB)} MB"),
        ("YAML aliases per document (`WAVEKIT_MAX_YAML_ALIASES`)", _n(limits.yaml_aliases)),
    ]
    return "\n".join(["| value | allowed |", "|---|---|",
                      *(f"| {what} | {bound} |" for what, bound in rows)])


def test_the_readme_bounds_table_matches_the_code() -> None:
    assert bounds_table() in README.read_text(encoding="utf-8"), (
        "README's catalog bounds differ from the code; paste this table:\n" + bounds_table())

"""The CLI is thin and documented: every command has help with an example and a README row."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from wavekit.present.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands() -> list[tuple[str, object]]:
    root = get_command(app)
    out = []
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            out += [(f"{name} {sub}", c) for sub, c in subs.items()]
        else:
            out.append((name, cmd))
    return out


@pytest.mark.parametrize("name,cmd", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_an_example_and_is_in_the_readme(name, cmd) -> None:
    help_text = cmd.help or ""
    assert "Example:" in help_text and f"wavekit {name}" in help_text, name
    assert f"`wavekit {name}" in README, f"README does not document `wavekit {name}`"


def test_validate_and_load_report_problems_and_write_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    bad = tmp_path / "cat"
    bad.mkdir()
    # Every documented column is in the header (a missing one is one problem and no rows).
    header = ("id,display_name,email,department,business_unit,title,location,kind,active,"
              "slack_id,manager")
    (bad / "identities.csv").write_text(f"{header}\nann,Ann,,,,,,,,,\nann,Ann again,,,,,,,,,\n")
    runner = CliRunner()
    result = runner.invoke(app, ["load", str(bad), "--database-url", url])
    assert result.exit_code == 1
    assert "nothing was written" in result.output and "duplicate identity id" in result.output
    status = runner.invoke(app, ["status", "--database-url", url])
    assert status.exit_code == 0 and "Finance" not in status.output


def test_load_plan_status_on_the_example(tmp_path: Path) -> None:
    from wavekit.examples import EXAMPLE_CATALOG

    url = f"sqlite:///{tmp_path / 'w.db'}"
    runner = CliRunner()
    loaded = runner.invoke(app, ["load", str(EXAMPLE_CATALOG), "--database-url", url])
    assert loaded.exit_code == 0 and "148 starting grants" in loaded.output, loaded.output
    plan = runner.invoke(app, ["plan", "--wave", "1", "--database-url", url],
                         env={"COLUMNS": "200"})
    assert plan.exit_code == 0, plan.output
    # The sandbox holds the catalog's starting grants (sandbox_seed.csv), as the demo's does:
    # 42 Finance members x 11 entitlements, less the 42 fin-ap-invoice-view grants they hold.
    assert "Finance Month-End Operator" in plan.output and str(42 * 11 - 42) in plan.output
    assert "nothing was written" in plan.output
    status = runner.invoke(app, ["status", "--database-url", url], env={"COLUMNS": "200"})
    assert "Release ready" in status.output and "Fallback tested" in status.output

"""The CLI says what is happening, fails in one line, and stops cleanly: tested through the
real command (Typer's runner, and the installed `wavekit` script as a subprocess)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import select
from typer.main import get_command
from typer.testing import CliRunner

from tests.support.servers import wait_until
from tests.test_cli import _commands
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.domain.clock import utcnow
from wavekit.examples import EXAMPLE_CATALOG, record_example_drills
from wavekit.present.cli import app

pytest_plugins = ["tests.support.prefect_server"]
WAVEKIT = Path(sys.executable).with_name("wavekit")
WAVE_1 = ("finance-month-end-operator", "hr-case-intake-specialist")


@pytest.mark.parametrize("name,cmd", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_help_shows_real_metavars_and_every_option_is_explained(name, cmd) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    options = [ln for ln in shown.output.splitlines() if ln.lstrip("│ ").startswith("--")]
    for line in options:  # an option shows its metavar (WAVE, URL...), a flag shows nothing
        assert not re.search(r"<(bool|str|int|float|path|list\[str\])>", line), line
    for param in cmd.params:  # type: ignore[attr-defined]
        if getattr(param, "param_type_name", "") == "option" and param.name != "help":
            assert param.help, f"`wavekit {name}` option {param.opts} has no help text"


def test_store_options_are_the_same_on_every_command_that_opens_the_store() -> None:
    root = get_command(app)
    for name in ("load", "plan", "status", "release", "rollback", "watch", "maintenance",
                 "telemetry", "report", "slack-receiver", "serve"):
        opts = {o for p in root.commands[name].params for o in p.opts}  # type: ignore[attr-defined]
        assert "--database-url" in opts, name


def _loaded(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    with session_scope(url) as s:
        write_catalog(s, load_catalog(EXAMPLE_CATALOG), source=str(EXAMPLE_CATALOG))
    # The example's signed manual drills, as `wavekit drill --signed-by` records them: without
    # them HR (medium risk) is held at the drill gate before its owner is asked.
    record_example_drills(url, utcnow() - timedelta(hours=1))
    return url


def test_errors_are_one_line_with_a_non_zero_exit(tmp_path: Path) -> None:
    url = _loaded(tmp_path)
    runner = CliRunner()
    empty = runner.invoke(app, ["release", "--wave", "7", "--database-url", url])
    assert empty.exit_code == 1 and "wave 7 has no packages" in empty.output
    unknown = runner.invoke(app, ["rollback", "no-such-package", "--database-url", url])
    assert unknown.exit_code == 1 and "no-such-package has no deployed release" in unknown.output
    undeployed = runner.invoke(app, ["rollback", WAVE_1[0], "--database-url", url])
    assert undeployed.exit_code == 1 and "no deployed release" in undeployed.output
    for result in (empty, unknown, undeployed):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_watch_says_when_nothing_is_due(tmp_path: Path) -> None:
    url = _loaded(tmp_path)
    result = CliRunner().invoke(app, ["watch", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "Nothing due" in result.output


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WAVEKIT_"))}
    env.update(WAVEKIT_DATABASE_URL=url, WAVEKIT_DATA_DIR=str(tmp_path / "data"),
               PREFECT_HOME=str(tmp_path / "prefect"), COLUMNS="160", PYTHONUNBUFFERED="1")
    return env


@pytest.mark.parametrize("variable,value,said", [
    ("WAVEKIT_BATCH_SIZE", "0", "WAVEKIT_BATCH_SIZE: Input should be greater than or equal to 1"),
    ("WAVEKIT_BATCH_SIZE", "1e9", "WAVEKIT_BATCH_SIZE: Input should be a valid integer"),
    ("WAVEKIT_SMTP_PORT", "99999", "WAVEKIT_SMTP_PORT: Input should be less than or equal to"),
    ("WAVEKIT_APPROVAL_DEADLINE_HOURS", "-1", "WAVEKIT_APPROVAL_DEADLINE_HOURS: Input should be"),
])
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path, variable: str,
                                                        value: str, said: str) -> None:
    env = _env(tmp_path, f"sqlite:///{tmp_path / 'w.db'}") | {variable: value}
    done = subprocess.run([str(WAVEKIT), "status"], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith("error: invalid setting: ") and said in first, done.stderr


@pytest.mark.slow
def test_release_without_a_server_asks_the_owners_and_says_how_to_continue(tmp_path: Path):
    url = _loaded(tmp_path)
    done = subprocess.run([str(WAVEKIT), "release", "--wave", "1", "--as", "U0RELMGR1"],
                          env=_env(tmp_path, url), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out and "INFO" not in out, out
    for key in WAVE_1:
        assert f"{key}: staged +" in out and f"{key}: waiting for" in out, out
    assert "run `wavekit release --wave 1` again" in out
    with session_scope(url) as s:
        assert {k: s.get(RolePackage, k).state for k in WAVE_1} == {
            k: "awaiting_handoff" for k in WAVE_1}


@pytest.mark.slow
def test_sigterm_during_release_stops_in_one_line_and_a_rerun_resumes(tmp_path: Path):
    url = _loaded(tmp_path)
    env = _env(tmp_path, url)
    proc = subprocess.Popen([str(WAVEKIT), "release", "--wave", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 240
    while "Releasing wave 1 here" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "Releasing wave 1 here" in seen, seen
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    out = seen + rest
    assert took < 5, f"took {took:.1f} s to stop"
    assert proc.returncode == 143, out
    assert "Traceback" not in out and "SIGTERM: stopped" in out, out
    assert "run `wavekit release --wave 1` to resume" in out
    # Whatever the moment of the signal, running the same command again converges.
    again = subprocess.run([str(WAVEKIT), "release", "--wave", "1"], env=env,
                           capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stdout + again.stderr
    with session_scope(url) as s:
        assert {k: s.get(RolePackage, k).state for k in WAVE_1} == {
            k: "awaiting_handoff" for k in WAVE_1}


def test_status_explain_says_what_every_figure_means(tmp_path: Path) -> None:
    from wavekit.present.kpis import CONFIDENCE_MODEL, DEFINITIONS

    url = _loaded(tmp_path)
    env = {**_env(tmp_path, url), "COLUMNS": "400"}
    done = subprocess.run([str(WAVEKIT), "status", "--explain"], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "What the figures mean" in done.stdout
    for label in DEFINITIONS:
        assert label in done.stdout
    for name, weight, why in CONFIDENCE_MODEL:
        assert f"{name} ({weight})" in done.stdout and why in done.stdout
    plain = subprocess.run([str(WAVEKIT), "status"], env=env, capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
    assert plain.returncode == 0 and "What the figures mean" not in plain.stdout


def _registered(api: str, served: subprocess.Popen, *names: str) -> None:
    """Wait until `wavekit serve` has registered these deployments on the server."""
    def ready() -> bool:
        if served.poll() is not None:
            raise RuntimeError(f"wavekit serve exited with {served.returncode}")
        return all(httpx.get(f"{api}/deployments/name/{n}/{n}", timeout=5).status_code == 200
                   for n in names)
    wait_until(ready, timeout=240, what="wavekit's deployments")


@pytest.mark.slow
def test_release_on_a_server_serving_wavekit_follows_each_package_and_returns(
        prefect_server, wavekit_serve, tmp_path: Path) -> None:
    # The package runs are top-level runs (a subflow cannot suspend): the follower finds them
    # by the wave run's tag, and returns once each one is suspended for its owner.
    url = _loaded(tmp_path)
    _registered(prefect_server.api, wavekit_serve(url), "release-wave", "roll-out-package")
    env = prefect_server.env(WAVEKIT_DATABASE_URL=url, WAVEKIT_DATA_DIR=str(tmp_path / "cli"),
                             WAVEKIT_APPROVALS_UNVERIFIED="true", COLUMNS="400",
                             WAVEKIT_PREFECT_UI_URL=prefect_server.url)
    t0 = time.monotonic()
    done = subprocess.run([str(WAVEKIT), "release", "--wave", "1", "--as", "rm-alex"], env=env,
                          capture_output=True, text=True, timeout=200,
                          stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out, out
    assert "started on the Prefect server as run" in out, out
    for key in WAVE_1:
        waiting = next((ln for ln in out.splitlines() if f"{key}: waiting for" in ln), "")
        assert f"{key}: staged +" in out, out
        assert f"in the run's form in the Prefect UI · {prefect_server.url}/runs/flow-run/" \
            in waiting, out
    assert "the decision resumes the run by itself" in out, out
    assert "Local mode: the form takes no one-time code" in out, out
    with session_scope(url) as s:
        assert {k: s.get(RolePackage, k).state for k in WAVE_1} == {
            k: "awaiting_handoff" for k in WAVE_1}
    assert took < 180, f"followed for {took:.0f} s after every package was suspended"
    print(f"release on the server returned in {took:.1f} s")


def _deployed(tmp_path: Path) -> tuple[str, str]:
    """Wave 1 released in this process as the demo does it: the example catalog, the sandbox
    seeded, HR approved by its owner and deployed. Returns (store URL, package)."""
    from wavekit.adapters.settings import load_settings
    from wavekit.adapters.targets.sandbox import SandboxTarget
    from wavekit.examples import seed_target
    from wavekit.present.demo import demo_decide
    from wavekit.workflow.runtime import build_runtime, runtime_override

    url = _loaded(tmp_path)
    seed_target(SandboxTarget(url))
    rt = build_runtime(load_settings(database_url=url, approvals_unverified=True))
    key = WAVE_1[1]
    release_wave = __import__("flows.wave", fromlist=["release_wave"]).release_wave
    with runtime_override(lambda: rt):
        release_wave(wave=1, packages=[key], requested_by="rm-alex", wait_for_owners=False)
        demo_decide(rt, key)
        release_wave(wave=1, packages=[key], requested_by="rm-alex")
    with session_scope(url) as s:
        assert s.get(RolePackage, key).state == "watching"
    return url, key


def _table_rows(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("│")]


@pytest.mark.usefixtures("prefect_harness")
def test_watch_maintenance_and_rollback_print_what_they_did_as_tables(tmp_path: Path) -> None:
    from wavekit.adapters.store.models import Release

    url, key = _deployed(tmp_path)
    runner, env = CliRunner(), {"COLUMNS": "200"}
    with session_scope(url) as s:  # a health check falls due
        release = s.exec(select(Release).where(Release.package_key == key)).one()
        release.next_check_at = utcnow() - timedelta(minutes=1)
        s.add(release)

    watched = runner.invoke(app, ["watch", "--database-url", url], env=env)
    assert watched.exit_code == 0, watched.output
    assert watched.output.startswith("Watch") and "Nothing due" not in watched.output
    assert any(key in row for row in _table_rows(watched.output)), watched.output

    nightly = runner.invoke(app, ["maintenance", "--database-url", url,
                                  "--reports", str(tmp_path / "out")], env=env)
    assert nightly.exit_code == 0, nightly.output
    assert nightly.output.startswith("Nightly maintenance"), nightly.output
    assert any("watch checks taken" in row for row in _table_rows(nightly.output))
    assert "{" not in nightly.output  # a table, not a raw dict

    rolled = runner.invoke(app, ["rollback", key, "--as", "rm-alex", "--reason", "tickets",
                                 "--database-url", url], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert rolled.output.startswith("Rollback"), rolled.output
    row = next(r for r in _table_rows(rolled.output) if key in r)
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[-1] == "equal" and cells[2] == cells[3] != "0", cells  # prior = read back
    with session_scope(url) as s:
        assert s.get(RolePackage, key).state == "rolled_back"


def test_release_against_an_unreachable_server_or_wait_without_one_says_what_to_do(
        tmp_path: Path) -> None:
    from tests.support.servers import free_port

    url = _loaded(tmp_path)
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    for env, says in (({**_env(tmp_path, url), "PREFECT_API_URL": api, "COLUMNS": "60"},
                       f"the Prefect server at {api} does not answer"),
                      ({**_env(tmp_path, url), "COLUMNS": "60"},
                       "--wait needs a Prefect server the owners can reach")):
        done = subprocess.run([str(WAVEKIT), "release", "--wave", "1", "--wait"], env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        out = (done.stdout + done.stderr).strip()
        assert done.returncode == 1, out
        assert says in out and len(out.splitlines()) == 1, out
        assert "Traceback" not in out
    with session_scope(url) as s:  # nothing was started
        assert {k: s.get(RolePackage, k).state for k in WAVE_1} != {
            k: "awaiting_handoff" for k in WAVE_1}


@pytest.mark.slow
def test_sigterm_and_sigint_while_release_waits_at_a_handoff_stop_in_one_line(
        prefect_server, tmp_path: Path) -> None:
    # --wait against a reachable server that does not serve wavekit: the wave runs here and
    # each package run pauses for its form; the signal must not wait for the pause to end.
    url = _loaded(tmp_path)
    env = prefect_server.env(WAVEKIT_DATABASE_URL=url, WAVEKIT_DATA_DIR=str(tmp_path / "cli"),
                             COLUMNS="400")
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc = subprocess.Popen([str(WAVEKIT), "release", "--wave", "1", "--wait", "--as",
                                 "rm-alex"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        seen, deadline = "", time.monotonic() + 240
        while sum(f"{k}: waiting for" in seen for k in WAVE_1) < 2 \
                and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert all(f"{k}: waiting for" in seen for k in WAVE_1), seen
        assert "in the run's form in the Prefect UI" in seen, seen
        time.sleep(2)  # the runs are paused now, not merely asking
        sent = time.monotonic()
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
        took = time.monotonic() - sent
        out = seen + rest
        assert took < 5, f"{sig.name}: took {took:.1f} s to stop"
        assert proc.returncode == code, out
        assert "Traceback" not in out, out
        said = [ln for ln in rest.splitlines() if ln.strip()]
        assert len(said) == 1 and f"{sig.name}: stopped" in said[0], rest
        assert "run `wavekit release --wave 1` to resume" in said[0]
        with session_scope(url) as s:  # consistent: still waiting for the same owners
            assert {k: s.get(RolePackage, k).state for k in WAVE_1} == {
                k: "awaiting_handoff" for k in WAVE_1}

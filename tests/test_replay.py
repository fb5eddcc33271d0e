"""Replay before launch: a package's health checks over recorded telemetry, as if deployed on
a day, without touching a target or the store. Synthetic telemetry from the example
generator (healthy finance, degrading HR) and hand-made quiet and empty feeds."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func
from sqlmodel import select

from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import Settings
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent, Release, TelemetrySample
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.frames import TelemetryFrames
from wavekit.domain.health import Verdict, checks_for
from wavekit.domain.replay import replay_package
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.examples.synth_telemetry import generate_telemetry, write_telemetry
from wavekit.workflow.replay import ReplayRefused, replay
from wavekit.workflow.runtime import Runtime, build_runtime

FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"
LAUNCH = datetime(2026, 4, 1, tzinfo=UTC)
WAVEKIT = Path(sys.executable).with_name("wavekit")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A loaded store and four weeks of baseline plus six weeks of recorded telemetry."""
    d = tmp_path_factory.mktemp("replay")
    url = f"sqlite:///{d / 'wavekit.db'}"
    with session_scope(url) as s:
        write_catalog(s, load_catalog(EXAMPLE_CATALOG), source=str(EXAMPLE_CATALOG))
    frames = generate_telemetry(url, start=LAUNCH - timedelta(days=28), deployed_at=LAUNCH,
                                days=42, degrading=HR, seed=1)
    write_telemetry(frames, d / "telemetry")
    return url, d / "telemetry"


def _rt(url: str, tmp_path: Path) -> Runtime:
    return build_runtime(Settings(data_dir=tmp_path, database_url=url))


def _counts(url: str) -> tuple[int, int, int]:
    with session_scope(url) as s:
        return tuple(s.exec(select(func.count()).select_from(m)).one()  # type: ignore[return-value]
                     for m in (AuditEvent, TelemetrySample, Release))


def test_the_degrading_package_would_have_rolled_back_and_the_healthy_one_passed(
        recorded: tuple[str, Path], tmp_path: Path) -> None:
    url, tel = recorded
    before = _counts(url)
    rt = _rt(url, tmp_path)
    hr = replay(rt, HR, telemetry_dir=tel, deployed_at=LAUNCH)
    assert hr.action == "rollback" and hr.outcome == "rolled back"
    # Ticket noise 2, 3 on days 2-3: two failures against a limit of one, decided on day 3.
    assert hr.decided_at == LAUNCH + timedelta(days=3)
    assert "ticket_noise failed 2 time(s)" in hr.reason and "ticket_noise" in hr.failing_checks
    fin = replay(rt, FIN, telemetry_dir=tel, deployed_at=LAUNCH)
    assert (fin.action, fin.decided_at) == ("stable", LAUNCH + timedelta(days=14))
    assert fin.failing_checks == () and len(fin.days()) == 15  # deploy day .. day 14
    assert _counts(url) == before  # nothing written, not even an audit event


def test_replay_flags_a_noisy_threshold_and_the_tuned_one_passes(
        recorded: tuple[str, Path], tmp_path: Path) -> None:
    url, tel = recorded
    rt = _rt(url, tmp_path)
    # Finance's tickets run at 0.95x its baseline: a 0.8x limit is noise, not a signal.
    strict = replay(rt, FIN, telemetry_dir=tel, deployed_at=LAUNCH,
                    settings={"ticket_noise": {"threshold": 0.8}})
    assert strict.outcome == "rolled back" and strict.failing_checks == ("ticket_noise",)
    noisy = [m for m in strict.measurements if m.check == "ticket_noise"]
    assert [m.verdict for m in noisy] == [Verdict.FAILED, Verdict.FAILED]
    assert all(m.rule == "ticket_noise ≤ 0.8" for m in noisy)
    tuned = replay(rt, FIN, telemetry_dir=tel, deployed_at=LAUNCH,
                   settings={"ticket_noise": {"threshold": 1.2, "failure_limit": 1}})
    assert tuned.outcome == "stable" and tuned.failing_checks == ("ticket_noise",)  # day 8
    assert sum(m.verdict == Verdict.FAILED for m in tuned.measurements) == 1


def test_the_stores_telemetry_is_used_when_no_directory_is_given(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with session_scope(url) as s:
        write_catalog(s, load_catalog(EXAMPLE_CATALOG), source="example")
    rt = _rt(url, tmp_path)
    with pytest.raises(ReplayRefused, match="no telemetry to replay"):
        replay(rt, FIN)
    with pytest.raises(ReplayRefused, match="no package 'nope'"):
        replay(rt, "nope")


@pytest.mark.parametrize(("settings", "message"), [
    ({"ticket_nosie": {"threshold": 3}}, "did you mean 'ticket_noise'"),
    ({"ticket_noise": {"threshold": "high"}}, "ticket_noise.threshold"),
    ({"access_drift": {"interval_hours": 0}}, "access_drift.interval_hours"),
    ({"ticket_noise": {"failure_limit": -1}}, "ticket_noise.failure_limit"),
])
def test_settings_are_checked_as_the_catalog_checks_them(
        recorded: tuple[str, Path], tmp_path: Path, settings: dict, message: str) -> None:
    url, tel = recorded
    with pytest.raises(ReplayRefused, match=message):
        replay(_rt(url, tmp_path), FIN, telemetry_dir=tel, deployed_at=LAUNCH,
               settings=settings)


def _quiet_frames(ticket_at: datetime | None) -> TelemetryFrames:
    """Four weeks of feeds in which the package never had a ticket, and maybe one now."""
    days = pd.date_range(LAUNCH - timedelta(days=28), LAUNCH + timedelta(days=14), freq="D",
                         tz="UTC")
    tickets = pd.DataFrame({"package": ["other"] * len(days), "at": days, "category": "x"})
    if ticket_at is not None:
        tickets = pd.concat([tickets, pd.DataFrame(
            {"package": [FIN], "at": [pd.Timestamp(ticket_at)], "category": ["access"]})])
    return TelemetryFrames.build(tickets=tickets)


def test_one_launch_day_ticket_on_a_quiet_package_is_not_a_rollback(
        loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        view = load_package_view(s, FIN)
    checks = [c for c in checks_for(view.health) if c.name == "ticket_noise"]
    result = replay_package(view, _quiet_frames(LAUNCH + timedelta(hours=6)), checks,
                            deployed_at=LAUNCH)
    assert result.action != "rollback" and "ticket_noise" not in result.failing_checks
    first = result.measurements[0]
    assert first.due == LAUNCH + timedelta(days=1) and first.verdict != Verdict.FAILED


def test_no_telemetry_is_never_a_pass(loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        view = load_package_view(s, FIN)
    result = replay_package(view, TelemetryFrames.build(), checks_for(view.health),
                            deployed_at=LAUNCH)
    assert {m.verdict for m in result.measurements} == {Verdict.INCONCLUSIVE}
    assert result.action == "inconclusive" and result.outcome == "stopped for a human"


def _cli(*args: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WAVEKIT_"))}
    env.update(WAVEKIT_DATABASE_URL=url, WAVEKIT_DATA_DIR=str(tmp_path / "data"),
               PREFECT_HOME=str(tmp_path / "prefect"), COLUMNS="200")
    return subprocess.run([str(WAVEKIT), "replay", *args], env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_the_cli_replays_tunes_and_writes_the_report(recorded: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    url, tel = recorded
    before = _counts(url)
    report = tmp_path / "replay.md"
    noisy = _cli(FIN, "--telemetry", str(tel), "--from", "2026-04-01",
                 "--set", "ticket_noise.threshold=0.8", "--report", str(report),
                 url=url, tmp_path=tmp_path)
    assert noisy.returncode == 0, noisy.stderr
    assert "rolled back at 2026-04-03 00:00 UTC" in noisy.stdout
    assert "failed at least once: ticket_noise" in noisy.stdout
    text = report.read_text()
    assert text.startswith(f"# Replay: {FIN} as if deployed 2026-04-01")
    assert "**Rolled back** at" in text and "| `ticket_noise` | ticket_noise ≤ 0.8 |" in text
    tuned = _cli(FIN, "--telemetry", str(tel), "--from", "2026-04-01",
                 url=url, tmp_path=tmp_path)
    assert tuned.returncode == 0 and "stable at 2026-04-15 00:00 UTC" in tuned.stdout
    assert _counts(url) == before


@pytest.mark.parametrize(("args", "said"), [
    (["--set", "ticket_noise=3"], "write CHECK.SETTING=VALUE"),
    (["--set", "ticket_noise.threshold=high"], "ticket_noise.threshold"),
    (["--set", "ticket_noise.colour=3"], "colour"),
])
def test_cli_mistakes_are_one_line(recorded: tuple[str, Path], tmp_path: Path,
                                   args: list[str], said: str) -> None:
    url, tel = recorded
    done = _cli(FIN, "--telemetry", str(tel), *args, url=url, tmp_path=tmp_path)
    assert done.returncode == 1 and said in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    assert len((done.stderr + done.stdout).strip().splitlines()) == 1


def test_bad_telemetry_is_listed_with_file_line_and_field(recorded: tuple[str, Path],
                                                          tmp_path: Path) -> None:
    url, _ = recorded
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tickets.csv").write_text("package,at,category\n"
                                     f"{FIN},2026-04-02T00:00:00Z,x\n"
                                     f"{FIN},yesterday,x\n")
    done = _cli(FIN, "--telemetry", str(bad), url=url, tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "tickets.csv" in done.stdout and "'yesterday' is not a timestamp" in done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_the_replay_flow_publishes_a_markdown_artifact(recorded: tuple[str, Path],
                                                       tmp_path: Path) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.replay import replay_package
    from wavekit.workflow.runtime import runtime_override

    url, tel = recorded
    with runtime_override(lambda: _rt(url, tmp_path)):
        out = replay_package(HR, telemetry_dir=str(tel), deployed_at=LAUNCH)
    assert out["outcome"] == "rolled back" and "ticket_noise" in out["failing_checks"]

    async def latest() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"replay-{HR}"])))
            return str(found[-1].data)

    markdown = asyncio.run(latest())
    assert markdown.startswith(f"# Replay: {HR}") and "**Rolled back**" in markdown
    from wavekit.adapters.store import audit
    from wavekit.adapters.store.engine import session_scope

    with session_scope(url) as s:
        assert audit.head_from_text(markdown) == audit.head(s)

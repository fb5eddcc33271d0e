"""No secret anywhere: a full wave with Slack, SCIM and LDAP configured with recognisable
secrets, then every place wavekit writes is scanned for them.

The real parts: scim2-server (its bearer token), slapd (its root password), the Slack Web API
double (bot token, signing secret), PostgreSQL-style credentials in a store URL given to the
settings. Scanned: every log record (wavekit's and Prefect's, DEBUG and up), stdout/stderr,
the Prefect artifacts of the runs, the reports written, the audit log (export), a dump of
every table in the store, the reprs of settings, configs, targets and runtime, and the text
of the errors a wrong URL or a wrong password raises.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel, select

from flows.watch import watch_packages
from flows.wave import release_wave
from tests.support.flows import ScriptedMetrics, approver
from tests.support.slack_double import BOT_TOKEN, CHANNEL, SIGNING_SECRET
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Release
from wavekit.domain.clock import as_utc
from wavekit.examples import EXAMPLE_CATALOG, seed_target
from wavekit.present.reports import write_reports
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
HR = "hr-case-intake-specialist"
IDENTITIES = pd.read_csv(EXAMPLE_CATALOG / "identities.csv", dtype=str).fillna("")
GROUPS = list(pd.read_csv(EXAMPLE_CATALOG / "entitlements.csv", dtype=str)["key"])
PG_PASSWORD = "pg-Secret-5e1b-do-not-print"


def _store_dump(url: str) -> str:
    out = []
    with session_scope(url) as s:
        for table in SQLModel.metadata.sorted_tables:
            out += [repr(tuple(row)) for row in s.execute(sa_select(table))]
    return "\n".join(out)


def _artifacts() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return "\n".join(f"{a.key} {a.description} {a.data}"
                         for a in client.read_artifacts(limit=200))


def _configure(kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
               ) -> list[str]:
    """Point the environment at the real server of `kind`; the secrets it must never show."""
    if kind == "scim":
        from wavekit.adapters.targets.scim import provision_scim_directory

        config = request.getfixturevalue("scim_directory")
        provision_scim_directory(config, IDENTITIES.to_dict("records"), GROUPS)
        monkeypatch.setenv("WAVEKIT_SCIM_URL", config.base_url)
        monkeypatch.setenv("WAVEKIT_SCIM_TOKEN", config.token.get_secret_value())
        return [config.token.get_secret_value()]
    from tests.support.slapd import clear_subtree
    from wavekit.adapters.targets.ldap import provision_ldap_directory

    slapd = request.getfixturevalue("slapd_server")
    config = slapd.config
    for base in (config.group_base, config.user_base):
        clear_subtree(config, base)
    provision_ldap_directory(config, IDENTITIES.to_dict("records"), GROUPS)
    for var, value in (("URL", config.url), ("BIND_DN", config.bind_dn),
                       ("PASSWORD", config.password), ("BASE_DN", config.base_dn),
                       ("USER_BASE", config.user_base), ("GROUP_BASE", config.group_base)):
        monkeypatch.setenv(f"WAVEKIT_LDAP_{var}", value)
    return [config.password]


@pytest.mark.parametrize("kind", ["scim", "ldap"])
def test_a_full_wave_leaves_no_secret_anywhere(kind: str, request: pytest.FixtureRequest,
                                               loaded_store: str, slack_double: Any,
                                               tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               capfd: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = [*_configure(kind, request, monkeypatch), BOT_TOKEN, SIGNING_SECRET, PG_PASSWORD]
    monkeypatch.setenv("WAVEKIT_SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("WAVEKIT_SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("WAVEKIT_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("WAVEKIT_SLACK_API_URL", slack_double.base_url)
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    caplog.set_level(logging.DEBUG)
    metrics = ScriptedMetrics({HR: lambda day: {"ticket_noise": 5.0 if day >= 2 else 1.0}})
    settings = load_settings(database_url=loaded_store, target=kind, batch_size=100,
                             approvals_unverified=True)
    seen: list[str] = []

    def runtime() -> Any:
        rt = build_runtime(settings, metrics=metrics)
        seen.extend([repr(rt), repr(rt.settings), repr(rt.target), str(rt.target),
                     repr(getattr(rt.target, "config", None)), repr(rt.notifier)])
        return rt

    with runtime_override(runtime):
        seed_target(build_runtime(settings, metrics=metrics).target)
        with approver(loaded_store):
            assert set(release_wave(wave=1, requested_by="rm-alex").values()) == {"watching"}
        with session_scope(loaded_store) as s:
            deployed = as_utc(s.exec(select(Release.deployed_at)
                                     .where(Release.package_key == HR)).one())
        for day in (1, 2, 3):  # HR fails its ticket-noise check and is rolled back
            watch_packages(as_of=deployed + timedelta(days=day, minutes=5))
    reports = write_reports(loaded_store, tmp_path / "reports", as_of=deployed + timedelta(days=3))

    # Errors a misconfigured run shows a person: a wrong URL, a wrong password.
    errors = []
    for bad in _broken_targets(kind, monkeypatch):
        try:
            build_runtime(load_settings(database_url=loaded_store, target=kind)
                          ).target.read_grants({GROUPS[0]})
        except Exception as exc:  # whatever it is, its text is what a person reads
            errors.append(f"{type(exc).__name__}: {exc!s} {exc!r}")
        secrets.append(bad)
    pg = load_settings(database_url=f"postgresql://wavekit:{PG_PASSWORD}@127.0.0.1:1/wavekit")
    from wavekit.workflow.runtime import Runtime

    seen += [repr(pg), str(pg), repr(Runtime(settings=pg, database_url=pg.resolved_database_url(),
                                             target=None))]  # type: ignore[arg-type]

    out, err = capfd.readouterr()
    with session_scope(loaded_store) as s:
        audit_log = "\n".join(repr(e.model_dump()) for e in audit.events(s))
    places = {
        "logs": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}"
                          for r in caplog.records),
        "stdout/stderr": out + err,
        "artifacts": _artifacts(),
        "reports": "\n".join(p.read_text() for p in reports),
        "audit log": audit_log,
        "store": _store_dump(loaded_store),
        "reprs": "\n".join(seen),
        "errors": "\n".join(errors),
        "slack messages": "\n".join(c.text() for c in slack_double.calls),
    }
    assert len(reports) >= 3 and errors and places["artifacts"] and places["audit log"]
    assert "rollback" in places["reports"]
    leaks = [(where, secret[:6] + "...") for where, text in places.items()
             for secret in secrets if secret in text]
    assert not leaks, leaks


def _broken_targets(kind: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Misconfigure the target with a wrong secret; returns the secrets used."""
    if kind == "scim":
        monkeypatch.setenv("WAVEKIT_SCIM_TOKEN", "scim-WRONG-token-77c4")
        return ["scim-WRONG-token-77c4"]
    monkeypatch.setenv("WAVEKIT_LDAP_PASSWORD", "ldap-WRONG-password-2d9e")
    return ["ldap-WRONG-password-2d9e"]

"""A wave of the example catalog on the real SCIM and LDAP servers, with automatic rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest
from sqlmodel import select

from flows.watch import watch_packages
from flows.wave import release_wave
from tests.support.flows import ScriptedMetrics, approver
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.base import Target
from wavekit.domain.clock import as_utc
from wavekit.domain.grants import Grant
from wavekit.examples import EXAMPLE_CATALOG, seed_target
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"
IDENTITIES = pd.read_csv(EXAMPLE_CATALOG / "identities.csv", dtype=str).fillna("")
GROUPS = list(pd.read_csv(EXAMPLE_CATALOG / "entitlements.csv", dtype=str)["key"])


@pytest.fixture
def scim_example(scim_directory) -> Iterator[tuple[Target, callable]]:  # type: ignore[valid-type]
    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory

    provision_scim_directory(scim_directory, IDENTITIES.to_dict("records"), GROUPS)
    targets = []

    def fresh() -> Target:
        targets.append(ScimTarget(scim_directory))
        return targets[-1]

    yield fresh(), fresh
    for t in targets:
        t.close()


@pytest.fixture
def ldap_example(slapd_server) -> Iterator[tuple[Target, callable]]:  # type: ignore[valid-type]
    from tests.support.slapd import clear_subtree
    from wavekit.adapters.targets.ldap import LdapTarget, provision_ldap_directory

    config = slapd_server.config
    for base in (config.group_base, config.user_base):
        clear_subtree(config, base)
    targets = []

    def fresh() -> Target:
        targets.append(LdapTarget(config))
        return targets[-1]

    provision_ldap_directory(fresh(), IDENTITIES.to_dict("records"), GROUPS)
    yield targets[0], fresh
    for t in targets:
        t.close()


@pytest.mark.parametrize("directory", ["scim_example", "ldap_example"])
def test_wave_deploys_and_a_health_failure_rolls_back_on_the_server(
        directory: str, request: pytest.FixtureRequest, loaded_store: str, monkeypatch) -> None:
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    monkeypatch.setenv("WAVEKIT_APPROVALS_UNVERIFIED", "true")  # the auto-approver has no code
    target, fresh = request.getfixturevalue(directory)
    seed_target(target)
    before = fresh().read_grants(GROUPS)
    metrics = ScriptedMetrics({HR: lambda day: {"ticket_noise": 5.0 if day >= 2 else 1.0}})
    settings = load_settings(database_url=loaded_store, batch_size=100)
    with runtime_override(lambda: build_runtime(settings, target=target, metrics=metrics)):
        with approver(loaded_store):
            assert release_wave(wave=1, requested_by="rm-alex") == {FIN: "watching", HR: "watching"}
        with session_scope(loaded_store) as s:
            fin, hr = load_package_view(s, FIN), load_package_view(s, HR)
            deployed = as_utc(s.exec(select(Release.deployed_at)
                                     .where(Release.package_key == HR)).one())
        live = fresh().read_grants(GROUPS)
        assert {Grant(m, e) for m in fin.members | hr.members
                for e in fin.entitlements if m in fin.members} <= live
        assert not {g for g in live if g.identity in hr.members and g.entitlement in hr.retires}
        for day in (1, 2, 3):
            watch_packages(as_of=deployed + timedelta(days=day, minutes=5))
    with session_scope(loaded_store) as s:
        assert s.get(RolePackage, HR).state == "rolled_back"
        assert s.get(RolePackage, FIN).state == "watching"
    # Read back from the server with a new connection: HR's scope is the prior bundle exactly.
    after = fresh().read_grants(GROUPS)
    assert {g for g in after if g.entitlement in hr.scope} == \
        {g for g in before if g.entitlement in hr.scope}
    assert {Grant(m, e) for m in fin.members for e in fin.entitlements} <= after

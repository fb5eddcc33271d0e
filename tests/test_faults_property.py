"""Exact rollback from any state, property-based (hypothesis).

Random prior states (grants outside the package, members already holding some of what it
grants, removes and retirements over overlapping members), random packages and batch sizes,
a random failure point during deploy (or a crash between deploy and retirement, or none) and
during rollback; the rollback is re-run once after its failure. After it the target equals
the prior bundle grant for grant, and every grant outside the package's scope is untouched.

WAVEKIT_FAULT_EXAMPLES         examples on the sandbox; default 200
WAVEKIT_FAULT_SERVER_EXAMPLES  examples on the SCIM server and on slapd each; default 6
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import figures
from tests.support.fault_targets import Wrapped
from tests.support.fault_world import (
    PackageDef,
    deploy,
    load_world,
    roll_back,
    runtime,
    write_catalog_dir,
)
from wavekit.adapters.targets.base import Target, TargetUnavailable
from wavekit.domain.grants import Grant, GrantSet

pytestmark = pytest.mark.faults
EXAMPLES = int(os.environ.get("WAVEKIT_FAULT_EXAMPLES", "200"))
SERVER_EXAMPLES = int(os.environ.get("WAVEKIT_FAULT_SERVER_EXAMPLES", "6"))
USERS = [f"p{i}" for i in range(8)]
ENTS = [f"e{i}" for i in range(7)]
_counter = itertools.count()


class FailAfter(Wrapped):
    """Raises TargetUnavailable once, when `after` more batches have landed (None: never)."""

    def __init__(self, inner: Target, after: int | None) -> None:
        super().__init__(inner)
        self.after = after

    def _wrap(self, on_batch):  # type: ignore[no-untyped-def]
        def landed(batch):  # type: ignore[no-untyped-def]
            if on_batch:
                on_batch(batch)
            if self.after is not None:
                self.after -= 1
                if self.after < 0:
                    self.after = None
                    raise TargetUnavailable("injected outage", target="test", batch=batch.index)
        return landed

    def apply(self, adds, removes, *, batch_size=500, on_batch=None):  # type: ignore[no-untyped-def]
        if self.after == 0:
            self.after = None
            raise TargetUnavailable("injected outage before the first batch", target="test")
        return super().apply(adds, removes, batch_size=batch_size, on_batch=self._wrap(on_batch))

    def apply_verbatim(self, adds, removes, stored, *, batch_size=500, on_batch=None):  # type: ignore[no-untyped-def]
        if self.after == 0:
            self.after = None
            raise TargetUnavailable("injected outage before the first batch", target="test")
        return super().apply_verbatim(adds, removes, stored, batch_size=batch_size,
                                      on_batch=self._wrap(on_batch))


@st.composite
def scenarios(draw):  # type: ignore[no-untyped-def]
    ents = draw(st.permutations(ENTS))
    n_grant = draw(st.integers(1, 3))
    n_remove = draw(st.integers(0, 2))
    n_retire = draw(st.integers(0, 2))
    grants, removes = ents[:n_grant], ents[n_grant:n_grant + n_remove]
    retires = ents[n_grant + n_remove:n_grant + n_remove + n_retire]
    members = draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=len(USERS),
                            unique=True))
    prior = draw(st.frozensets(st.builds(Grant, st.sampled_from(USERS), st.sampled_from(ENTS)),
                               max_size=30))
    return {
        "grants": grants, "removes": removes, "retires": retires, "members": sorted(members),
        "prior": prior, "batch_size": draw(st.integers(1, 6)),
        # deploy: fail after k batches (None: no failure); then maybe re-run, maybe retire
        "deploy_fail": draw(st.none() | st.integers(0, 8)),
        "deploy_rerun": draw(st.booleans()),
        "retire": draw(st.booleans()),
        "rollback_fail": draw(st.none() | st.integers(0, 6)),
    }


class Exact:
    """Runs one scenario against a target family and checks the rollback is exact."""

    def __init__(self, make: Callable[[], Target], reset: Callable[[GrantSet], None],
                 read: Callable[[], GrantSet]) -> None:
        self.make, self.reset, self.read = make, reset, read
        # tmpfs when there is one: hundreds of small commits, none worth an fsync
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.root = Path(tempfile.mkdtemp(prefix="wavekit-prop-", dir=shm))
        self.url = f"sqlite:///{self.root / 'wavekit.db'}"
        self.examples = 0
        self.failures_injected = 0

    def __call__(self, sc: dict) -> None:  # type: ignore[type-arg]
        n = next(_counter)
        pkg = PackageDef(f"prop-{n}", sc["members"], sc["grants"], sc["removes"],
                         sc["retires"])
        load_world(self.url, write_catalog_dir(self.root / f"c{n}", USERS, ENTS, [pkg]))
        self.reset(sc["prior"])
        scope = set(pkg.grants) | set(pkg.removes) | set(pkg.retires)
        target = self.make()
        try:
            flaky = FailAfter(target, sc["deploy_fail"])
            try:
                deploy(runtime(self.url, flaky, sc["batch_size"]), pkg.key, retire=sc["retire"])
            except TargetUnavailable:
                self.failures_injected += 1
                if sc["deploy_rerun"]:
                    deploy(runtime(self.url, target, sc["batch_size"]), pkg.key,
                           retire=sc["retire"])
            flaky = FailAfter(target, sc["rollback_fail"])
            try:
                roll_back(runtime(self.url, flaky, sc["batch_size"]), pkg.key)
            except TargetUnavailable:
                self.failures_injected += 1
                roll_back(runtime(self.url, target, sc["batch_size"]), pkg.key)
        finally:
            target.close()
        after = self.read()
        prior = sc["prior"]
        assert {g for g in after if g.entitlement in scope} == \
            {g for g in prior if g.entitlement in scope}
        assert {g for g in after if g.entitlement not in scope} == \
            {g for g in prior if g.entitlement not in scope}
        self.examples += 1


def run_property(exact: Exact, examples: int, label: str) -> None:
    started = time.monotonic()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(scenarios())
    def prop(sc: dict) -> None:  # type: ignore[type-arg]
        exact(sc)

    prop()
    figures.record(f"exact rollback on {label}: {exact.examples} examples tried, "
                   f"{exact.failures_injected} failures injected and survived, "
                   f"{time.monotonic() - started:.0f}s")
    # Every example ran to its read-back (hypothesis could stop early, e.g. on a health check).
    assert exact.examples >= examples, f"{label}: {exact.examples} of {examples} examples ran"


def test_exact_rollback_from_any_state_on_the_sandbox() -> None:
    from wavekit.adapters.targets.sandbox import SandboxTarget

    sandboxes = itertools.count()
    current: list[SandboxTarget] = []

    def reset(prior: GrantSet) -> None:  # a new sandbox per example: nothing carries over
        current[:] = [SandboxTarget(exact.url, sandbox=f"s{next(sandboxes)}")]
        current[0].apply(prior, [])

    exact = Exact(lambda: current[0], reset, lambda: current[0].read_grants(ENTS))
    run_property(exact, EXAMPLES, "sandbox")


def _set_state(target: Target, prior: GrantSet) -> None:
    now = target.read_grants(ENTS)
    target.apply(prior - now, now - prior)


def _people(ids: Iterable[str]) -> list[dict[str, str]]:
    return [{"id": i, "display_name": f"User {i}", "email": f"{i}@example.com"} for i in ids]


def test_exact_rollback_from_any_state_on_the_scim_server(scim_directory) -> None:  # type: ignore[no-untyped-def]
    from tests.support.fault_world import as_grants, scim_members
    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory

    provision_scim_directory(scim_directory, _people(USERS), ENTS)
    token = scim_directory.token.get_secret_value()

    def reset(prior: GrantSet) -> None:
        with ScimTarget(scim_directory) as t:
            _set_state(t, prior)

    exact = Exact(lambda: ScimTarget(scim_directory), reset,
                  lambda: as_grants(scim_members(scim_directory.base_url, token, ENTS)))
    run_property(exact, SERVER_EXAMPLES, "SCIM")


def test_exact_rollback_from_any_state_on_slapd(slapd_server) -> None:  # type: ignore[no-untyped-def]
    from tests.support.fault_world import as_grants, ldap_members, ldap_uid
    from tests.support.slapd import clear_subtree
    from wavekit.adapters.targets.ldap import LdapTarget, provision_ldap_directory

    config = slapd_server.config
    for base in (config.group_base, config.user_base):
        clear_subtree(config, base)
    provision_ldap_directory(config, _people(USERS), ENTS)

    def reset(prior: GrantSet) -> None:
        t = LdapTarget(config)
        try:
            _set_state(t, prior)
        finally:
            t.close()

    exact = Exact(lambda: LdapTarget(config), reset,
                  lambda: as_grants(ldap_members(config, ENTS), ldap_uid))
    run_property(exact, SERVER_EXAMPLES, "slapd")

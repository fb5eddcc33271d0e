"""Run wave 1 with a slow sandbox so a test can kill this process in the middle of deploy.

    python -m tests.support.crash_run STORE_URL
    python -m tests.support.crash_run STORE_URL --die-before-retirement PACKAGE

The second form runs the real roll-out-package flow for PACKAGE and SIGKILLs its own process
when, after the "deployed" event, the flow starts writing the launch-window retirement: the
crash between the two stages that a re-run must complete."""

from __future__ import annotations

import sys
import time

from wavekit.adapters.settings import load_settings
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.workflow.approvals import auto_approver
from wavekit.workflow.runtime import build_runtime, runtime_override


class SlowSandbox(SandboxTarget):
    """The sandbox, a quarter second per batch: slow enough to be killed mid-deploy."""

    def _apply_batch(self, index, adds, removes):  # type: ignore[no-untyped-def]
        time.sleep(0.25)
        return super()._apply_batch(index, adds, removes)


class DiesBeforeRetirement(SandboxTarget):
    """The sandbox, whose process dies (SIGKILL) at the first write after the deploy."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(url)
        self.key = key

    def apply(self, adds, removes, **kw):  # type: ignore[no-untyped-def, override]
        import os
        import signal

        from wavekit.adapters.store import audit
        from wavekit.adapters.store.engine import session_scope

        with session_scope(self.database_url) as s:
            deployed = audit.events(s, package_key=self.key, action="deployed")
        if deployed:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().apply(adds, removes, **kw)


def die_before_retirement(url: str, key: str) -> None:
    from flows.wave import release_wave

    settings = load_settings(database_url=url, batch_size=50, approvals_unverified=True)
    target = DiesBeforeRetirement(url, key)
    with runtime_override(lambda: build_runtime(settings, target=target)), auto_approver(url):
        release_wave(wave=1, requested_by="rm-alex", packages=[key])


if __name__ == "__main__":
    url = sys.argv[1]
    if sys.argv[2:3] == ["--die-before-retirement"]:
        die_before_retirement(url, sys.argv[3])
        sys.exit(0)
    from flows.wave import release_wave

    settings = load_settings(database_url=url, batch_size=20, approvals_unverified=True)
    target = SlowSandbox(url)
    with runtime_override(lambda: build_runtime(settings, target=target)), auto_approver(url):
        release_wave(wave=1, requested_by="rm-alex", packages=["finance-month-end-operator"])

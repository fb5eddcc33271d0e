"""Run wave 1 with a slow sandbox so a test can kill this process in the middle of deploy."""

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


if __name__ == "__main__":
    url = sys.argv[1]
    from flows.wave import release_wave

    settings = load_settings(database_url=url, batch_size=20, approvals_unverified=True)
    target = SlowSandbox(url)
    with runtime_override(lambda: build_runtime(settings, target=target)), auto_approver(url):
        release_wave(wave=1, requested_by="rm-alex", packages=["finance-month-end-operator"])

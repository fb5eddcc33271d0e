"""A wavekit process for crash tests: deploy or roll back one package on a SCIM server or slapd,
printing a mark after every batch that lands so the test can SIGKILL it at chosen moments.

    python -m tests.support.fault_driver deploy|rollback STORE_URL PACKAGE BATCH_SIZE
    python -m tests.support.fault_driver serve

`serve` imports wavekit once (about 10 s on a loaded CI machine, mostly Prefect), prints
`ready`, then for each line `deploy|rollback STORE_URL PACKAGE BATCH_SIZE` read from stdin
forks a fresh child process that runs that command: `started PID`, the child's marks, then
`exit PID CODE`. The child is a real process of its own (SIGKILL ends it and nothing else);
the parent opens no connection or store, so nothing is shared across the fork.

The target comes from WAVEKIT_FAULT_TARGET (JSON: {"kind": "scim", "base_url", "token"} or
{"kind": "ldap", ...LdapConfig fields}), kept off the command line because it holds secrets.
It runs the same domain functions as the wave flow's tasks (stage, handoff, gates, deploy,
retire; rollback: begin, restore, verify), without Prefect, so a process starts in seconds.
"""

from __future__ import annotations

import json
import os
import sys

from tests.support.fault_targets import Wrapped
from tests.support.fault_world import deploy, roll_back, runtime
from wavekit.adapters.targets.base import Target


def build_target(spec: dict) -> Target:  # type: ignore[type-arg]
    kind = spec.pop("kind")
    if kind == "scim":
        from wavekit.adapters.targets.scim import ScimConfig, ScimTarget

        return ScimTarget(ScimConfig(**spec))
    from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget

    return LdapTarget(LdapConfig(**spec))


class Marking(Wrapped):
    """Prints `batch N` as each batch lands (flushed: the test reads it live)."""

    landed = 0

    def _mark(self, on_batch):  # type: ignore[no-untyped-def]
        def mark(batch):  # type: ignore[no-untyped-def]
            if on_batch:
                on_batch(batch)
            Marking.landed += 1
            print(f"batch {Marking.landed}", flush=True)
        return mark

    def apply(self, adds, removes, *, batch_size=500, on_batch=None):  # type: ignore[no-untyped-def]
        return super().apply(adds, removes, batch_size=batch_size,
                             on_batch=self._mark(on_batch))

    def apply_verbatim(self, adds, removes, stored, *, batch_size=500, on_batch=None):  # type: ignore[no-untyped-def]
        return super().apply_verbatim(adds, removes, stored, batch_size=batch_size,
                                      on_batch=self._mark(on_batch))


def serve() -> int:
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        pid = os.fork()
        if pid == 0:  # the child: one run, then out without the parent's exit handlers
            code = 1
            try:
                code = main(["fault_driver", *line.split()])
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"started {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[1] == "serve":
        return serve()
    action, url, key, batch_size = argv[1], argv[2], argv[3], int(argv[4])
    target = Marking(build_target(json.loads(os.environ["WAVEKIT_FAULT_TARGET"])))
    rt = runtime(url, target, batch_size=batch_size)
    print("ready", flush=True)
    if action == "deploy":
        deploy(rt, key)
    else:
        roll_back(rt, key)
    print("done", flush=True)
    target.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

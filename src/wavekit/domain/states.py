"""The package state machine: the one place that says which state may follow which.

`ALLOWED` is the machine. Its diagram, docs/states.md, is rendered from it by `diagram()`
(`python -m wavekit.domain.states > docs/states.md`) and a test fails when the two differ,
so the picture cannot drift from the code.

The portal's states (Scheduled, Release ready, Monitoring, Needs tuning, Rollback ready)
describe packages before launch; the DAG's (Awaiting handoff, Held, Deploying, Watching,
Stable, Rolled back) describe a release in flight and after it.
"""

from __future__ import annotations

from enum import StrEnum


class PackageState(StrEnum):
    SCHEDULED = "scheduled"
    RELEASE_READY = "release_ready"
    MONITORING = "monitoring"
    NEEDS_TUNING = "needs_tuning"
    ROLLBACK_READY = "rollback_ready"
    AWAITING_HANDOFF = "awaiting_handoff"
    HELD = "held"
    DEPLOYING = "deploying"
    WATCHING = "watching"
    STABLE = "stable"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"

    @property
    def label(self) -> str:
        """How the portal and reports spell the state."""
        return _LABELS[self]


_LABELS = {
    PackageState.SCHEDULED: "Scheduled",
    PackageState.RELEASE_READY: "Release ready",
    PackageState.MONITORING: "Monitoring",
    PackageState.NEEDS_TUNING: "Needs tuning",
    PackageState.ROLLBACK_READY: "Rollback ready",
    PackageState.AWAITING_HANDOFF: "Awaiting handoff",
    PackageState.HELD: "Held",
    PackageState.DEPLOYING: "Deploying",
    PackageState.WATCHING: "Watching",
    PackageState.STABLE: "Stable",
    PackageState.ROLLING_BACK: "Rolling back",
    PackageState.ROLLED_BACK: "Rolled back",
}

S = PackageState
_PRE_RELEASE = {S.SCHEDULED, S.RELEASE_READY, S.MONITORING, S.NEEDS_TUNING, S.HELD}

ALLOWED: dict[PackageState, frozenset[PackageState]] = {
    S.SCHEDULED: frozenset({S.RELEASE_READY, S.MONITORING, S.NEEDS_TUNING, S.AWAITING_HANDOFF,
                            S.HELD, S.ROLLBACK_READY}),
    S.RELEASE_READY: frozenset({S.SCHEDULED, S.MONITORING, S.NEEDS_TUNING, S.AWAITING_HANDOFF,
                                S.HELD}),
    S.MONITORING: frozenset({S.SCHEDULED, S.RELEASE_READY, S.NEEDS_TUNING, S.AWAITING_HANDOFF,
                             S.HELD}),
    S.NEEDS_TUNING: frozenset({S.SCHEDULED, S.RELEASE_READY, S.MONITORING, S.AWAITING_HANDOFF,
                               S.HELD, S.WATCHING, S.STABLE, S.ROLLING_BACK}),
    S.HELD: frozenset({S.SCHEDULED, S.RELEASE_READY, S.MONITORING, S.NEEDS_TUNING,
                       S.AWAITING_HANDOFF, S.ROLLING_BACK}),
    # A crash while paused leaves awaiting_handoff; the re-run asks again.
    S.AWAITING_HANDOFF: frozenset({S.AWAITING_HANDOFF, S.DEPLOYING, S.HELD}),
    # deploying -> deploying is the re-run after a crash mid-deploy.
    S.DEPLOYING: frozenset({S.DEPLOYING, S.WATCHING, S.HELD, S.ROLLING_BACK}),
    S.WATCHING: frozenset({S.STABLE, S.NEEDS_TUNING, S.HELD, S.ROLLING_BACK}),
    # stable -> held is containment: an anomaly after launch stops the package for a human.
    S.STABLE: frozenset({S.NEEDS_TUNING, S.HELD, S.ROLLING_BACK}),
    S.ROLLBACK_READY: frozenset({S.SCHEDULED, S.HELD, S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLING_BACK, S.ROLLED_BACK}),
    S.ROLLED_BACK: frozenset({S.SCHEDULED, S.ROLLING_BACK}),
}

# States from which release_wave picks a package up (again): everything not yet launched,
# plus the in-flight states a crash can leave behind.
RELEASABLE: frozenset[PackageState] = frozenset(_PRE_RELEASE | {S.AWAITING_HANDOFF, S.DEPLOYING})
# States in which the package's grants are live on the target.
DEPLOYED: frozenset[PackageState] = frozenset({S.WATCHING, S.STABLE, S.NEEDS_TUNING})
# Rollback has something to restore only once a prior bundle was recorded.
ROLLBACKABLE: frozenset[PackageState] = frozenset(
    {S.DEPLOYING, S.WATCHING, S.STABLE, S.NEEDS_TUNING, S.HELD, S.ROLLING_BACK, S.ROLLED_BACK,
     S.ROLLBACK_READY}
)


class IllegalTransition(ValueError):
    """Raised when code asks for a state change the machine does not allow."""


def check_transition(current: PackageState, target: PackageState) -> None:
    """Raise IllegalTransition unless `current -> target` is allowed."""
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"a package cannot go from {current.label} to {target.label}")


def diagram() -> str:
    """docs/states.md: every edge of ALLOWED as a Mermaid state diagram, in a stable order."""
    order = list(PackageState)
    lines = ["# Package states", "",
             "Generated from `wavekit.domain.states.ALLOWED` by `diagram()`; do not edit.", "",
             "```mermaid", "stateDiagram-v2"]
    for src in order:
        lines += [f"    {src.value} --> {dst.value}"
                  for dst in sorted(ALLOWED[src], key=order.index)]
    lines += ["```", "", "| state | label | may go to |", "|---|---|---|"]
    lines += [f"| `{s.value}` | {s.label} | "
              f"{', '.join(d.label for d in sorted(ALLOWED[s], key=order.index))} |"
              for s in order]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(diagram(), end="")

"""When legacy grants retire: one rule, a pure function of package state and release facts.

The watch, the watch deployment's sweep, a re-run of a package's roll-out and the nightly
run all ask `retirement_due`, so they cannot disagree.

Legacy grants of a release retire when the release retires any, they are not retired yet,
the release is deployed and not rolled back, no health check is past its failure limit, and

- retire_in_launch_window: the package is Watching or Stable (retire at launch, once the
  deploy is done, unless the watch has already stopped it);
- otherwise: the package is Stable and its watch window is over (a clean watch).

Never before a stepped release's last step is on the target (the members of later steps
still use the old access), never while Needs tuning (a human is deciding), Contained (an
anomaly is open), rolling or rolled back, or anywhere before the deploy: the old access is
the way back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wavekit.domain.clock import as_utc
from wavekit.domain.states import PackageState

S = PackageState
LAUNCH_WINDOW_STATES = frozenset({S.WATCHING, S.STABLE})


@dataclass(frozen=True)
class RetirementFacts:
    state: PackageState
    has_legacy: bool  # the release's plan retires legacy grants
    retire_in_launch_window: bool = False
    deployed_at: datetime | None = None
    watch_ends_at: datetime | None = None
    legacy_retired_at: datetime | None = None
    rolled_back: bool = False
    failing: bool = False  # a health check is past its failure limit in this release
    cohort_complete: bool = True  # a stepped release has every step on the target


def retirement_due(f: RetirementFacts, as_of: datetime) -> str | None:
    """Why the legacy grants retire now, or None if they do not."""
    if not f.has_legacy or f.legacy_retired_at is not None or f.deployed_at is None:
        return None
    if f.rolled_back or f.failing or not f.cohort_complete:
        return None
    if f.retire_in_launch_window:
        if f.state not in LAUNCH_WINDOW_STATES:
            return None
        return (f"launch window passed on {as_utc(f.deployed_at):%Y-%m-%d}; legacy grants "
                "still held")
    ends = f.watch_ends_at or f.deployed_at
    if f.state != S.STABLE or as_utc(as_of) < as_utc(ends):
        return None
    return f"watch passed on {as_utc(ends):%Y-%m-%d}; legacy grants still held"

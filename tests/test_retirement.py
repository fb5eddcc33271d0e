"""The one retirement rule, over every package state (wavekit.domain.retirement)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from wavekit.domain.retirement import RetirementFacts, retirement_due
from wavekit.domain.states import PackageState

S = PackageState
D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)
AFTER_WATCH = D0 + timedelta(days=15)
IN_WATCH = D0 + timedelta(days=3)

# state -> (retires in the launch window?, retires after a clean watch?)
EXPECTED = {
    S.SCHEDULED: (False, False),
    S.RELEASE_READY: (False, False),
    S.MONITORING: (False, False),
    S.NEEDS_TUNING: (False, False),  # a human is deciding: keep the way back
    S.ROLLBACK_READY: (False, False),
    S.AWAITING_HANDOFF: (False, False),
    S.HELD: (False, False),
    S.DEPLOYING: (False, False),  # not deployed yet
    S.WATCHING: (True, False),  # the watch is not over: only launch-window packages
    S.STABLE: (True, True),
    S.CONTAINED: (False, False),  # an anomaly is open
    S.ROLLING_BACK: (False, False),
    S.ROLLED_BACK: (False, False),
}


def test_the_table_covers_every_state() -> None:
    assert set(EXPECTED) == set(PackageState)


def facts(state: PackageState, **kw) -> RetirementFacts:  # type: ignore[no-untyped-def]
    return RetirementFacts(state=state, has_legacy=True, deployed_at=D0,
                           watch_ends_at=D0 + timedelta(days=14), **kw)


@pytest.mark.parametrize("state", list(PackageState))
@pytest.mark.parametrize("launch_window", [True, False])
def test_retirement_over_every_state(state: PackageState, launch_window: bool) -> None:
    want = EXPECTED[state][0 if launch_window else 1]
    f = facts(state, retire_in_launch_window=launch_window)
    got = retirement_due(f, AFTER_WATCH)
    assert (got is not None) == want, (state, launch_window, got)
    if want:
        assert got == ("launch window passed on 2026-04-08; legacy grants still held"
                       if launch_window else
                       "watch passed on 2026-04-22; legacy grants still held")
    # Whatever the state, these never retire:
    for blocked in (replace(f, has_legacy=False), replace(f, legacy_retired_at=D0),
                    replace(f, deployed_at=None), replace(f, rolled_back=True),
                    replace(f, failing=True)):
        assert retirement_due(blocked, AFTER_WATCH) is None, blocked


def test_a_clean_watch_retires_only_once_the_window_is_over() -> None:
    stable = facts(S.STABLE)
    assert retirement_due(stable, IN_WATCH) is None  # marked stable early by a person
    assert retirement_due(stable, D0 + timedelta(days=14)) is not None
    launch = facts(S.WATCHING, retire_in_launch_window=True)
    assert retirement_due(launch, D0) is not None  # right after the deploy
    # No recorded watch end: the deploy stands in for it.
    assert retirement_due(replace(stable, watch_ends_at=None), D0) is not None

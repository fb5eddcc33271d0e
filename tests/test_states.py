"""The state machine's containment edges, and its diagram naming every state."""

from __future__ import annotations

import pytest

import wavekit.domain.states as states
from wavekit.domain.states import (
    ALLOWED,
    DEPLOYED,
    RELEASABLE,
    WATCHED,
    IllegalTransition,
    PackageState,
    check_transition,
)

S = PackageState


@pytest.mark.parametrize(("current", "target"), [
    (S.WATCHING, S.CONTAINED), (S.STABLE, S.CONTAINED), (S.NEEDS_TUNING, S.CONTAINED),
    (S.CONTAINED, S.WATCHING), (S.CONTAINED, S.STABLE), (S.CONTAINED, S.NEEDS_TUNING),  # restore
    (S.CONTAINED, S.ROLLING_BACK),  # roll back
    (S.CONTAINED, S.AWAITING_HANDOFF),  # release again
    (S.AWAITING_HANDOFF, S.CONTAINED),  # the new release is held
])
def test_containment_edges(current: PackageState, target: PackageState) -> None:
    check_transition(current, target)


@pytest.mark.parametrize("live", [S.WATCHING, S.STABLE, S.CONTAINED])
def test_a_live_package_is_never_held(live: PackageState) -> None:
    # Held means nothing is on the target; containment contains instead.
    with pytest.raises(IllegalTransition):
        check_transition(live, S.HELD)


def test_contained_is_live_watched_and_releasable() -> None:
    assert S.CONTAINED in DEPLOYED and S.CONTAINED in WATCHED and S.CONTAINED in RELEASABLE
    assert S.CONTAINED.label == "Contained"
    with pytest.raises(IllegalTransition):
        check_transition(S.CONTAINED, S.DEPLOYING)  # again only through an owner handoff


def test_the_diagram_names_every_state_and_every_state_has_edges() -> None:
    doc = states.diagram()  # docs/states.md, generated from ALLOWED
    for state in PackageState:
        assert state.value in doc, state
        assert state in ALLOWED

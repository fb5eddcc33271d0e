"""Canary cohorts inside a package: who gets the package at each step, by a stated rule.

A package may declare `rollout: {steps: [...], cohort_by: COLUMN}` in the catalog. Its steps
alternate member steps and soaks:

    steps: [{members: 5%}, {soak_hours: 48}, {members: 25%}, {soak_hours: 24}, {members: 100%}]

Each member step widens the cohort; each soak watches it with the package's health checks
before the next step; the last member step is 100 % and is followed by the package's usual
watch window. A member step may also name identities (`{members: [id, ...]}`), for a pilot
group chosen by hand.

The rule that picks the members (reproducible, and stated in the README):

- every member gets a stable rank: SHA-256 of "<package key>\\x1f<identity id>" (never
  Python's `hash()`, which changes between processes);
- without `cohort_by`, members are taken in rank order;
- with `cohort_by`, members are ranked within their stratum (the column's value) and take
  the position (rank + 0.5) / stratum size; the order is by that position, so any prefix of
  it holds each stratum in proportion to its size (within one member): each cohort looks
  like the whole package;
- a step of p % holds ceil(p / 100 x members) members (at least one), a named step adds
  its names; every cohort contains the one before (cohorts are nested).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from wavekit.domain.decisions import same_person
from wavekit.domain.health import Verdict
from wavekit.domain.planning import Plan


@dataclass(frozen=True)
class CohortStep:
    """One member step: a share of the members or named identities, then its soak."""

    percent: float | None = None  # None: a named step
    named: tuple[str, ...] = ()
    soak_hours: float = 0.0  # how long the cohort is watched before the next step

    @property
    def label(self) -> str:
        if self.percent is None:
            return f"named ({len(self.named)})"
        return f"{self.percent:g}%"


@dataclass(frozen=True)
class Rollout:
    """A package's steps, as parsed from the catalog's `rollout`."""

    steps: tuple[CohortStep, ...]
    cohort_by: str | None = None


def rollout_from(raw: Mapping[str, Any] | None) -> Rollout | None:
    """The stored (validated) rollout of a package, or None when it has no steps.

    `raw` is what the catalog schema produced: {"steps": [{"members": 5.0} |
    {"members": [ids]} | {"soak_hours": 48.0}, ...], "cohort_by": column or None}.
    """
    if not raw or not raw.get("steps"):
        return None
    steps: list[CohortStep] = []
    for item in raw["steps"]:
        if "soak_hours" in item:
            steps[-1] = replace(steps[-1], soak_hours=steps[-1].soak_hours
                                + float(item["soak_hours"]))
            continue
        members = item["members"]
        if isinstance(members, list | tuple):
            steps.append(CohortStep(named=tuple(members)))
        else:
            steps.append(CohortStep(percent=float(members)))
    return Rollout(tuple(steps), raw.get("cohort_by"))


def rank(package_key: str, identity: str) -> str:
    """An identity's stable rank within a package (hex SHA-256; smaller goes first)."""
    return hashlib.sha256(f"{package_key}\x1f{identity}".encode()).hexdigest()


def selection_order(package_key: str, members: Iterable[str],
                    strata: Mapping[str, str] | None = None) -> list[str]:
    """Every member in the order cohorts take them (see the module docstring)."""
    ranked = sorted(set(members), key=lambda m: (rank(package_key, m), m))
    if strata is None:
        return ranked
    groups: dict[str, list[str]] = {}
    for m in ranked:
        groups.setdefault(strata.get(m, ""), []).append(m)
    position = {m: (i + 0.5) / len(group) for group in groups.values()
                for i, m in enumerate(group)}
    return sorted(ranked, key=lambda m: (position[m], rank(package_key, m), m))


def cohort_size(percent: float, total: int) -> int:
    """Members a step of `percent` % holds: rounded up, at least one, at most all."""
    if total <= 0:
        return 0
    return min(total, max(1, math.ceil(percent * total / 100 - 1e-9)))


def cohorts(rollout: Rollout, package_key: str, members: Iterable[str],
            strata: Mapping[str, str] | None = None) -> list[frozenset[str]]:
    """The cumulative cohort of every member step: each contains the one before."""
    everyone = frozenset(members)
    order = selection_order(package_key, everyone, strata if rollout.cohort_by else None)
    out: list[frozenset[str]] = []
    current: set[str] = set()
    for step in rollout.steps:
        if step.percent is None:
            current |= set(step.named) & everyone
        else:
            want = cohort_size(step.percent, len(order))
            for m in order:
                if len(current) >= want:
                    break
                current.add(m)
        out.append(frozenset(current))
    return out


def restrict_plan(plan: Plan, identities: frozenset[str]) -> Plan:
    """The plan's writes for `identities` only; the prior bundle stays whole (the cohort
    filter: a step deploys, and a rollback restores, only what its members were given)."""
    def only(grants: frozenset[Any]) -> frozenset[Any]:
        return frozenset(g for g in grants if g.identity in identities)

    return replace(plan, adds=only(plan.adds), removes=only(plan.removes),
                   retirements=only(plan.retirements))


def step_label(rollout: Rollout, index: int, size: int, total: int) -> str:
    """How the UI and the audit name a step: 'step 2/3 · 25% (60 of 240 members)'."""
    step = rollout.steps[index]
    return f"step {index + 1}/{len(rollout.steps)} · {step.label} ({size} of {total} members)"


def soak_hours(rollout: Rollout, index: int) -> float | None:
    """The soak after member step `index`; None for the last step (the watch window follows)."""
    if index >= len(rollout.steps) - 1:
        return None
    return rollout.steps[index].soak_hours


def next_step(rollout: Rollout, index: int) -> int | None:
    """The step after `index`, or None when `index` is the last."""
    return index + 1 if index + 1 < len(rollout.steps) else None


@dataclass(frozen=True)
class SoakAction:
    """What the watch does at a stepped release's tick, and why (for a held soak)."""

    action: str
    reason: str = ""


def thin_soak(soak: Mapping[str, Sequence[str]]) -> str | None:
    """Why a soak that broke no limit is still no evidence to widen on; None when it is.

    `soak` maps each check that had a due time in this step's soak to its verdicts there, in
    due order. Breaking no limit is not enough: a soak of "no data" proves nothing about the
    new cohort. Every such check needs at least one passed measurement, and its last one must
    not have failed (or errored): a cohort is widened on evidence of health, not its absence.
    """
    if not soak:
        return "no health check could measure during the soak"
    for name, verdicts in sorted(soak.items()):
        if Verdict.PASSED not in verdicts:
            return f"{name} has no passed measurement in the soak"
        if verdicts[-1] in (Verdict.FAILED, Verdict.ERROR):
            return f"{name}'s last measurement in the soak was {verdicts[-1]}"
    return None


def soak_action(action: str, *, steps_left: bool, paused: bool,
                soak: Mapping[str, Sequence[str]]) -> SoakAction:
    """The watch's action for a stepped release: a soak that passes (the watch would call the
    package Stable) widens it to its next step instead, unless a release manager paused it
    (it waits, still watched), or the soak is too thin to judge (`thin_soak`): then it is
    inconclusive and holds for a human (Needs tuning; promote still widens). Every other
    action (continue, rollback, contain...) stands."""
    if action != "stable" or not steps_left:
        return SoakAction(action)
    if paused:
        return SoakAction("continue")
    if (gap := thin_soak(soak)) is not None:
        return SoakAction("inconclusive", f"soak inconclusive: {gap}; a release manager "
                                          "decides (promote to widen, or abort)")
    return SoakAction("widen")


COHORT_ACTIONS = ("promote", "pause", "resume", "abort")
# Actions that let more members get the package sooner; pause and abort only reduce exposure.
WIDENING_ACTIONS = frozenset({"promote", "resume"})
# How the actor of a cohort action was established: the CLI (run by someone holding
# wavekit's store and target credentials, who names themself with --as), or a Prefect UI
# form, where the open-source server cannot tell who typed the name.
ActorProof = Literal["cli", "unverified"]


@dataclass(frozen=True)
class ActorFacts:
    """Who may act on one package's rollout (the rule's inputs, read from the store/settings)."""

    package_key: str
    owner_name: str = ""
    owners: frozenset[str] = frozenset()  # the owner's and declared delegates' ids
    release_managers: frozenset[str] = frozenset()  # WAVEKIT_RELEASE_MANAGERS
    local_mode: bool = False  # WAVEKIT_APPROVALS_UNVERIFIED: unproven UI input is accepted


def may_act(action: str, actor: str, facts: ActorFacts, *, proof: ActorProof) -> ActionCheck:
    """Who may promote, pause, resume or abort a package's rollout: one pure rule, like the
    owner-handoff rule (wavekit.domain.decisions.decide), asked by the CLI and the UI alike.

    1. the actor names themself (their Slack id or e-mail, as the catalog names people);
    2. the actor is the package's owner or a declared delegate (accountable for its access),
       or a configured release manager (accountable for the rollout), by id;
    3. on the Prefect UI path nothing proves who typed the name, so an action that widens
       exposure (promote, resume) is refused there unless local mode is on; pause and abort
       only reduce exposure and are taken from the UI, recorded as unverified.
    """
    who = actor.strip()
    if not who:
        return ActionCheck(False, "say who you are (--as NAME): every cohort action is "
                           "audited with who did it")
    eligible = facts.owners | facts.release_managers
    if not any(same_person(who, person) for person in eligible):
        owner = facts.owner_name or "the package owner"
        return ActionCheck(False, f"{who} may not {action} {facts.package_key}: only {owner}, "
                           "a declared delegate or a release manager (WAVEKIT_RELEASE_MANAGERS)"
                           " acts on its rollout")
    if proof == "unverified" and action in WIDENING_ACTIONS and not facts.local_mode:
        return ActionCheck(False, f"the Prefect UI cannot prove who typed {who!r}, and {action} "
                           "widens the rollout: run `wavekit cohort "
                           f"{action} {facts.package_key} --as {who}` instead (pause and "
                           "abort are taken from the UI)")
    return ActionCheck(True)


@dataclass(frozen=True)
class ActionCheck:
    """Whether a release manager's cohort action may go ahead, and why not."""

    allowed: bool
    reason: str = ""


def check_action(action: str, actor: str, *, stepped: bool, live: bool, step: int | None,
                 steps: int, paused: bool, widening: bool, watched: bool = True,
                 state: str = "") -> ActionCheck:
    """The rule for promote / pause / resume / abort (pure: the CLI and the flow ask it).

    promote  widen to the next step now (skipping the rest of the soak); not at the last step
    pause    stop automatic widening; health checks keep running and can still roll back
    resume   let the soak end widen again
    abort    roll back everything the package has granted so far (in any live state)
    """
    if action not in COHORT_ACTIONS:
        return ActionCheck(False, f"unknown action {action!r} (actions: "
                           f"{', '.join(COHORT_ACTIONS)})")
    if not actor.strip():
        return ActionCheck(False, "say who you are (--as NAME): every cohort action is "
                           "audited with who did it")
    if not stepped:
        return ActionCheck(False, "the package has no rollout steps")
    if not live or step is None:
        return ActionCheck(False, "the package has no cohort on the target (release it first)")
    if action == "abort":
        return ActionCheck(True)
    if not watched:  # contained, or still deploying its first step: a human decides first
        return ActionCheck(False, f"the package is {state or 'not watched'}: only a watched "
                           "package is promoted, paused or resumed (abort still works)")
    if widening:
        return ActionCheck(False, "a step is being deployed right now; try again when it is "
                           "watched")
    if action == "promote" and step >= steps - 1:
        return ActionCheck(False, f"already at its last step ({steps}/{steps}): nothing to "
                           "promote to")
    if action == "pause" and paused:
        return ActionCheck(False, "already paused")
    if action == "resume" and not paused:
        return ActionCheck(False, "not paused")
    return ActionCheck(True)

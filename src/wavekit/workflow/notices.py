"""Tell people what happened to a package: held, contained, gate failed, rolled back (Slack
when set up)."""

from __future__ import annotations

from typing import Any

from wavekit.adapters.slack import flow_run_url
from wavekit.adapters.slack.notifier import announce_handoff as post_handoff
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.domain.gates import GateResult
from wavekit.workflow import approval_codes
from wavekit.workflow.containment import ContainOutcome
from wavekit.workflow.rollback import RollbackOutcome
from wavekit.workflow.rollout import HandoffRequest, StageOutcome
from wavekit.workflow.runtime import Runtime


def run_url(rt: Runtime, flow_run_id: str | None) -> str | None:
    """The Prefect UI page of a flow run, for the links in messages; None outside a run."""
    return flow_run_url(rt.settings.ui_url(), flow_run_id) if flow_run_id else None


def ask_approvers(rt: Runtime, request: HandoffRequest, staged: StageOutcome,
                  flow_run_url: str | None = None) -> None:
    """Ask the approvers of an undecided handoff: the Slack message when Slack is set up,
    and each approver's one-time code for the UI form (none in local mode)."""
    if request.decided is not None:
        return
    if rt.notifier is not None:
        post_handoff(rt.database_url, request.approval_id, rt.notifier,
                     gates=[(g.name, g.passed, g.reason) for g in staged.gates],
                     flow_run_url=flow_run_url, counts=staged.counts)
    # The UI form proves who decides by a code sent to each approver (not in local mode).
    approval_codes.issue_codes(rt, request.approval_id, flow_run_url)


def _facts(rt: Runtime, package_key: str) -> dict[str, Any]:
    with session_scope(rt.database_url) as s:
        pkg = get_one(s, RolePackage, package_key)
        return {"package_key": pkg.key, "package_name": pkg.name, "wave": pkg.wave,
                "owner_slack_id": pkg.owner_slack_id}


def notify_held(rt: Runtime, package_key: str, reason: str, flow_run_url: str | None = None
                ) -> None:
    """A held or contained package, with the reason."""
    if rt.notifier is not None:
        rt.notifier.post_held(**_facts(rt, package_key), reason=reason, flow_run_url=flow_run_url)


def notify_contained(rt: Runtime, outcome: ContainOutcome, flow_run_url: str | None = None
                     ) -> None:
    """The owner learns who and what was suspended, why, and how to undo it."""
    if rt.notifier is None:
        return
    post = getattr(rt.notifier, "post_contained", None)
    if post is None:  # a notifier from before containment: say it as a hold notice
        rt.notifier.post_held(**_facts(rt, outcome.package_key), reason=outcome.describe(),
                              flow_run_url=flow_run_url)
        return
    post(**_facts(rt, outcome.package_key), reason=outcome.reason,
         identities=sorted(outcome.identities),
         grants=[tuple(g) for g in sorted(outcome.suspended)], flow_run_url=flow_run_url)


def notify_gates_failed(rt: Runtime, package_key: str, gates: list[GateResult],
                        flow_run_url: str | None = None) -> None:
    """Gate results of a package a gate stopped."""
    if rt.notifier is not None:
        rt.notifier.post_gate_failed(**_facts(rt, package_key),
                                     gates=[(g.name, g.passed, g.reason) for g in gates],
                                     flow_run_url=flow_run_url)


def notify_rollback(rt: Runtime, outcome: RollbackOutcome, flow_run_url: str | None = None
                    ) -> None:
    """What was rolled back, why, and the proof that access is back to the prior bundle."""
    if rt.notifier is not None:
        p = outcome.proof
        rt.notifier.post_rollback(**_facts(rt, outcome.package_key), reason=outcome.reason,
                                  prior_count=p.prior_count, readback_count=p.readback_count,
                                  equal=p.equal, mismatches=sorted(p.mismatched),
                                  flow_run_url=flow_run_url)

"""Slack approvals for owner handoff: messages, signed interactivity, notifier, deadlines."""

from __future__ import annotations

from wavekit.adapters.slack.deadlines import (
    DEFAULT_DEADLINE_AFTER,
    DEFAULT_ESCALATE_AFTER,
    DEFAULT_REMINDER_AFTER,
    DeadlineAction,
    TimedOut,
    apply_deadlines,
    deadline_actions,
)
from wavekit.adapters.slack.messages import flow_run_url
from wavekit.adapters.slack.notifier import (
    Notifier,
    NullNotifier,
    SlackNotifier,
    announce_handoff,
    make_web_client,
)
from wavekit.adapters.slack.receiver import (
    Interactions,
    Resumer,
    create_receiver_app,
    prefect_resumer,
    run_receiver,
)
from wavekit.adapters.slack.signing import SignatureCheck, verify_request
from wavekit.adapters.slack.socket_mode import (
    connect_socket_mode,
    make_socket_handler,
    run_socket_mode,
)
from wavekit.domain.decisions import ApprovalFacts, Click, Outcome, Ruling, decide

__all__ = [
    "DEFAULT_DEADLINE_AFTER",
    "DEFAULT_ESCALATE_AFTER",
    "DEFAULT_REMINDER_AFTER",
    "ApprovalFacts",
    "Click",
    "DeadlineAction",
    "Interactions",
    "Notifier",
    "NullNotifier",
    "Outcome",
    "Resumer",
    "Ruling",
    "SignatureCheck",
    "SlackNotifier",
    "TimedOut",
    "announce_handoff",
    "apply_deadlines",
    "connect_socket_mode",
    "create_receiver_app",
    "deadline_actions",
    "decide",
    "flow_run_url",
    "make_socket_handler",
    "make_web_client",
    "prefect_resumer",
    "run_receiver",
    "run_socket_mode",
    "verify_request",
]

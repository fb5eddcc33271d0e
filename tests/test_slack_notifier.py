"""The Slack notifier through the real slack_sdk WebClient against the loopback double."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.errors import SlackApiError

from tests.support.slack_double import BOT_TOKEN, CHANNEL, SlackDouble
from wavekit.adapters.slack.notifier import (
    Notifier,
    NullNotifier,
    SlackNotifier,
    announce_handoff,
    make_web_client,
)
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release

pytest_plugins = ["tests.support.slack_double"]

NOW = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)
HANDOFF = dict(approval_id=3, package_key="hr-case-intake-specialist",
               package_name="HR Case Intake Specialist", wave=1, owner_slack_id="UHROWNER01",
               members=9, entitlements=8, risk="medium",
               counts={"adds": 60, "removes": 0, "retirements": 4},
               gates=[("owner named", True, "")], flow_run_url="http://ui/runs/flow-run/x",
               deadline=NOW + timedelta(hours=24))


@pytest.fixture
def notifier(slack_double: SlackDouble) -> SlackNotifier:
    return SlackNotifier(make_web_client(BOT_TOKEN, base_url=slack_double.base_url), CHANNEL)


def test_both_implementations_satisfy_the_protocol(notifier: SlackNotifier) -> None:
    assert isinstance(notifier, Notifier)
    assert isinstance(NullNotifier(), Notifier)


def test_handoff_goes_to_the_channel_and_the_owner_is_told_by_dm(
        notifier: SlackNotifier, slack_double: SlackDouble) -> None:
    channel, ts = notifier.post_handoff(**HANDOFF)
    assert channel == CHANNEL and ts
    posted = slack_double.message(channel, ts)
    assert any(b["type"] == "actions" for b in posted["blocks"])
    assert "HR Case Intake Specialist" in posted["text"]

    (opened,) = slack_double.calls_to("conversations.open")
    assert opened.params["users"] == "UHROWNER01"
    dm = slack_double.calls_to("chat.postMessage")[1].params
    assert dm["channel"] == "DHROWNER01" and f"<#{CHANNEL}>" in json.dumps(dm["blocks"])


def test_mark_decided_replaces_the_message(notifier: SlackNotifier,
                                           slack_double: SlackDouble) -> None:
    channel, ts = notifier.post_handoff(**HANDOFF)
    notifier.mark_decided(channel=channel, ts=ts, package_name="HR Case Intake Specialist",
                          wave=1, decision="approved", approver="UHRDELEG01", decided_at=NOW)
    message = slack_double.message(channel, ts)
    assert message["text"].startswith("Approved") and "edited" in message
    assert not any(b["type"] == "actions" for b in message["blocks"])


def test_reminder_goes_to_the_thread_and_the_owner(notifier: SlackNotifier,
                                                   slack_double: SlackDouble) -> None:
    channel, ts = notifier.post_handoff(**HANDOFF)
    slack_double.calls.clear()
    notifier.remind(channel=channel, ts=ts, package_name="P", wave=1,
                    owner_slack_id="UHROWNER01", deadline=NOW)
    thread, dm = (c.params for c in slack_double.calls_to("chat.postMessage"))
    assert thread["thread_ts"] == ts and thread["channel"] == channel
    assert dm["channel"] == "DHROWNER01" and "Reminder" in dm["text"]


def test_escalation_reaches_every_delegate(notifier: SlackNotifier,
                                           slack_double: SlackDouble) -> None:
    notifier.escalate(channel=CHANNEL, ts="1700000000.000100", package_name="P", wave=1,
                      owner_slack_id="UOWNER", delegate_slack_ids=["UDEL1", "UDEL2"],
                      deadline=NOW)
    posts = [c.params for c in slack_double.calls_to("chat.postMessage")]
    assert posts[0]["reply_broadcast"] is True
    assert "<@UDEL1>, <@UDEL2>" in json.dumps(posts[0]["blocks"])
    assert [p["channel"] for p in posts[1:]] == ["DDEL1", "DDEL2"]


def test_rollback_held_and_gate_failed_notices_go_to_the_channel(
        notifier: SlackNotifier, slack_double: SlackDouble) -> None:
    notifier.post_rollback(package_key="k", package_name="P", wave=1, reason="drift",
                           prior_count=5, readback_count=5, equal=True)
    notifier.post_held(package_key="k", package_name="P", wave=1, reason="rejected")
    notifier.post_gate_failed(package_key="k", package_name="P", wave=1,
                              gates=[("fallback drilled", False, "drill pending")])
    texts = [c.params["text"] for c in slack_double.calls_to("chat.postMessage")]
    assert [t.split(":")[0] for t in texts] == ["Rolled back", "Held", "Gate failed"]
    assert all(c.params["channel"] == CHANNEL for c in slack_double.calls_to("chat.postMessage"))


def test_a_rate_limited_call_waits_retry_after_and_is_retried(slack_double: SlackDouble) -> None:
    waits: list[float] = []
    client = make_web_client(BOT_TOKEN, base_url=slack_double.base_url, sleep=waits.append)
    slack_double.rate_limit_next("chat.postMessage", retry_after=7)
    SlackNotifier(client, CHANNEL).post_held(package_key="k", package_name="P", wave=1,
                                             reason="r")
    assert len(slack_double.calls_to("chat.postMessage")) == 2  # the 429, then the retry
    assert len(waits) == 1 and 7 <= waits[0] < 7.2
    assert len(slack_double.messages) == 1


def test_a_wrong_token_fails_loudly_without_showing_it(slack_double: SlackDouble) -> None:
    client = make_web_client("xoxb-wrong-token", base_url=slack_double.base_url)
    with pytest.raises(SlackApiError) as caught:
        client.auth_test()
    assert caught.value.response["error"] == "invalid_auth"
    assert "xoxb-wrong-token" not in str(caught.value)


def test_null_notifier_does_nothing() -> None:
    null = NullNotifier()
    assert null.post_handoff(**HANDOFF) is None
    assert null.post_rollback(package_key="k", package_name="P", wave=1, reason="r",
                              prior_count=1, readback_count=1, equal=True) is None


def _approval(url: str) -> int:
    with session_scope(url) as s:
        release = Release(package_key="hr-case-intake-specialist", wave=1, adds=60,
                          retirements=4, triggered_by="URELMGR01")
        s.add(release)
        s.flush()
        approval = Approval(release_id=release.id, package_key=release.package_key,
                            flow_run_id="run-1", requested_at=NOW, deadline=NOW)
        s.add(approval)
        s.flush()
        assert approval.id is not None
        return approval.id


def test_announce_handoff_posts_from_the_store_and_keeps_channel_and_ts(
        loaded_store: str, notifier: SlackNotifier, slack_double: SlackDouble) -> None:
    approval_id = _approval(loaded_store)
    channel, ts = announce_handoff(loaded_store, approval_id, notifier,
                                   gates=[("mfa", True, "enforced")]) or ("", "")
    with session_scope(loaded_store) as s:
        row = s.get(Approval, approval_id)
        assert row is not None
        assert (row.channel, row.slack_channel, row.slack_ts) == ("slack", channel, ts)
        (event,) = audit.events(s, action="approval_posted")
    assert event.detail["slack_ts"] == ts
    text = json.dumps(slack_double.message(channel, ts)["blocks"])
    for fact in ("HR Case Intake Specialist", "60 adds", "4 retirements", "*Risk*\\nMedium",
                 "*Entitlements*\\n8", "Triggered by <@URELMGR01>", "*mfa*"):
        assert fact in text, fact


def test_announce_handoff_without_slack_leaves_the_row_alone(loaded_store: str) -> None:
    approval_id = _approval(loaded_store)
    assert announce_handoff(loaded_store, approval_id, NullNotifier()) is None
    with session_scope(loaded_store) as s:
        row = s.get(Approval, approval_id)
        assert row is not None and row.slack_ts is None


def test_a_failed_dm_does_not_lose_the_handoff(notifier: SlackNotifier,
                                               slack_double: SlackDouble) -> None:
    slack_double.unknown_users.add("UHROWNER01")
    channel, ts = notifier.post_handoff(**HANDOFF)
    assert slack_double.message(channel, ts)["text"].startswith("Approval needed")
    assert len(slack_double.calls_to("chat.postMessage")) == 1

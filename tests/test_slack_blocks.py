"""The SlackApp block and its environment-variable alternative."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from blocks.slack import SlackApp, SlackAppIncomplete, slack_settings_from_env
from tests.support.slack_double import BOT_TOKEN, CHANNEL, SIGNING_SECRET, SlackDouble
from wavekit.adapters.slack.notifier import SlackNotifier

pytest_plugins = ["tests.support.slack_double"]

ENV = {"WAVEKIT_SLACK_BOT_TOKEN": BOT_TOKEN, "WAVEKIT_SLACK_SIGNING_SECRET": SIGNING_SECRET,
       "WAVEKIT_SLACK_CHANNEL": CHANNEL}


def test_the_block_builds_a_working_client_and_notifier(slack_double: SlackDouble) -> None:
    app = SlackApp(bot_token=SecretStr(BOT_TOKEN), signing_secret=SecretStr(SIGNING_SECRET),
                   channel=CHANNEL, api_base_url=slack_double.base_url)
    assert app.web_client().auth_test()["team_id"] == "T0WAVEKIT"
    notifier = app.notifier()
    assert isinstance(notifier, SlackNotifier)
    notifier.post_held(package_key="k", package_name="P", wave=1, reason="r")
    assert slack_double.calls_to("chat.postMessage")[0].params["channel"] == CHANNEL


def test_the_block_never_shows_its_secrets() -> None:
    app = SlackApp(bot_token=SecretStr(BOT_TOKEN), signing_secret=SecretStr(SIGNING_SECRET),
                   app_token=SecretStr("xapp-secret-app-token"), channel=CHANNEL)
    shown = repr(app) + str(app) + app.model_dump_json()
    for secret in (BOT_TOKEN, SIGNING_SECRET, "xapp-secret-app-token"):
        assert secret not in shown


def test_settings_from_env(slack_double: SlackDouble) -> None:
    app = slack_settings_from_env({**ENV, "WAVEKIT_SLACK_API_URL": slack_double.base_url,
                                   "WAVEKIT_SLACK_APP_TOKEN": "xapp-1"})
    assert app is not None
    assert app.channel == CHANNEL and app.api_base_url == slack_double.base_url
    assert app.bot_token.get_secret_value() == BOT_TOKEN
    assert app.app_token is not None and app.app_token.get_secret_value() == "xapp-1"
    assert app.web_client().auth_test()["ok"]


def test_no_token_means_no_slack() -> None:
    assert slack_settings_from_env({}) is None
    default = slack_settings_from_env(ENV)
    assert default is not None and default.api_base_url == "https://slack.com/api/"
    assert default.app_token is None


def test_a_half_configured_app_names_what_is_missing_but_not_the_values() -> None:
    with pytest.raises(SlackAppIncomplete) as caught:
        slack_settings_from_env({"WAVEKIT_SLACK_BOT_TOKEN": BOT_TOKEN})
    message = str(caught.value)
    assert "WAVEKIT_SLACK_SIGNING_SECRET" in message and "WAVEKIT_SLACK_CHANNEL" in message
    assert BOT_TOKEN not in message

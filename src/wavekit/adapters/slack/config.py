"""Slack app configuration: from WAVEKIT_SLACK_* variables or a stored SlackApp block.

The block type itself lives in blocks/slack.py (for the Prefect UI form); wavekit reads a
saved block's document through the Prefect API, so it never imports blocks/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from pydantic import BaseModel, Field, SecretStr
from slack_sdk import WebClient

from wavekit.adapters.slack.notifier import SlackNotifier, make_web_client

ENV_BOT_TOKEN = "WAVEKIT_SLACK_BOT_TOKEN"
ENV_SIGNING_SECRET = "WAVEKIT_SLACK_SIGNING_SECRET"
ENV_APP_TOKEN = "WAVEKIT_SLACK_APP_TOKEN"
ENV_CHANNEL = "WAVEKIT_SLACK_CHANNEL"
ENV_API_URL = "WAVEKIT_SLACK_API_URL"
DEFAULT_API_URL = "https://slack.com/api/"


class SlackAppIncomplete(ValueError):
    """Some Slack settings are given but not all the required ones."""


BLOCK_TYPE_SLUG = "wavekit-slack-app"


class SlackConfig(BaseModel):
    """wavekit's Slack app: where handoffs are posted and how clicks are verified."""

    bot_token: SecretStr = Field(description="Bot user OAuth token (xoxb-...).")
    signing_secret: SecretStr = Field(description="Signing secret that verifies Slack requests.")
    app_token: SecretStr | None = Field(
        default=None, description="App-level token (xapp-...) for Socket Mode; optional.")
    channel: str = Field(description="Channel id or name where handoffs are posted.")
    api_base_url: str = Field(default=DEFAULT_API_URL,
                              description="Slack Web API base URL (tests point it at a double).")

    def web_client(self, *, sleep: Callable[[float], None] = time.sleep) -> WebClient:
        """A WebClient for the bot, retrying rate-limited calls."""
        return make_web_client(self.bot_token.get_secret_value(), base_url=self.api_base_url,
                               sleep=sleep)

    def notifier(self, *, sleep: Callable[[float], None] = time.sleep) -> SlackNotifier:
        """The notifier that posts to this app's channel."""
        return SlackNotifier(self.web_client(sleep=sleep), self.channel)


def slack_settings_from_env(environ: Mapping[str, str] | None = None) -> SlackConfig | None:
    """A SlackApp from WAVEKIT_SLACK_* variables; None when no bot token is set (no Slack).

    Raises SlackAppIncomplete naming the missing variables (never their values).
    """
    env = os.environ if environ is None else environ
    token = env.get(ENV_BOT_TOKEN, "").strip()
    if not token:
        return None
    missing = [name for name in (ENV_SIGNING_SECRET, ENV_CHANNEL) if not env.get(name, "").strip()]
    if missing:
        raise SlackAppIncomplete(f"{ENV_BOT_TOKEN} is set but {', '.join(missing)} "
                                 f"{'is' if len(missing) == 1 else 'are'} not")
    app_token = env.get(ENV_APP_TOKEN, "").strip()
    return SlackConfig(
        bot_token=SecretStr(token),
        signing_secret=SecretStr(env[ENV_SIGNING_SECRET].strip()),
        app_token=SecretStr(app_token) if app_token else None,
        channel=env[ENV_CHANNEL].strip(),
        api_base_url=env.get(ENV_API_URL, "").strip() or DEFAULT_API_URL,
    )


def load_slack_block(name: str) -> SlackConfig:
    """The SlackApp block saved as `name`, read through the Prefect API (secrets included)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(name, block_type_slug=BLOCK_TYPE_SLUG,
                                                 include_secrets=True)
    return SlackConfig.model_validate(doc.data)


def configured_slack(environ: Mapping[str, str] | None = None) -> SlackConfig | None:
    """Slack from WAVEKIT_SLACK_* variables, else the block named by WAVEKIT_SLACK_BLOCK."""
    env = os.environ if environ is None else environ
    config = slack_settings_from_env(env)
    if config is None and (block := env.get("WAVEKIT_SLACK_BLOCK", "").strip()):
        config = load_slack_block(block)
    return config

"""The Slack app as a Prefect Block: its form in the UI, its tokens kept as secrets."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from slack_sdk import WebClient

from wavekit.adapters.slack.config import (
    BLOCK_TYPE_SLUG,
    DEFAULT_API_URL,
    SlackAppIncomplete,
    SlackConfig,
    slack_settings_from_env,
)
from wavekit.adapters.slack.notifier import SlackNotifier

__all__ = ["SlackApp", "SlackAppIncomplete", "slack_settings_from_env"]


class SlackApp(Block):
    """wavekit's Slack app: where handoffs are posted and how clicks are verified."""

    _block_type_name = "wavekit Slack app"
    _block_type_slug = BLOCK_TYPE_SLUG
    _description = ("Slack app for wavekit owner handoffs: bot token, signing secret, optional "
                    "Socket Mode app token, and the release channel.")

    bot_token: SecretStr = Field(description="Bot user OAuth token (xoxb-...).")
    signing_secret: SecretStr = Field(description="Signing secret that verifies Slack requests.")
    app_token: SecretStr | None = Field(
        default=None, description="App-level token (xapp-...) for Socket Mode; optional.")
    channel: str = Field(description="Channel id or name where handoffs are posted.")
    api_base_url: str = Field(default=DEFAULT_API_URL,
                              description="Slack Web API base URL (tests point it at a double).")

    def config(self) -> SlackConfig:
        """The plain configuration wavekit's adapters take."""
        return SlackConfig(bot_token=self.bot_token, signing_secret=self.signing_secret,
                           app_token=self.app_token, channel=self.channel,
                           api_base_url=self.api_base_url)

    def web_client(self, *, sleep: Callable[[float], None] = time.sleep) -> WebClient:
        """A WebClient for the bot, retrying rate-limited calls."""
        return self.config().web_client(sleep=sleep)

    def notifier(self, *, sleep: Callable[[float], None] = time.sleep) -> SlackNotifier:
        """The notifier that posts to this app's channel."""
        return self.config().notifier(sleep=sleep)

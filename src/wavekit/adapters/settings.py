"""Settings from environment variables (prefix WAVEKIT_); Slack may instead come from a SlackApp
block (WAVEKIT_SLACK_BLOCK), read by wavekit.adapters.slack.config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from wavekit.adapters.targets.base import BATCH_SIZE


def masked_url(url: str) -> str:
    """A store URL fit to print: its password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can read: show none of it
        return "<unreadable URL>"


def default_data_dir() -> Path:
    return Path.home() / ".wavekit"


class Settings(BaseSettings):
    """Every knob wavekit reads; documented in the README's Configuration section."""

    model_config = SettingsConfigDict(env_prefix="WAVEKIT_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    target: str = "sandbox"
    # Grants per target batch (targets.base.BATCH_SIZE); the cap keeps one LDAP modify well
    # under slapd's 4 MiB request limit.
    batch_size: int = Field(BATCH_SIZE, ge=1, le=20000)
    approval_deadline_hours: float = Field(24.0, gt=0)
    approval_reminder_hours: float = Field(4.0, gt=0)
    approval_escalate_hours: float = Field(8.0, gt=0)
    approval_poll_seconds: int = Field(5, ge=1, le=3600)
    # Local mode: accept Prefect UI decisions without a one-time code. Off by default; every
    # decision taken so is recorded as unverified (audit log, reports). For demos only.
    approvals_unverified: bool = False
    # Where one-time approval codes are e-mailed when Slack does not reach an approver.
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = "wavekit@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    review_cadence_days: int = Field(30, ge=1, le=3660)
    # Who may promote, pause, resume or abort any package's rollout besides its owner and
    # delegates: comma-separated ids (Slack id or e-mail). None by default.
    release_managers: str = ""
    # Links to runs in messages; unset, it follows PREFECT_API_URL (the UI is served beside it).
    prefect_ui_url: str | None = None
    # Telemetry drop directory the nightly run loads (WAVEKIT_TELEMETRY_DIR); none by default.
    telemetry_dir: Path | None = None
    # Operational guards (MFA, session timeouts...) the target environment enforces; a package
    # that requires a guard not listed here is held by the operational_guards gate.
    enforced_guards: str = "mfa,session_timeout"
    # Rollback drills (wavekit.adapters.targets.drill): where a drill deploys and rolls back,
    # never production. sandbox (default), scim or ldap, configured by WAVEKIT_DRILL_* variables;
    # the sandbox's name defaults to "drill-<package>".
    drill_target: str = "sandbox"
    drill_sandbox: str | None = None

    def __repr_args__(self) -> Any:
        # A store URL may carry a password (postgresql://user:pw@host/db): never in a repr.
        for name, value in super().__repr_args__():
            yield name, masked_url(value) if name == "database_url" and value else value

    @property
    def release_manager_set(self) -> frozenset[str]:
        return frozenset(m.strip() for m in self.release_managers.split(",") if m.strip())

    @property
    def enforced_guard_set(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.enforced_guards.split(",") if g.strip())

    def ui_url(self, api_url: str | None = None) -> str:
        """The Prefect UI's address: WAVEKIT_PREFECT_UI_URL, else PREFECT_API_URL less /api."""
        import os

        if self.prefect_ui_url:
            return self.prefect_ui_url.rstrip("/")
        api = api_url or os.environ.get("PREFECT_API_URL", "")
        return api.rstrip("/").removesuffix("/api") or "http://127.0.0.1:4200"

    def resolved_database_url(self) -> str:
        """The store URL: WAVEKIT_DATABASE_URL, else a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'wavekit.db'}"


class SettingsInvalid(ValueError):
    """A WAVEKIT_ variable (or an override) holds a value wavekit cannot use; the message
    names each variable and what is wrong, without echoing secrets."""


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with explicit overrides winning."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            where = field if field in given else f"WAVEKIT_{field.upper()}"
            problems.append(f"{where}: {error['msg']}")
        raise SettingsInvalid("invalid setting: " + "; ".join(problems)) from None

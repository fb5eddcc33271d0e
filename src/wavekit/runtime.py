"""Wiring, done once at the start of a run: settings become a store URL, a target and a clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wavekit.clock import Clock, SystemClock
from wavekit.settings import Settings, load_settings
from wavekit.store import get_engine
from wavekit.targets.base import Target
from wavekit.targets.factory import build_target


@dataclass
class Runtime:
    """The adapters a run uses, passed down explicitly (no module-level clients)."""

    settings: Settings
    database_url: str
    target: Target
    clock: Clock = field(default_factory=SystemClock)
    notifier: Any = None  # wavekit.notify.Notifier; None when nobody is told


def build_runtime(
    settings: Settings | None = None,
    *,
    target: Target | None = None,
    target_kind: str | None = None,
    clock: Clock | None = None,
    notifier: Any = None,
) -> Runtime:
    """Build the runtime from settings (environment by default), creating the store if needed."""
    settings = settings or load_settings()
    url = settings.resolved_database_url()
    get_engine(url)
    return Runtime(
        settings=settings, database_url=url,
        target=target or build_target(settings, target_kind),
        clock=clock or SystemClock(), notifier=notifier,
    )

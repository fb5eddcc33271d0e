"""Wiring, done once at the start of a run: settings become a store URL, a target and a clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from wavekit.adapters.settings import Settings, load_settings
from wavekit.adapters.store.engine import get_engine
from wavekit.adapters.targets.base import BatchResult as BatchResult  # re-exported: flows/
from wavekit.adapters.targets.base import Target as Target  # name them through workflow only
from wavekit.adapters.targets.factory import build_target
from wavekit.domain.clock import Clock, SystemClock


@dataclass
class Runtime:
    """The adapters a run uses, passed down explicitly (no module-level clients)."""

    settings: Settings
    database_url: str = field(repr=False)  # may hold a password; the settings' repr masks it
    target: Target
    clock: Clock = field(default_factory=SystemClock)
    notifier: Any = None  # adapters.slack.notifier.Notifier; None when Slack is not configured
    metrics: Any = None  # wavekit.workflow.watch.MetricsSource; built from telemetry when None
    # Where rollback drills deploy; None: built per drill (wavekit.adapters.targets.drill).
    drill_target: Target | None = None
    # A target built from settings belongs to this runtime and is closed with it; one handed
    # in (the demo's, a test's) belongs to whoever handed it in.
    owns_target: bool = False
    opened: ExitStack = field(default_factory=ExitStack, repr=False, compare=False)

    def close(self) -> None:
        """Close what this runtime opened (the target's connection)."""
        self.opened.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_runtime(
    settings: Settings | None = None,
    *,
    target: Target | None = None,
    target_kind: str | None = None,
    clock: Clock | None = None,
    notifier: Any = None,
    metrics: Any = None,
    drill_target: Target | None = None,
) -> Runtime:
    """Build the runtime from settings (environment by default), opening the store.

    An empty store is created at the schema's head; a store at any other revision raises
    StoreNotReady, whose message is the one line to show ("... run `wavekit db upgrade`"):
    a run stops there, before it reads or writes anything.
    """
    settings = settings or load_settings()
    url = settings.resolved_database_url()
    get_engine(url)
    if metrics is None:
        from wavekit.adapters.telemetry import TelemetryMetrics

        metrics = TelemetryMetrics(url)
    if notifier is None:
        notifier = _slack_notifier()
    opened = ExitStack()
    return Runtime(
        settings=settings, database_url=url,
        target=target or opened.enter_context(build_target(settings, target_kind)),
        owns_target=target is None, opened=opened,
        clock=clock or SystemClock(), notifier=notifier, metrics=metrics,
        drill_target=drill_target,
    )


def _slack_notifier() -> Any:
    """A Slack notifier when WAVEKIT_SLACK_* or the WAVEKIT_SLACK_BLOCK block is configured."""
    from wavekit.adapters.slack.config import configured_slack

    config = configured_slack()
    return config.notifier() if config is not None else None


# Per context, not per process: Prefect copies the context into the threads it runs tasks in,
# and an override set by a test or the demo never leaks into another thread's runs.
_factory: ContextVar[Callable[[], Runtime] | None] = ContextVar("wavekit_runtime_factory",
                                                                default=None)


def current_runtime() -> Runtime:
    """A runtime for a flow run: from settings, unless a caller overrides (use it with `with`
    so that the run closes what it opened)."""
    factory = _factory.get()
    return factory() if factory else build_runtime()


@contextmanager
def runtime_override(factory: Callable[[], Runtime]) -> Iterator[None]:
    """Run flows in this context with runtimes from `factory` (the demo and tests use it to
    hand in a manual clock, a scripted target or recorded telemetry)."""
    token = _factory.set(factory)
    try:
        yield
    finally:
        _factory.reset(token)

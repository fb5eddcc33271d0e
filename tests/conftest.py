"""Fixtures shared by every tier: stores on SQLite and PostgreSQL, the example catalog."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

# Keep Prefect quiet and local in every test process (no telemetry, no network).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The tests never touch the store of the machine they run on (~/.wavekit).
os.environ.setdefault("WAVEKIT_DATA_DIR", __import__("tempfile").mkdtemp(prefix="wavekit-tests-"))
# CI runs everything on two loaded cores: an embedded server may take longer than 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.store.engine import reset_store, session_scope
from wavekit.domain.clock import utcnow
from wavekit.examples import EXAMPLE_CATALOG, record_example_drills

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.flows",
    "tests.support.slapd",
    "tests.support.scim_server",
    "tests.support.slack_double",
    "tests.support.smtp",
    "tests.support.browser",
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wavekit.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    reset_store(url)
    yield url


@pytest.fixture(scope="session")
def example_catalog():
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture
def loaded_store(sqlite_url: str, example_catalog) -> str:
    """A SQLite store holding the example world: its catalog and its recorded (signed manual)
    rollback drills, an hour ago. A test on a fixed clock records them again at its time
    (`record_example_drills`): a drill after the test's "now" is no evidence yet."""
    with session_scope(sqlite_url) as s:
        write_catalog(s, example_catalog)
    record_example_drills(sqlite_url, utcnow() - timedelta(hours=1))
    return sqlite_url


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """The fault tiers' figures (tests/support/figures.py), shown in every run's output."""
    from tests.support.figures import RECORDED

    if RECORDED:
        terminalreporter.section("fault tier figures")
        for line in RECORDED:
            terminalreporter.write_line(line)

"""Keep Prefect's noise away from a terminal user. Imports nothing: it must run before Prefect
is first imported, because Prefect reads its logging settings once, at import."""

from __future__ import annotations

import os


def quiet_prefect(*, terminal: bool = True) -> None:
    """Keep Prefect's noise (telemetry errors offline, server chatter) away from the user.

    terminal=False (serving to a real server) keeps run logs so the UI's Logs tab has them.
    """
    # A loaded two-core machine takes longer than Prefect's default 20 s to start it.
    settings = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    if terminal:
        settings |= {"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
                     "PREFECT_LOGGING_LOG_PRINTS": "false"}
    for key, value in settings.items():
        os.environ.setdefault(key, value)

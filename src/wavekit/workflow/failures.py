"""Every failure is recorded: a stage that stops on an error leaves an audit event.

`failure_recorded` wraps a stage (stage, dependency_checks, deploy, retire_legacy, the
rollback's restore and verify). On an error it writes `stage_failed` in a transaction of its
own (the stage's own transaction, if one was open, is rolled back with the error) carrying
the stage, the batch it stopped at, the error class and a one-line message with secrets
masked; keeps that line as the package's state reason; and re-raises the same error.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from markupsafe import escape

from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.workflow.runtime import Runtime

log = logging.getLogger(__name__)


def short_error(exc: BaseException, limit: int = 300) -> str:
    """An error's one-line text for the audit log and the terminal, secrets masked."""
    return redact(" ".join(str(exc).split()), limit=limit)


_SECRET = re.compile(r"(?i)(bearer\s+|authorization[:=]\s*|password[:=]\s*|token[:=]\s*)"
                     r"[^\s,;)]+")
# user:password@ inside any URL, e.g. an exception message that quotes a connection string.
_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s/:@]*:)([^\s@/]+)@")


def redact(text: str, secrets: Iterable[str] = (), limit: int | None = 300) -> str:
    """Mask credentials in `text`: bearer, password and token values, a URL's password and
    every known secret (raw or HTML-escaped); cut to `limit` characters (None: keep all)."""
    text = _SECRET.sub(lambda m: m.group(1) + "***", text)
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        # Jinja's autoescape (markupsafe) and html.escape spell quotes differently.
        for form in {secret, html.escape(secret), str(escape(secret))}:
            text = text.replace(form, "***")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def failure_recorded(rt: Runtime, stage: str, package_key: str, *,
                     release_id: int | None = None, wave: int | None = None) -> Iterator[None]:
    """Run a stage; if it stops on an error, write a `stage_failed` audit event (stage, batch,
    error class, one-line message without secrets) in a transaction of its own, keep the
    reason on the package, and re-raise the same error."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "_wavekit_recorded", False):  # an inner stage recorded it already
            raise
        exc._wavekit_recorded = True  # type: ignore[attr-defined]  # a marker on this exception object only
        message = short_error(exc)
        batch = getattr(exc, "batch", None)
        try:
            with session_scope(rt.database_url) as s:
                audit.record(s, "stage_failed", package_key=package_key, wave=wave,
                             release_id=release_id, at=rt.clock.now(), stage=stage,
                             batch=batch, error=type(exc).__name__, message=message,
                             target=rt.target.name)
                pkg = s.get(RolePackage, package_key)
                if pkg is not None:
                    where = f"{stage} stopped" + (f" at batch {batch}" if batch is not None
                                                  else "")
                    pkg.state_reason = redact(f"{where}: {message}; re-run to resume")
                    s.add(pkg)
        except Exception:  # the store itself failed: the original error is what matters
            log.exception("could not record the failure of %s for %s", stage, package_key)
        raise

"""The dashboard in a real browser: headless Debian Chromium reads the figures a user sees."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlmodel import select

from tests.test_reports import populate
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.domain.states import PackageState
from wavekit.present import reports
from wavekit.present.kpis import compute_kpis

pytestmark = pytest.mark.slow

# Where the lead looks at the picture; out/ is git-ignored.
SHOT_COPY = Path(__file__).resolve().parents[1] / "out" / "dashboard.png"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a fresh directory: (base URL, directory)."""
    site = tmp_path / "site"
    site.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_in_chromium_shows_the_store_figures(loaded_store: str, served, browser,
                                                       tmp_path: Path):
    scenario = populate(loaded_store)
    base, site = served
    (site / "dashboard.html").write_text(
        reports.render_dashboard(loaded_store, scenario.as_of, review_cadence_days=30),
        encoding="utf-8")
    with session_scope(loaded_store) as s:
        k = compute_kpis(s, scenario.as_of, review_cadence_days=30)
        packages = {p.key: p for p in s.exec(select(RolePackage))}

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{base}/dashboard.html")

    def text(test_id: str) -> str:
        return page.get_by_test_id(test_id).inner_text().strip()

    # KPI cards, as a user reads them.
    assert text("kpi-wave-ready-label") == f"Wave {k.wave_ready.wave} ready"
    assert text("kpi-wave-ready-value") == f"{k.wave_ready.release_ready} of 2 queued"
    assert k.wave_ready.count == 2
    assert int(text("kpi-roles-monitored-value")) == k.roles_monitored == 1
    assert int(text("kpi-maintenance-tasks-value")) == k.maintenance_tasks_open == 1
    assert text("kpi-coverage-health-value") == reports.fmt_pct(k.coverage_health)
    for action, n in k.action_counts.items():
        assert page.get_by_test_id(f"action-count-{action.lower()}").locator("b") \
            .inner_text() == str(n)
    assert text("fallback-tested") == "{}/{}".format(*k.fallback_tested)
    assert text("median-deploy-time") == reports.fmt_duration(k.median_deploy_time) == "3h"
    assert text("review-cadence") == "30 days"

    # The packages table: one row per package, names and states as the store has them.
    rows = page.get_by_test_id("package-row")
    assert rows.count() == len(packages)
    seen = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        key = row.get_attribute("data-package-key")
        seen[key] = (row.get_by_test_id("cell-name").inner_text().strip(),
                     row.get_by_test_id("cell-state").inner_text().strip())
    assert seen == {key: (p.name, PackageState(p.state).label) for key, p in packages.items()}

    # The four KPI cards fit in the first screen of a laptop, and nothing scrolls sideways.
    for card in ("kpi-wave-ready", "kpi-roles-monitored", "kpi-maintenance-tasks",
                 "kpi-coverage-health"):
        box = page.get_by_test_id(card).bounding_box()
        assert box and box["y"] + box["height"] <= 900
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # Selecting a package in the table shows its detail in place of the lead's.
    lead_key = page.get_by_test_id("lead-package").get_attribute("data-package-key")
    assert page.locator(f"#pkg-{lead_key}").is_visible()
    page.get_by_test_id("package-row").filter(has_text="HR Case Intake Specialist") \
        .get_by_test_id("cell-name").click()
    hr = page.locator("#pkg-hr-case-intake-specialist")
    assert hr.is_visible() and not page.locator(f"#pkg-{lead_key}").is_visible()
    assert hr.get_by_test_id("chart-access_drift").is_visible()
    assert hr.get_by_test_id("chart-access_drift-last").inner_text() == "0.12"
    # The picture for a human: the watched finance package, with its adoption and health.
    page.goto(f"{base}/dashboard.html#pkg-finance-month-end-operator")
    assert page.get_by_test_id("chart-adoption").first.is_visible()

    # Self-contained: the page asked the network for nothing but itself.
    assert requests and all(u.startswith(f"{base}/dashboard.html") for u in requests)

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    SHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SHOT_COPY)

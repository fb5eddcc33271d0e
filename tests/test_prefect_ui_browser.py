"""Wave 1 released from the Prefect UI in a real browser, against `prefect server start`.

A release manager opens the release-wave deployment, clicks Run → Custom run, types wave 1
and submits; `wavekit serve` runs the wave, which starts one roll-out-package run per package,
named after the package; each suspends at its owner handoff and is resumed by the library's
auto-approver (in its own process, as an operator would run it), which approves HR and
rejects Finance. The runs, their artifacts and the store are checked, then the runs' pages are
read back in the browser: HR's run is Completed, Finance's is Held, not a green success.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from tests.support.servers import api_request, wait_until
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.store.engine import reset_store, session_scope
from wavekit.adapters.store.models import Approval, RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import utcnow
from wavekit.examples import EXAMPLE_CATALOG, record_example_drills, seed_target

pytest_plugins = ["tests.support.prefect_server"]
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHOT_COPY = ROOT / "out" / "prefect-ui-run.png"
WAVE_1 = ("finance-month-end-operator", "hr-case-intake-specialist")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    reset_store(url)
    with session_scope(url) as s:
        write_catalog(s, load_catalog(EXAMPLE_CATALOG), source=str(EXAMPLE_CATALOG))
    record_example_drills(url, utcnow() - timedelta(hours=1))  # HR's drill gate (signed)
    seed_target(SandboxTarget(url))
    return url


def _post(api: str, path: str, body: dict) -> list[dict]:
    r = api_request("POST", f"{api}{path}", json=body)
    r.raise_for_status()
    return r.json()


def test_wave_1_released_from_the_prefect_ui(prefect_server, wavekit_serve,
                                             approver, browser, tmp_path: Path):
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    api = prefect_server.api
    url = _store(tmp_path)
    served = wavekit_serve(url)
    approver(url, reject=("finance-month-end-operator",))

    deployment: dict = {}

    def registered() -> bool:
        if served.poll() is not None:
            raise RuntimeError(f"wavekit serve exited with {served.returncode}")
        r = httpx.get(f"{api}/deployments/name/release-wave/release-wave", timeout=5)
        if r.status_code == 200:
            deployment.update(r.json())
        return r.status_code == 200
    wait_until(registered, timeout=240, what="release-wave deployment")
    timings["served"] = time.monotonic() - t0

    shots = tmp_path / "shots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.set_default_timeout(30_000)
    n = 0

    def shot(name: str) -> Path:
        nonlocal n
        n += 1
        path = shots / f"{n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    page.goto(f"{prefect_server.url}/deployments/deployment/{deployment['id']}")
    run_button = page.get_by_role("button", name="Run", exact=True)
    run_button.wait_for()
    shot("deployment")
    run_button.click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url("**/run**")
    page.get_by_text("wave", exact=True).first.wait_for()
    shot("custom-run-form")
    wave_input = _parameter_input(page, "wave")
    wave_input.fill("")
    wave_input.fill("1")
    assert wave_input.input_value() == "1"
    assert wave_input.get_attribute("type") == "number"
    # Who requests the wave is a required field: that person can never approve it.
    requester_input = _parameter_input(page, "requested_by")
    requester_input.fill("U0RELMGR1")
    assert requester_input.input_value() == "U0RELMGR1"
    shot("wave-filled")
    page.get_by_role("button", name="Submit", exact=True).click()
    # The UI goes back to the deployment and toasts the new run.
    page.wait_for_url(f"**/deployments/deployment/{deployment['id']}**")
    page.wait_for_timeout(500)
    shot("submitted")
    timings["submitted"] = time.monotonic() - t0

    created: list[dict] = []

    def started() -> bool:
        created[:] = _post(api, "/flow_runs/filter", {"flow_runs": {
            "deployment_id": {"any_": [deployment["id"]]}}})
        return bool(created)
    wait_until(started, timeout=30, what="flow run created from the form")
    assert len(created) == 1, "only the form creates runs (no schedules are served)"
    run_id = created[0]["id"]

    run: dict = {}

    def finished() -> bool:
        run.update(httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json())
        return (run.get("state") or {}).get("type") in TERMINAL
    wait_until(finished, timeout=480, what="flow run started from the UI")
    timings["finished"] = time.monotonic() - t0

    assert run["deployment_id"] == deployment["id"]
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"]["wave"] == 1
    assert run["parameters"]["requested_by"] == "U0RELMGR1"

    # One roll-out-package run per package, started by this run and named after its package.
    # They are top-level runs (Prefect cannot suspend a subflow), of their own deployment.
    package_deployment = httpx.get(f"{api}/deployments/name/roll-out-package/roll-out-package",
                                   timeout=10).json()
    children: list[dict] = []

    def packages_done() -> bool:
        children[:] = _post(api, "/flow_runs/filter", {"flow_runs": {
            "deployment_id": {"any_": [package_deployment["id"]]}}})
        return (len(children) == len(WAVE_1)
                and all((c.get("state") or {}).get("type") in TERMINAL for c in children))
    wait_until(packages_done, timeout=480, what="package runs of the wave")
    timings["packages done"] = time.monotonic() - t0
    by_name = {c["name"]: c for c in children}
    assert set(by_name) == {f"{k} · wave 1" for k in WAVE_1}
    hr, fin = by_name["hr-case-intake-specialist · wave 1"], by_name[
        "finance-month-end-operator · wave 1"]
    assert hr["state"]["type"] == "COMPLETED", hr["state"]
    # A rejected package is held, and its run says so: not a green success.
    assert fin["state"]["type"] == "FAILED" and fin["state"]["name"] == "Held", fin["state"]
    assert "not this quarter" in fin["state"]["message"]

    with session_scope(url) as s:
        states = {k: s.get(RolePackage, k).state for k in WAVE_1}
        approvals = {a.package_key: a for a in s.exec(select(Approval))}
    assert states == {"hr-case-intake-specialist": "watching",
                      "finance-month-end-operator": "held"}
    assert set(approvals) == set(WAVE_1)
    # The store keeps the decision as approved | rejected | timeout, whatever the channel.
    assert {k: a.decision for k, a in approvals.items()} == {
        "hr-case-intake-specialist": "approved", "finance-month-end-operator": "rejected"}
    child_ids = {c["id"] for c in children}
    assert {a.flow_run_id for a in approvals.values()} <= child_ids

    artifacts = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": [
        "plan-finance-month-end-operator", "plan-hr-case-intake-specialist", "wave-1-report"]}}})
    by_key = {a["key"]: a for a in artifacts}
    assert set(by_key) == {"plan-finance-month-end-operator", "plan-hr-case-intake-specialist",
                           "wave-1-report"}
    # The plans and the wave report are published by the package runs of this wave.
    assert {a["flow_run_id"] for a in by_key.values()} <= child_ids

    page.goto(f"{prefect_server.url}/flow-runs/flow-run/{fin['id']}")
    page.get_by_text("finance-month-end-operator · wave 1").first.wait_for()
    page.get_by_text("Held", exact=True).first.wait_for()
    shot("held-run")
    page.goto(f"{prefect_server.url}/flow-runs/flow-run/{hr['id']}")
    page.get_by_text("hr-case-intake-specialist · wave 1").first.wait_for()
    page.get_by_text("Completed", exact=True).first.wait_for()
    last = shot("run-completed")
    SHOT_COPY.parent.mkdir(exist_ok=True)
    shutil.copyfile(last, SHOT_COPY)
    timings["total"] = time.monotonic() - t0
    print("timings (s from store ready):", {k: round(v, 1) for k, v in timings.items()})


def _parameter_input(page, name: str):  # type: ignore[no-untyped-def]
    """The typed input of one parameter in Prefect's run form: the first input or text area
    after its label (the form labels a parameter with its bare name, or "name (Optional)";
    a required text parameter renders as a text area)."""
    label = (f"//*[normalize-space(text())='{name}' or "
             f"normalize-space(text())='{name} (Optional)']")
    locator = page.locator(
        f"xpath=({label})[1]/following::*[self::input or self::textarea][1]")
    if locator.count() != 1:
        raise AssertionError(f"no input for parameter {name!r} on {page.url}")
    return locator

"""All packages at once measure exactly as one package at a time did (issue 16, P3).

`measure_packages` maps every event to the packages it concerns in one vectorised pass; the
oracle is the per-package implementation it replaced, frozen in
tests/support/metrics_reference.py. Results must be equal, float for float, for every
package and metric: overlapping members and entitlements, packages deployed at different
times, windows across midnight, out-of-band changes by several actors, suspended grants,
a target missing grants and holding extra ones, and feeds that are silent or too short.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.support import metrics_reference as reference
from wavekit.domain.frames import TelemetryFrames
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.metrics import (
    METRICS,
    PackageWindow,
    grant_frame,
    implicated,
    measure_package,
    measure_packages,
)
from wavekit.domain.packages import PackageView
from wavekit.examples.synth_telemetry import generate_telemetry, synthetic_packages

D0 = datetime(2026, 4, 8, 9, 30, tzinfo=UTC)
DAYS = 28 + 5  # telemetry from 28 days before D0 to 5 days after
AS_OF = D0 + timedelta(days=4, hours=16)  # windows cross midnight (UTC)
ADMIN = "global-admin"


def _packages() -> list[PackageView]:
    """Synthetic packages, then reshaped so they share members and entitlements."""
    base = synthetic_packages(7, members=40, entitlements=5, prefix="eq")
    m = [sorted(p.members) for p in base]
    e = [sorted(p.entitlements) for p in base]
    return [
        base[0],
        replace(base[1], members=frozenset(m[1] + m[0][:15]),
                entitlements=frozenset(e[1] + e[0][:1])),
        replace(base[2], members=frozenset(m[2] + m[1][:10] + m[0][10:20]),
                entitlements=frozenset(e[2] + e[1][2:4])),
        replace(base[3], members=frozenset()),  # nobody granted yet
        replace(base[4], entitlements=frozenset()),  # grants nothing
        replace(base[5], members=frozenset(m[5][:1])),  # too few member-days for a baseline
        base[6],
        replace(base[5], key="eq-0007", members=frozenset(m[5][1:2])),  # 5 days: just enough
    ]


PACKAGES = _packages()
PRIVILEGED = frozenset({ADMIN, sorted(PACKAGES[2].entitlements)[0]})
DEPLOYS = [D0, D0 + timedelta(hours=5), D0 - timedelta(days=2, hours=3), D0,
           D0 + timedelta(days=1), D0, D0 + timedelta(minutes=30), D0]  # one per package


def _telemetry() -> dict[str, pd.DataFrame]:
    frames = generate_telemetry(synthetic_packages(7, members=40, entitlements=5, prefix="eq"),
                                start=D0 - timedelta(days=28), deployed_at=D0, days=DAYS,
                                degrading="eq-0006", anomaly="eq-0001", seed=11,
                                privileged=[ADMIN])
    rng = np.random.default_rng(7)
    members = sorted(set().union(*(p.members for p in PACKAGES)))
    ents = sorted(set().union(*(p.entitlements for p in PACKAGES)) | {ADMIN, "unrelated"})
    n = 400
    # Out-of-band adds and removes by several actors (" WaveKit " is wavekit), before the
    # deploy and after it, to members and to people outside every package.
    people = members + [f"outsider-{i}" for i in range(20)]
    oob = pd.DataFrame({
        "identity": rng.choice(people, n),
        "entitlement": rng.choice(ents, n),
        "action": rng.choice(["add", "add", "remove"], n),
        "at": [pd.Timestamp(D0) + pd.Timedelta(hours=float(h))
               for h in rng.uniform(-24 * 10, 24 * 5, n)],
        "actor": rng.choice(["it-helpdesk", " WaveKit ", "wavekit-bot", "IT-Helpdesk"], n),
    })
    # The same grant added twice in the window: counted once.
    twice = oob.iloc[:2].assign(identity=members[0], entitlement=ADMIN, action="add",
                                actor="it-helpdesk",
                                at=[pd.Timestamp(AS_OF) - pd.Timedelta(hours=h)
                                    for h in (3, 4)])
    # Events exactly on the windows' edges (deploys, window starts and ends, baseline starts):
    # windows are half-open.
    edges = sorted({t + back for t in (*DEPLOYS, AS_OF, AS_OF - timedelta(days=1),
                                       AS_OF - timedelta(days=2), D0 + timedelta(days=4, hours=11))
                    for back in (timedelta(0), -timedelta(days=28), -timedelta(days=20))})
    on_edge = [(p, sorted(p.members)[0], sorted(p.entitlements)[0], pd.Timestamp(t))
               for p in PACKAGES if p.members and p.entitlements for t in edges]
    edge = {
        "usage": [(m, e, t) for _, m, e, t in on_edge],
        "tickets": [(p.key, t, "how-to") for p, _, _, t in on_edge],
        "exceptions": [(p.key, m, t, "sod-waiver") for p, m, _, t in on_edge],
        "exports": [(m, t, 150.0) for _, m, _, t in on_edge],
        "assignments": [(who, e, "add", t, "it-helpdesk") for p, m, e, t in on_edge
                        for who, e in ((m, ADMIN), (f"outsider-{p.key}", e))],
    }
    for kind, rows in edge.items():
        frames[kind] = pd.concat([frames[kind], pd.DataFrame(rows, columns=list(
            frames[kind].columns))], ignore_index=True)
    frames["assignments"] = pd.concat([frames["assignments"], oob, twice], ignore_index=True)
    # Usage of entitlements by people who are not members of the package that grants them.
    extra = pd.DataFrame({"identity": rng.choice(people, n), "entitlement": rng.choice(ents, n),
                          "at": [pd.Timestamp(D0) + pd.Timedelta(hours=float(h))
                                 for h in rng.uniform(0, 24 * 5, n)]})
    frames["usage"] = pd.concat([frames["usage"], extra], ignore_index=True)
    # Shared members' exports spread over midnight; one member-day split across two rows.
    ex = frames["exports"]
    for p, keep in ((PACKAGES[5], 3), (PACKAGES[7], 5)):  # member-days before the deploy
        lone = sorted(p.members)[0]
        before = ((ex["identity"] == lone) & (ex["at"] < pd.Timestamp(D0))
                  & (ex["at"] >= pd.Timestamp(D0 - timedelta(days=28))))
        day = ex["at"].dt.floor("D")
        kept = day[before].drop_duplicates().sort_values().iloc[:keep]
        ex = ex[~before | day.isin(kept)]
    frames["exports"] = pd.concat([ex, ex.iloc[::7].assign(
        at=lambda d: d["at"] + pd.Timedelta(minutes=1), volume=lambda d: d["volume"] / 3)],
        ignore_index=True)
    return frames


TELEMETRY = _telemetry()


def _frames(variant: str) -> TelemetryFrames:
    t = {k: v.copy() for k, v in TELEMETRY.items()}
    if variant == "short-exports":  # the export feed started 10 days before the deploy
        t["exports"] = t["exports"][t["exports"]["at"] >= pd.Timestamp(D0 - timedelta(days=10))]
    if variant == "silent-tickets":  # no ticket since yesterday: silent, not quiet
        t["tickets"] = t["tickets"][t["tickets"]["at"] < pd.Timestamp(AS_OF - timedelta(days=2))]
    if variant == "short-baseline":  # 20 days of tickets and exceptions: rates over 20 days
        for kind in ("tickets", "exceptions"):
            t[kind] = t[kind][t[kind]["at"] >= pd.Timestamp(D0 - timedelta(days=20))]
    return TelemetryFrames.build(privileged=PRIVILEGED, **t)


def _target() -> GrantSet:
    """Intended grants with some missing, plus out-of-band and unrelated ones held."""
    rng = np.random.default_rng(3)
    intended = sorted({Grant(m, e) for p in PACKAGES for m in p.members
                       for e in p.entitlements})
    keep = rng.random(len(intended)) > 0.05
    held = {g for g, k in zip(intended, keep, strict=True) if k}
    adds = TELEMETRY["assignments"]
    oob = adds[(adds["actor"] != "wavekit") & (adds["action"] == "add")]
    held |= {Grant(i, e) for i, e in zip(oob["identity"], oob["entitlement"], strict=True)
             if rng.random() < 0.6}
    held |= {Grant(f"outsider-{i}", "unrelated") for i in range(5)}
    return frozenset(held)


TARGET = _target()


def _windows() -> list[PackageWindow]:
    """Each package with its own deploy time and window; the first package twice."""
    intended = [(m, e) for m in sorted(PACKAGES[1].members)
                for e in sorted(PACKAGES[1].entitlements)]
    suspended = frozenset(Grant(*g) for g in intended[::9])  # held back by containment
    out = [PackageWindow(p, d, AS_OF - timedelta(days=1), AS_OF,
                         suspended if p is PACKAGES[1] else frozenset())
           for p, d in zip(PACKAGES, DEPLOYS, strict=True)]
    out.append(PackageWindow(PACKAGES[0], D0 + timedelta(days=4, hours=10),
                             D0 + timedelta(days=4, hours=11), AS_OF))  # a one-hour-old deploy
    out.append(PackageWindow(PACKAGES[2], D0, AS_OF, AS_OF))  # an empty window
    out.append(PackageWindow(PACKAGES[6], D0, D0 - timedelta(days=1),
                             AS_OF - timedelta(days=2)))  # earlier as_of, since before deploy
    return out


def _scope(grants: GrantSet, package: PackageView) -> GrantSet:
    return frozenset(g for g in grants if g.entitlement in package.scope)


def _expected(frames: TelemetryFrames, w: PackageWindow, grants: GrantSet,
              **kw: object) -> dict[str, float | None]:
    return reference.measure_package(frames, w.package, deployed_at=w.deployed_at,
                                     since=w.since, as_of=w.as_of, target_grants=grants,
                                     suspended=w.suspended, **kw)


VARIANTS = ["full", "short-exports", "silent-tickets", "short-baseline"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_packages_at_once_equal_one_at_a_time(variant: str) -> None:
    frames = _frames(variant)
    windows = _windows()
    got = measure_packages(frames, windows, grant_frame(TARGET))
    assert len(got) == len(windows)
    for w, m in zip(windows, got, strict=True):
        want = _expected(frames, w, _scope(TARGET, w.package))
        assert list(m) == list(METRICS)
        assert m == want, (variant, w.package.key, w.deployed_at, m, want)
    # Not vacuous: the cases the telemetry was shaped for are there.
    values = {(w.package.key, w.deployed_at): m for w, m in zip(windows, got, strict=True)}
    first = values[("eq-0000", D0)]
    assert first["escalation_anomaly"] is not None and first["access_drift"] is not None
    assert values[("eq-0003", D0)]["adoption"] is None  # no members
    assert values[("eq-0004", D0 + timedelta(days=1))]["access_drift"] is None  # grants none
    if variant == "full":
        assert all(v is not None for v in first.values())
        assert values[("eq-0001", D0 + timedelta(hours=5))]["export_anomaly"] > 6
        assert values[("eq-0006", D0 + timedelta(minutes=30))]["ticket_noise"] > 2
        assert values[("eq-0005", D0)]["export_anomaly"] is None  # 3 member-days: no baseline
        assert values[("eq-0007", D0)]["export_anomaly"] is not None  # 5: a baseline
        assert any(m["escalation_anomaly"] for m in got)
        assert any((m["access_drift"] or 0) > 0 for m in got)
    if variant == "short-exports":
        # 10 days of exports before D0: a baseline only for the deploy 4 days later
        assert all((m["export_anomaly"] is None) == (w.deployed_at < D0 + timedelta(days=4))
                   for w, m in zip(windows, got, strict=True) if w.since < w.as_of)
    if variant == "silent-tickets":
        assert all(m["ticket_noise"] is None for w, m in zip(windows, got, strict=True)
                   if w.as_of == AS_OF)


@pytest.mark.parametrize("variant", ["full", "short-baseline"])
def test_each_package_may_bring_its_own_target_grants(variant: str) -> None:
    frames = _frames(variant)
    windows = _windows()
    rng = np.random.default_rng(5)
    own = [frozenset(g for g in _scope(TARGET, w.package) if rng.random() > 0.1)
           for w in windows]
    target = pd.concat([grant_frame(g).assign(package=w.package.key)
                        for w, g in zip(windows, own, strict=True)], ignore_index=True)
    # A package named twice (eq-0000 above) reads the grants listed for either entry.
    merged = {w.package.key: frozenset[Grant]() for w in windows}
    for w, g in zip(windows, own, strict=True):
        merged[w.package.key] |= g
    got = measure_packages(frames, windows, target)
    for w, m in zip(windows, got, strict=True):
        assert m == _expected(frames, w, merged[w.package.key]), (w.package.key, m)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_package_alone_is_the_batch_of_one(variant: str) -> None:
    frames = _frames(variant)
    for w in _windows():
        grants = _scope(TARGET, w.package)
        kw = {"deployed_at": w.deployed_at, "since": w.since, "as_of": w.as_of,
              "target_grants": grants, "suspended": w.suspended}
        assert measure_package(frames, w.package, **kw) == _expected(frames, w, grants)
        # The whole target, not the package's scope of it: the same (it reads its own).
        assert measure_package(frames, w.package, **{**kw, "target_grants": TARGET}) == \
            _expected(frames, w, grants)
        # From wavekit's record of the target, out-of-band changes replayed onto it.
        planned = frozenset(Grant(m, e) for m in w.package.members
                            for e in w.package.entitlements)
        assert measure_package(frames, w.package, **{**kw, "target_grants": planned},
                               from_history=True, privileged={ADMIN}) == \
            _expected(frames, w, planned, from_history=True, privileged={ADMIN})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("metric", ["export_anomaly", "escalation_anomaly", "adoption"])
def test_implicated_members_are_the_same(variant: str, metric: str) -> None:
    frames = _frames(variant)
    named = 0
    for w in _windows():
        for threshold in (0.0, 1.5, 6.0):
            kw = {"deployed_at": w.deployed_at, "since": w.since, "as_of": w.as_of,
                  "threshold": threshold}
            got = implicated(frames, w.package, metric, **kw)
            assert got == reference.implicated(frames, w.package, metric, **kw)
            named += len(got)
    if metric != "adoption" and variant == "full":
        assert named  # someone was named


def test_an_empty_batch_measures_nothing() -> None:
    assert measure_packages(_frames("full"), [], grant_frame(TARGET)) == []

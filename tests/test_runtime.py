"""The runtime is wired once per run and closes what it opened; overrides stay in context."""

from __future__ import annotations

import threading
from pathlib import Path

from wavekit.adapters.settings import load_settings
from wavekit.adapters.targets.base import Target
from wavekit.adapters.targets.drill import ReadOnlyTarget
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.workflow.runtime import build_runtime, current_runtime, runtime_override


class Closing(SandboxTarget):
    closed = 0

    def close(self) -> None:
        type(self).closed += 1


def test_a_runtime_closes_the_target_it_built_and_not_one_it_was_given(tmp_path: Path,
                                                                      monkeypatch) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'w.db'}")
    given = Closing(settings.resolved_database_url())
    with build_runtime(settings, target=given) as rt:
        assert rt.target is given
    assert Closing.closed == 0  # the caller's target outlives the run
    monkeypatch.setattr("wavekit.workflow.runtime.build_target",
                        lambda s, kind=None: Closing(s.resolved_database_url()))
    with build_runtime(settings) as rt:
        assert rt.owns_target
    assert Closing.closed == 1


def test_every_target_closes_at_the_end_of_its_with_block(tmp_path: Path) -> None:
    from tests.support.fault_targets import Wrapped
    from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget
    from wavekit.adapters.targets.scim import ScimConfig, ScimTarget

    # Nothing connects until a call: building and closing needs no server.
    for kind in (LdapTarget(LdapConfig(url="ldap://127.0.0.1:1", bind_dn="cn=x",
                                           password="x", base_dn="dc=x")),
                 ScimTarget(ScimConfig(base_url="http://127.0.0.1:1/scim/v2"))):
        with kind as opened:
            assert opened is kind and isinstance(opened, Target)
    inner = Closing(f"sqlite:///{tmp_path / 'w.db'}")
    before = Closing.closed
    for target in (inner, Wrapped(inner)):
        with target as opened:
            assert opened is target and isinstance(opened, Target)
    assert Closing.closed == before + 2
    with ReadOnlyTarget(inner):  # production belongs to the runtime: a drill leaves it open
        pass
    assert Closing.closed == before + 2


def test_an_override_applies_in_its_context_only(tmp_path: Path, monkeypatch) -> None:
    # Without an override a runtime is built from the environment: keep it in tmp_path, not
    # in whatever store ~/.wavekit holds on this machine.
    monkeypatch.setenv("WAVEKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WAVEKIT_DATABASE_URL", raising=False)
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'w.db'}")
    marked = build_runtime(settings)
    seen: list[bool] = []
    with runtime_override(lambda: marked):
        assert current_runtime() is marked
        other = threading.Thread(target=lambda: seen.append(current_runtime() is marked))
        other.start()
        other.join()
    assert seen == [False]  # a thread that was not handed the context builds its own
    assert current_runtime() is not marked


def test_every_flow_run_closes_the_target_it_opened(tmp_path: Path, monkeypatch) -> None:
    # Each flow builds its runtime (and so its target connection) per run: a wave's package
    # runs, rollbacks, watch ticks and the nightly run must each close theirs, or a
    # long-lived worker leaks a connection per run.
    import ast

    from wavekit.project import project_dir

    opened_without_with = []
    for path in sorted((project_dir() / "flows").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "current_runtime"):
                parents = [w for w in ast.walk(tree) if isinstance(w, ast.With)
                           and any(item.context_expr is node for item in w.items)]
                if not parents:
                    opened_without_with.append(f"{path.name}:{node.lineno}")
    assert opened_without_with == []

"""A real SCIM 2.0 server (scim2-server, in memory) on a loopback port, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import missing_server
from wavekit.adapters.targets.scim import ScimConfig, ScimTarget, provision_scim_directory
from wavekit.devservers.scim import ScimServerUnavailable, fresh_tenant, run_local_scim_server

CONTRACT_USERS = [f"u{i:02d}" for i in range(1, 31)]
CONTRACT_GROUPS = ["ent-a", "ent-b", "ent-c", "ent-d"]


def people(ids: list[str]) -> list[dict[str, str]]:
    """Identity rows as the catalog carries them."""
    return [{"id": i, "display_name": f"User {i}", "email": f"{i}@example.com"} for i in ids]


@pytest.fixture(scope="session")
def scim_server() -> Iterator[ScimConfig]:
    """Config (URL and bearer token) of a scim2-server started once per test session."""
    try:
        with run_local_scim_server() as config:
            yield config
    except ScimServerUnavailable as exc:  # raised only while starting, before the yield
        missing_server(str(exc))


@pytest.fixture
def scim_directory(scim_server: ScimConfig) -> ScimConfig:
    """An empty directory: a new tenant of the session's server, cheaper than deleting."""
    return fresh_tenant(scim_server)


@pytest.fixture
def scim_contract_target(scim_directory: ScimConfig) -> Iterator[ScimTarget]:
    """A ScimTarget whose directory holds users u01..u30 and empty groups ent-a..ent-d."""
    target = ScimTarget(scim_directory)
    provision_scim_directory(target, people(CONTRACT_USERS), CONTRACT_GROUPS)
    yield target
    target.close()

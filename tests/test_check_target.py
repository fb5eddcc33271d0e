"""`wavekit check-target` against the real slapd and scim2-server, as a CLI subprocess.

LDAP three ways: the root DN (works, warned), a least-privileged service account (write
`member` under the group base, read users: works, no warning), a read-only account (fails on
the member write). SCIM: the dev server's token reads Users and PATCHes Groups, and is warned
about because it may also create and delete users. Nothing on the target changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.slapd import clear_subtree, people, raw_members, start_slapd
from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget, provision_ldap_directory
from wavekit.devservers.slapd import LocalSlapd
from wavekit.domain.grants import Grant

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BASE = "dc=wavekit,dc=test"
SVC = f"uid=wavekit-svc,ou=services,{BASE}"
READER = f"uid=wavekit-reader,ou=services,{BASE}"
ACL = (f'access to dn.subtree="ou=groups,{BASE}" attrs=member by dn.exact="{SVC}" write '
       "by users read",
       "access to attrs=userPassword by anonymous auth by * none",
       "access to * by users read by anonymous auth")


def _cli(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
            "COLUMNS": "250", "WAVEKIT_DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "wavekit.present.cli", "check-target"],
                          env=full, capture_output=True, text=True, timeout=120)


def _ldap_env(config: LdapConfig, bind_dn: str, password: str) -> dict[str, str]:
    return {"WAVEKIT_TARGET": "ldap", "WAVEKIT_LDAP_URL": config.url,
            "WAVEKIT_LDAP_BIND_DN": bind_dn, "WAVEKIT_LDAP_PASSWORD": password,
            "WAVEKIT_LDAP_BASE_DN": config.base_dn}


@pytest.fixture(scope="module")
def acl_slapd() -> Iterator[LocalSlapd]:
    """A slapd whose ACLs give the service account exactly what wavekit needs."""
    server = start_slapd(access=ACL)
    try:
        config = server.config
        provision_ldap_directory(config, people(["u01", "u02"]), ["ent-a"])
        target = LdapTarget(config)
        try:
            target.apply([Grant("u01", "ent-a")], [])
            target.add_entry(f"ou=services,{BASE}", ["organizationalUnit"], {"ou": "services"})
            for dn, pw in ((SVC, "svc-pw-1"), (READER, "reader-pw-1")):
                uid = dn.split(",")[0].split("=")[1]
                target.add_entry(dn, ["account", "simpleSecurityObject"],
                                 {"uid": uid, "userPassword": pw})
        finally:
            target.close()
        yield server
    finally:
        server.remove()


def test_a_root_bind_works_and_is_warned_about(slapd_server: LocalSlapd,
                                               tmp_path: Path) -> None:
    config = slapd_server.config
    for base in (config.group_base, config.user_base):
        clear_subtree(config, base)
    provision_ldap_directory(config, people(["u01"]), ["ent-a"])
    target = LdapTarget(config)
    target.apply([Grant("u01", "ent-a")], [])
    target.close()
    before = raw_members(config, "ent-a")
    done = _cli(_ldap_env(config, config.bind_dn, config.password), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "write member" in done.stdout and "FAIL" not in done.stdout
    assert "WARN" in done.stdout and "directory administrator" in done.stdout
    assert config.password not in done.stdout + done.stderr
    assert raw_members(config, "ent-a") == before  # the write test changed nothing


def test_a_least_privileged_service_account_passes_without_warnings(acl_slapd: LocalSlapd,
                                                                    tmp_path: Path) -> None:
    done = _cli(_ldap_env(acl_slapd.config, SVC, "svc-pw-1"), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARN" not in done.stdout and "FAIL" not in done.stdout, done.stdout
    assert "read users" in done.stdout and "back unchanged" in done.stdout


def test_a_read_only_account_fails_on_the_member_write(acl_slapd: LocalSlapd,
                                                       tmp_path: Path) -> None:
    done = _cli(_ldap_env(acl_slapd.config, READER, "reader-pw-1"), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout and "insufficient access" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_scim_reads_users_patches_groups_and_warns_about_user_writes(scim_contract_target: Any,
                                                                     tmp_path: Path) -> None:
    config = scim_contract_target.config
    before = scim_contract_target.read_grants(["ent-a", "ent-b"])
    done = _cli({"WAVEKIT_TARGET": "scim", "WAVEKIT_SCIM_URL": config.base_url,
                 "WAVEKIT_SCIM_TOKEN": config.token.get_secret_value()}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("read users", "read groups", "patch groups"):
        assert check in done.stdout
    assert "may create users" in done.stdout
    assert config.token.get_secret_value() not in done.stdout + done.stderr
    assert scim_contract_target.read_grants(["ent-a", "ent-b"]) == before

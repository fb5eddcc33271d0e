"""The LDAP target against a real OpenLDAP slapd on loopback."""

from __future__ import annotations

import shutil
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from ldap3 import MODIFY_ADD, Connection
from ldap3.core.exceptions import LDAPBusyResult

from tests.support.servers import missing_server
from tests.support.slapd import (
    CONTRACT_USERS,
    clear_subtree,
    people,
    raw_members,
    self_signed_tls,
    start_slapd,
)
from wavekit.adapters.targets.base import Target, TargetError
from wavekit.adapters.targets.ldap import (
    LdapConfig,
    LdapConfigError,
    LdapTarget,
    build_connection,
    provision_ldap_directory,
)
from wavekit.adapters.targets.resilience import RetryPolicy
from wavekit.devservers.slapd import LocalSlapd, run_local_slapd
from wavekit.domain.grants import Grant, grant_set

BULK_USERS = [f"b{i:04d}" for i in range(1, 1201)]
BULK_GROUPS = ["bulk-a", "bulk-b", "bulk-c", "bulk-big"]
MANY_GROUPS = [f"g-{i:03d}" for i in range(250)]


class CountingTarget(LdapTarget):
    """An LdapTarget that counts the requests its ldap3 connections really send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: Counter[str] = Counter()

    def _connect(self) -> Connection:
        conn = super()._connect()
        self.sent["bind"] += 1
        for op in ("search", "modify", "add"):
            def counted(*args: Any, _op: str = op, _send: Any = getattr(conn, op),
                        **kwargs: Any) -> Any:
                self.sent[_op] += 1
                return _send(*args, **kwargs)
            setattr(conn, op, counted)
        return conn


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self) -> None:
        self.acquired += 1


class Sleeps(list[float]):
    """An injected sleep: records the delays instead of waiting, optionally acts on them."""

    def __init__(self, action: Any = None) -> None:
        super().__init__()
        self.action = action

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.action:
            self.action()


@pytest.fixture(scope="module")
def bulk_config(slapd_server: LocalSlapd) -> LdapConfig:
    """1,200 users, a few groups and 250 small groups in OUs of their own, page size 100."""
    base = slapd_server.config.base_dn
    config = replace(slapd_server.config, user_base=f"ou=bulk-people,{base}",
                     group_base=f"ou=bulk-groups,{base}", page_size=100)
    provision_ldap_directory(config, people(BULK_USERS), BULK_GROUPS + MANY_GROUPS)
    return config


@pytest.fixture
def bulk(bulk_config: LdapConfig) -> Iterator[CountingTarget]:
    """A counting target over the bulk tree, its groups emptied first."""
    target = CountingTarget(bulk_config)
    target.apply([], target.read_grants(BULK_GROUPS + MANY_GROUPS), batch_size=5000)
    target.sent.clear()
    yield target
    target.close()


@pytest.fixture
def directory(ldap_contract_target: LdapTarget) -> Iterator[CountingTarget]:
    """A counting target over the contract tree: u01..u30, empty ent-a..ent-d."""
    target = CountingTarget(ldap_contract_target.config)
    yield target
    target.close()


def test_ldap_target_is_a_target(directory: CountingTarget) -> None:
    assert isinstance(directory, Target)
    assert directory.name.startswith("ldap:127.0.0.1:")


def test_thousand_adds_to_one_group_is_one_modify(bulk: CountingTarget) -> None:
    grants = grant_set((u, "bulk-big") for u in BULK_USERS[:1000])
    result = bulk.apply(grants, [], batch_size=1000)
    assert (result.added, len(result.batches)) == (1000, 1)
    assert bulk.sent["modify"] == 1
    assert len(raw_members(bulk.config, "bulk-big")) == 1000

    again = bulk.apply(grants, [], batch_size=1000)
    assert again.changed == 0 and again.unchanged == 1000
    assert bulk.sent["modify"] == 1  # nothing to change, nothing sent


def test_each_batch_sends_one_modify_per_group(directory: CountingTarget) -> None:
    adds = grant_set((u, e) for u in CONTRACT_USERS[:10] for e in ("ent-a", "ent-b", "ent-c"))
    directory.apply(adds, [], batch_size=30)  # one batch, three groups
    assert directory.sent["modify"] == 3
    removes = grant_set((u, e) for u in CONTRACT_USERS[:4] for e in ("ent-a", "ent-b"))
    result = directory.apply(adds, removes, batch_size=30)
    # The re-sent adds change nothing; the removes are one modify for each of two groups.
    assert (result.added, result.removed) == (0, 8)
    assert directory.sent["modify"] == 5
    assert directory.read_grants(["ent-a", "ent-b", "ent-c"]) == adds - removes


def test_empty_group_keeps_placeholder_only_while_empty(directory: CountingTarget) -> None:
    config = directory.config
    placeholder = config.empty_group_placeholder
    assert raw_members(config, "ent-a") == [placeholder]  # provisioned empty

    both = grant_set([("u01", "ent-a"), ("u02", "ent-a")])
    assert directory.apply(both, []).added == 2
    assert raw_members(config, "ent-a") == [f"uid=u01,{config.user_base}",
                                            f"uid=u02,{config.user_base}"]

    sent = directory.sent["modify"]
    result = directory.apply([], both)
    assert result.removed == 2 and directory.sent["modify"] == sent + 1
    assert raw_members(config, "ent-a") == [placeholder]
    assert directory.read_grants(["ent-a"]) == frozenset()  # the placeholder is no grant

    directory.apply([Grant("u03", "ent-a")], [])
    assert raw_members(config, "ent-a") == [f"uid=u03,{config.user_base}"]


def test_group_of_unique_names(slapd_server: LocalSlapd) -> None:
    base = slapd_server.config.base_dn
    config = replace(slapd_server.config, group_object_class="groupOfUniqueNames",
                     group_base=f"ou=unique-groups,{base}")
    assert config.member_attribute == "uniqueMember"
    clear_subtree(config, config.group_base)
    target = LdapTarget(config)
    try:
        provision_ldap_directory(target, people(CONTRACT_USERS), ["uniq-a", "uniq-b"])
        grants = grant_set((u, g) for u in CONTRACT_USERS[:5] for g in ("uniq-a", "uniq-b"))
        assert target.apply(grants, [], batch_size=3).added == 10
        assert target.read_grants(["uniq-a", "uniq-b"]) == grants
        assert raw_members(config, "uniq-a") == sorted(
            f"uid={u},{config.user_base}" for u in CONTRACT_USERS[:5])
        assert target.apply([], grants).removed == 10
        assert raw_members(config, "uniq-a") == [config.empty_group_placeholder]
        assert target.read_grants(["uniq-a", "uniq-b"]) == frozenset()
    finally:
        target.close()


def test_paged_reads_of_1200_users_across_three_groups(bulk: CountingTarget) -> None:
    grants = grant_set([(u, "bulk-a") for u in BULK_USERS]
                       + [(u, "bulk-b") for u in BULK_USERS[::2]]
                       + [(u, "bulk-c") for u in BULK_USERS[::4]])
    # Resolving 1,200 uids with page size 100 only succeeds if every page is followed.
    assert bulk.apply(grants, [], batch_size=2000).added == 2100
    fresh = LdapTarget(bulk.config)  # no cached DNs: everything comes from the directory
    try:
        assert fresh.read_grants(["bulk-a", "bulk-b", "bulk-c"]) == grants
    finally:
        fresh.close()


def test_reading_many_groups_follows_every_page(bulk: CountingTarget) -> None:
    grants = grant_set((BULK_USERS[i], g) for i, g in enumerate(MANY_GROUPS))
    bulk.apply(grants, [], batch_size=1000)
    before = bulk.sent["search"]
    assert bulk.read_grants(MANY_GROUPS) == grants  # 250 groups, 100 per page
    assert bulk.sent["search"] - before >= 3


def test_unknown_identity_or_group_fails_before_writing(directory: CountingTarget) -> None:
    adds = grant_set([("u01", "ent-a"), ("ghost", "ent-a"), ("u02", "ent-b"),
                      ("u03", "no-such-group")])
    with pytest.raises(TargetError) as failure:
        directory.apply(adds, [], batch_size=100)
    assert "ghost" in str(failure.value) and "no-such-group" in str(failure.value)
    assert directory.sent["modify"] == 0
    assert directory.read_grants(["ent-a", "ent-b"]) == frozenset()

    with pytest.raises(TargetError, match="phantom"):
        directory.apply([], [Grant("phantom", "ent-a")])


def test_removing_a_deleted_users_dangling_membership(directory: CountingTarget) -> None:
    directory.apply([Grant("u05", "ent-a"), Grant("u06", "ent-a")], [])
    conn = build_connection(directory.config)
    conn.open()
    conn.bind()
    conn.delete(f"uid=u05,{directory.config.user_base}")  # OpenLDAP keeps the member value
    conn.unbind()
    fresh = LdapTarget(directory.config)
    try:
        assert fresh.read_grants(["ent-a"]) == grant_set([("u05", "ent-a"), ("u06", "ent-a")])
        assert fresh.apply([], [Grant("u05", "ent-a")]).removed == 1
        assert fresh.read_grants(["ent-a"]) == {Grant("u06", "ent-a")}
    finally:
        fresh.close()


def test_identities_given_as_dns(directory: CountingTarget) -> None:
    config = directory.config
    service = f"cn=svc-backup,ou=services,{config.base_dn}"
    directory.add_entry(f"ou=services,{config.base_dn}", ["organizationalUnit"],
                        {"ou": "services"})
    directory.add_entry(service, ["organizationalRole"], {"cn": "svc-backup"})
    adds = grant_set([(service, "ent-a"), (f"uid=u07,{config.user_base}", "ent-a")])
    assert directory.apply(adds, []).added == 2
    # An entry without a uid is named by its DN; a user by its uid, however it was given.
    assert directory.read_grants(["ent-a"]) == grant_set([(service, "ent-a"), ("u07", "ent-a")])
    assert directory.apply([], [Grant(service, "ent-a")]).removed == 1
    with pytest.raises(TargetError, match="svc-missing"):
        directory.apply([Grant(f"cn=svc-missing,ou=services,{config.base_dn}", "ent-a")], [])
    clear_subtree(config, f"ou=services,{config.base_dn}")


def test_a_group_changed_between_read_and_write_is_diffed_again(
        directory: CountingTarget) -> None:
    config = directory.config

    class Raced(CountingTarget):
        raced = False

        def _modify(self, dn: str, changes: dict[str, Any]) -> bool:
            if not self.raced:  # another admin adds u01 right before our modify lands
                self.raced = True
                conn = build_connection(config)
                conn.open()
                conn.bind()
                conn.modify(dn, {config.member_attribute: [
                    (MODIFY_ADD, [f"uid=u01,{config.user_base}"])]})
                conn.unbind()
            return super()._modify(dn, changes)

    target = Raced(config)
    try:
        result = target.apply(grant_set([("u01", "ent-a"), ("u02", "ent-a")]), [])
        assert (result.added, result.unchanged) == (1, 1)
        assert target.sent["modify"] == 2  # refused with 20, re-read, sent again
        assert target.read_grants(["ent-a"]) == grant_set([("u01", "ent-a"), ("u02", "ent-a")])
    finally:
        target.close()


def test_reconnects_after_slapd_restarts(tmp_path: Path) -> None:
    server = start_slapd()
    try:
        sleeps = Sleeps(action=server.start)  # the "wait" is when the server comes back
        target = LdapTarget(server.config, retry=RetryPolicy(attempts=3, sleep=sleeps))
        provision_ldap_directory(target, people(["r1", "r2"]), ["grp"])
        server.stop()  # the target's open connection dies with it
        result = target.apply([Grant("r1", "grp"), Grant("r2", "grp")], [])
        assert result.added == 2
        assert len(sleeps) == 1
        assert target.read_grants(["grp"]) == grant_set([("r1", "grp"), ("r2", "grp")])
        target.close()
    finally:
        server.remove()


def test_run_local_slapd_serves_then_cleans_up() -> None:
    if not shutil.which("slapd") and not Path("/usr/sbin/slapd").exists():
        missing_server("slapd is not installed")
    with run_local_slapd() as config:
        target = LdapTarget(config, retry=RetryPolicy(attempts=1))
        assert provision_ldap_directory(target, people(["x1"]), ["grp"]) == {
            "users": 1, "groups": 1}
        assert target.apply([Grant("x1", "grp")], []).added == 1
        target.close()
    with pytest.raises(TargetError):
        target.read_grants(["grp"])  # the server is gone


def test_gives_up_with_target_error_when_slapd_stays_down() -> None:
    server = start_slapd()
    try:
        sleeps = Sleeps()
        target = LdapTarget(server.config, retry=RetryPolicy(attempts=3, sleep=sleeps))
        server.stop()
        with pytest.raises(TargetError, match="gave up after 3 attempts"):
            target.read_grants(["grp"])
        assert len(sleeps) == 2
    finally:
        server.remove()


def test_busy_server_is_retried(directory: CountingTarget) -> None:
    class BusyOnce(LdapTarget):
        busy = True

        def _connect(self) -> Connection:
            conn = super()._connect()
            send = conn.modify

            def modify(*args: Any, **kwargs: Any) -> Any:
                if self.busy:
                    self.busy = False
                    raise LDAPBusyResult(result=51, description="busy", message="try later")
                return send(*args, **kwargs)
            conn.modify = modify  # type: ignore[method-assign]
            return conn

    sleeps = Sleeps()
    target = BusyOnce(directory.config, retry=RetryPolicy(sleep=sleeps))
    try:
        assert target.apply([Grant("u01", "ent-a")], []).added == 1
        assert len(sleeps) == 1
    finally:
        target.close()


def test_refusal_is_a_target_error_with_the_servers_reason(directory: CountingTarget) -> None:
    sleeps = Sleeps()
    wrong = replace(directory.config, password="not-the-password")
    target = LdapTarget(wrong, retry=RetryPolicy(sleep=sleeps))
    with pytest.raises(TargetError, match="invalidCredentials") as failure:
        target.read_grants(["ent-a"])
    assert sleeps == []  # a wrong password is not retried
    assert "not-the-password" not in str(failure.value)


def test_rate_limiter_is_asked_before_every_request(directory: CountingTarget) -> None:
    limiter = CountingLimiter()
    target = CountingTarget(directory.config, rate_limiter=limiter)
    try:
        target.apply(grant_set((u, "ent-a") for u in CONTRACT_USERS[:6]), [], batch_size=2)
        target.read_grants(["ent-a"])
        assert limiter.acquired == sum(target.sent.values()) > 0
    finally:
        target.close()


def test_password_never_printed() -> None:
    config = LdapConfig(url="ldap://dir.example:389", bind_dn="cn=admin,dc=example",
                        password="s3cret-pw", base_dn="dc=example")
    target = LdapTarget(config)
    for text in (repr(config), str(config), repr(target), str(target)):
        assert "s3cret-pw" not in text
    assert config.group_base == "ou=groups,dc=example"


def test_config_from_env_names_what_is_missing() -> None:
    with pytest.raises(LdapConfigError, match=r"WAVEKIT_LDAP_BIND_DN.*WAVEKIT_LDAP_PASSWORD"):
        LdapConfig.from_env({"WAVEKIT_LDAP_URL": "ldap://x", "WAVEKIT_LDAP_BASE_DN": "dc=x"})
    config = LdapConfig.from_env({
        "WAVEKIT_LDAP_URL": "ldap://dir.example:1389", "WAVEKIT_LDAP_BIND_DN": "cn=admin,dc=x",
        "WAVEKIT_LDAP_PASSWORD": "pw", "WAVEKIT_LDAP_BASE_DN": "dc=x",
        "WAVEKIT_LDAP_GROUP_CLASS": "groupofuniquenames", "WAVEKIT_LDAP_START_TLS": "true",
        "WAVEKIT_LDAP_PAGE_SIZE": "250",
    })
    assert (config.port, config.group_object_class, config.member_attribute) == (
        1389, "groupOfUniqueNames", "uniqueMember")
    assert config.start_tls and config.page_size == 250
    with pytest.raises(LdapConfigError, match="WAVEKIT_LDAP_PAGE_SIZE"):
        LdapConfig.from_env({"WAVEKIT_LDAP_URL": "ldap://x", "WAVEKIT_LDAP_BIND_DN": "cn=a",
                             "WAVEKIT_LDAP_PASSWORD": "p", "WAVEKIT_LDAP_BASE_DN": "dc=x",
                             "WAVEKIT_LDAP_PAGE_SIZE": "many"})


def test_tls_options_build_a_verifying_connection(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed until a handshake")
    base = dict(bind_dn="cn=a,dc=x", password="p", base_dn="dc=x")
    ldaps = build_connection(LdapConfig(url="ldaps://dir.example", ca_file=str(ca), **base))
    assert ldaps.server.ssl and ldaps.server.port == 636
    assert ldaps.server.tls.validate == ssl.CERT_REQUIRED
    assert ldaps.server.tls.ca_certs_file == str(ca)
    start = build_connection(LdapConfig(url="ldap://dir.example", start_tls=True, **base))
    assert not start.server.ssl and start.server.tls.validate == ssl.CERT_REQUIRED
    plain = build_connection(LdapConfig(url="ldap://dir.example", **base))
    assert plain.server.port == 389 and not plain.server.ssl
    with pytest.raises(LdapConfigError):
        LdapConfig(url="ldaps://dir.example", start_tls=True, **base)
    with pytest.raises(LdapConfigError):
        LdapConfig(url="http://dir.example", **base)


@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlapd]:
    server = start_slapd(tls=self_signed_tls(tmp_path_factory.mktemp("tls")))
    try:
        yield server
    finally:
        server.remove()


@pytest.mark.parametrize("mode", ["start_tls", "ldaps"])
def test_real_tls_to_slapd(tls_slapd: LocalSlapd, mode: str) -> None:
    config = (replace(tls_slapd.config, start_tls=True) if mode == "start_tls"
              else tls_slapd.ldaps_config)
    target = LdapTarget(config)
    try:
        provision_ldap_directory(target, people(["t1"]), ["tls-group"])
        target.apply([Grant("t1", "tls-group")], [])
        assert target.read_grants(["tls-group"]) == {Grant("t1", "tls-group")}
        conn = target._conn
        assert conn is not None
        assert conn.server.ssl if mode == "ldaps" else conn.tls_started
    finally:
        target.close()


def test_untrusted_certificate_fails_without_retrying(tls_slapd: LocalSlapd,
                                                      tmp_path: Path) -> None:
    other = self_signed_tls(tmp_path)  # a CA that did not sign the server's certificate
    sleeps = Sleeps()
    target = LdapTarget(replace(tls_slapd.ldaps_config, ca_file=str(other.ca_file)),
                        retry=RetryPolicy(sleep=sleeps))
    with pytest.raises(TargetError, match=r"(?i)certificate"):
        target.read_grants(["tls-group"])
    assert sleeps == []

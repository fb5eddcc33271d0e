"""OpenLDAP slapd on loopback for the LDAP target tests (Debian's slapd package)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import SUBTREE
from ldap3.core.exceptions import LDAPNoSuchObjectResult

from tests.support.servers import missing_server
from wavekit.adapters.targets.ldap import (
    LdapConfig,
    LdapTarget,
    build_connection,
    provision_ldap_directory,
)
from wavekit.devservers.slapd import LocalSlapd, SlapdUnavailable, TlsFiles

CONTRACT_USERS = [f"u{i:02d}" for i in range(1, 31)]
CONTRACT_GROUPS = ["ent-a", "ent-b", "ent-c", "ent-d"]


def people(ids: list[str]) -> list[dict[str, str]]:
    """Identity records as provision_ldap_directory takes them."""
    return [{"id": i, "display_name": f"User {i}", "email": f"{i}@example.com"} for i in ids]


def start_slapd(**kwargs: object) -> LocalSlapd:
    """A started LocalSlapd, or a skip (a failure in CI) when slapd cannot run here."""
    try:
        server = LocalSlapd(**kwargs)  # type: ignore[arg-type]
    except SlapdUnavailable as exc:
        missing_server(str(exc))
        raise
    try:
        return server.__enter__()
    except SlapdUnavailable as exc:
        missing_server(str(exc))
        raise


@pytest.fixture(scope="session")
def slapd_server() -> Iterator[LocalSlapd]:
    """One slapd for the session: its `config` binds as the root DN of dc=wavekit,dc=test."""
    server = start_slapd()
    try:
        yield server
    finally:
        server.remove()


def clear_subtree(config: LdapConfig, base: str) -> int:
    """Delete every entry below `base` (not `base` itself), deepest first; count deleted."""
    conn = build_connection(config)
    conn.open()
    conn.bind()
    try:
        try:
            entries = conn.extend.standard.paged_search(base, "(objectClass=*)", SUBTREE,
                                                        attributes=[], paged_size=500,
                                                        generator=False)
        except LDAPNoSuchObjectResult:
            return 0
        dns = [e["dn"] for e in entries if e.get("type") == "searchResEntry"
               and e["dn"].lower() != base.lower()]
        for dn in sorted(dns, key=lambda d: d.count(","), reverse=True):
            conn.delete(dn)
        return len(dns)
    finally:
        conn.unbind()


def raw_members(config: LdapConfig, group: str) -> list[str]:
    """The member values stored on a group, read with plain ldap3 (not through the target)."""
    conn = build_connection(config)
    conn.open()
    conn.bind()
    try:
        conn.search(config.group_base, f"(cn={group})", SUBTREE,
                    attributes=[config.member_attribute, "objectClass"])
        (entry,) = conn.response
        return sorted(entry["attributes"][config.member_attribute])
    finally:
        conn.unbind()


@pytest.fixture
def ldap_contract_target(slapd_server: LocalSlapd) -> Iterator[LdapTarget]:
    """A fresh tree: users u01..u30, empty groups ent-a..ent-d (see test_target_contract)."""
    config = slapd_server.config
    for base in (config.group_base, config.user_base):
        clear_subtree(config, base)
    target = LdapTarget(config)
    provision_ldap_directory(target, people(CONTRACT_USERS), CONTRACT_GROUPS)
    try:
        yield target
    finally:
        target.close()


def self_signed_tls(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A self-signed certificate for `host` (IP SAN), written as PEM files slapd can read."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "slapd.crt", directory / "slapd.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TlsFiles(cert_file=cert_file, key_file=key_file, ca_file=cert_file)

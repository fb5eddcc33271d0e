"""A throwaway OpenLDAP `slapd` on loopback (Debian's slapd package) for the demo and the tests."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget, ensure_base_entries

SLAPD_CANDIDATES = ("/usr/sbin/slapd", "/usr/local/libexec/slapd")
SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/ldap", "/usr/lib/aarch64-linux-gnu/ldap",
               "/usr/local/libexec/openldap")
DEFAULT_BASE_DN = "dc=wavekit,dc=test"


class SlapdUnavailable(RuntimeError):
    """slapd is not installed or would not start."""


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and key for slapd; clients trust `ca_file` (the cert if self-signed)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def find_slapd() -> str:
    """Path of the slapd binary, or SlapdUnavailable with the package to install."""
    found = shutil.which("slapd") or next((p for p in SLAPD_CANDIDATES if os.access(p, os.X_OK)),
                                          None)
    if not found:
        raise SlapdUnavailable("OpenLDAP slapd is not installed "
                               "(Debian: apt-get install slapd ldap-utils)")
    if not SCHEMA_DIR.is_dir():
        raise SlapdUnavailable(f"OpenLDAP schemas not found in {SCHEMA_DIR}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _module_path() -> str | None:
    # Debian builds back_mdb as a loadable module; other builds link it in statically.
    return next((d for d in MODULE_DIRS if Path(d, "back_mdb.la").exists()
                 or Path(d, "back_mdb.so").exists()), None)


def _slapd_conf(root: Path, base_dn: str, rootdn: str, password: str,
                tls: TlsFiles | None, access: tuple[str, ...] = ()) -> str:
    lines = [f"include {SCHEMA_DIR / (name + '.schema')}" for name in SCHEMAS]
    lines += [f"pidfile {root / 'slapd.pid'}", f"argsfile {root / 'slapd.args'}"]
    if modules := _module_path():
        lines += [f"modulepath {modules}", "moduleload back_mdb"]
    if tls:
        lines += [f"TLSCertificateFile {tls.cert_file}", f"TLSCertificateKeyFile {tls.key_file}",
                  f"TLSCACertificateFile {tls.ca_file}"]
    lines += [
        "database mdb",
        "maxsize 268435456",  # the map is sparse: 256 MiB of address space, not of disk
        f'suffix "{base_dn}"',
        f'rootdn "{rootdn}"',
        f"rootpw {password}",
        f"directory {root / 'data'}",
        "dbnosync",  # a throwaway directory: durability is not worth the fsyncs
        "index objectClass eq",
        "index uid,cn eq",
        *access,  # ACLs ("access to ... by ..."); none: everyone bound reads, only root writes
    ]
    return "\n".join(lines) + "\n"


class LocalSlapd:
    """One slapd process over a temporary directory; stop() and start() keep the data."""

    def __init__(self, port: int | None = None, *, base_dn: str = DEFAULT_BASE_DN,
                 tls: TlsFiles | None = None, start_timeout: float = 20.0,
                 access: tuple[str, ...] = ()) -> None:
        self.binary = find_slapd()
        self.base_dn = base_dn
        self.tls = tls
        self._auto_port = port is None
        self.port = port or _free_port()
        self.ldaps_port = _free_port() if tls else None
        self.start_timeout = start_timeout
        self.root = Path(tempfile.mkdtemp(prefix="wavekit-slapd-"))
        (self.root / "data").mkdir()
        self._password = secrets.token_urlsafe(18)
        rootdn = f"cn=admin,{base_dn}"
        conf = self.root / "slapd.conf"
        conf.write_text(_slapd_conf(self.root, base_dn, rootdn, self._password, tls,
                                   access))
        conf.chmod(0o600)  # it holds the root password
        self.config = LdapConfig(url=f"ldap://127.0.0.1:{self.port}", bind_dn=rootdn,
                                 password=self._password, base_dn=base_dn,
                                 ca_file=str(tls.ca_file) if tls else None, timeout=10.0)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.root / "slapd.log"

    @property
    def ldaps_config(self) -> LdapConfig:
        """The same directory over LDAPS (only when started with TLS files)."""
        if not self.ldaps_port:
            raise SlapdUnavailable("this slapd was started without TLS")
        return replace(self.config, url=f"ldaps://127.0.0.1:{self.ldaps_port}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start slapd in the foreground (-d none) and wait until the root DN can bind."""
        for _ in range(3):
            try:
                return self._start_once()
            except SlapdUnavailable as exc:
                # A port picked free can be taken before slapd binds it: pick another.
                if not (self._auto_port and "already in use" in str(exc)):
                    raise
                self.port = _free_port()
                self.ldaps_port = _free_port() if self.tls else None
                self.config = replace(self.config, url=f"ldap://127.0.0.1:{self.port}")
        raise SlapdUnavailable("no free port for slapd after 3 tries")

    def _start_once(self) -> None:
        if self.running:
            return
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.ldaps_port:
            urls += f" ldaps://127.0.0.1:{self.ldaps_port}/"
        # -d keeps slapd attached, so we own exactly one process and stop it by its pid.
        # As root slapd keeps running as root: no -u/-g, the data directory is ours.
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-f", str(self.root / "slapd.conf"), "-h", urls, "-d", "none"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_for_bind()

    def _wait_for_bind(self) -> None:
        from ldap3 import Connection, Server

        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                log = self._log.read_text(errors="replace")[-2000:]
                hint = (" (is an AppArmor profile confining /usr/sbin/slapd to /var/lib/ldap?)"
                        if "Permission denied" in log else "")
                raise SlapdUnavailable(f"slapd exited with {self._proc.returncode}{hint}: {log}")
            try:
                conn = Connection(Server("127.0.0.1", port=self.port, connect_timeout=1),
                                  self.config.bind_dn, self._password, receive_timeout=2)
                if conn.bind():
                    conn.unbind()
                    return
            except Exception as exc:  # not listening yet
                last = exc
            time.sleep(0.05)  # polling a starting process, not driving test time
        self.stop()
        raise SlapdUnavailable(f"slapd did not accept a bind in {self.start_timeout}s: {last}")

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL); the data directory stays for a restart."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_base(self) -> None:
        """Create the suffix entry, the user and group OUs and the empty-group placeholder."""
        target = LdapTarget(self.config)
        try:
            ensure_base_entries(target)
        finally:
            target.close()

    def remove(self) -> None:
        """Stop slapd and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalSlapd:
        try:
            self.start()
            self.ensure_base()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextmanager
def run_local_slapd(port: int | None = None, *, base_dn: str = DEFAULT_BASE_DN,
                    tls: TlsFiles | None = None) -> Iterator[LdapConfig]:
    """Run slapd on 127.0.0.1 for the duration of the block; yields how to reach it.

    Example: `with run_local_slapd() as config: LdapTarget(config)`.
    """
    with LocalSlapd(port, base_dn=base_dn, tls=tls) as server:
        yield server.config

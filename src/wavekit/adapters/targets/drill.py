"""The drill target: where a rollback drill deploys a package and rolls it back, never production.

By default a sandbox in the store named for the package (`drill-<package>`, or
WAVEKIT_DRILL_SANDBOX), which the drill seeds with a copy of production's grants in the
package's scope. WAVEKIT_DRILL_TARGET=scim or ldap drills on another SCIM service or LDAP base:

- scim: WAVEKIT_DRILL_SCIM_URL (required), _TOKEN, _MATCH, _PAGE_SIZE, _RATE_LIMIT_NAME,
  read exactly like WAVEKIT_SCIM_*. Production's variables are never used for a drill: another
  service has its own token.
- ldap: WAVEKIT_DRILL_LDAP_BASE_DN (required), e.g. `ou=drill,dc=example,dc=com`, and any other
  WAVEKIT_DRILL_LDAP_* variable. The connection variables a drill does not set (URL, bind DN,
  password, StartTLS, CA file, timeout, group class and attributes) are production's; the user
  and group bases and the empty-group placeholder follow the drill base unless
  WAVEKIT_DRILL_LDAP_USER_BASE / _GROUP_BASE / _EMPTY_GROUP_PLACEHOLDER set them.

Users and groups missing from a SCIM or LDAP drill directory are provisioned by the drill.
A drill target that is production (same name, or an LDAP group base production uses on the
same server) is refused, and the drill reads production only through `ReadOnlyTarget`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from wavekit.adapters.settings import Settings
from wavekit.adapters.targets.base import (
    BATCH_SIZE,
    ApplyResult,
    ClosesOnExit,
    ProgressCallback,
    Target,
    TargetError,
)
from wavekit.adapters.targets.factory import TARGET_KINDS
from wavekit.domain.grants import Grant, GrantSet

DRILL_PREFIX = "WAVEKIT_DRILL_"
# LDAP variables a drill inherits from production when it does not set its own.
_LDAP_INHERITED = ("URL", "BIND_DN", "PASSWORD", "START_TLS", "CA_FILE", "TIMEOUT", "PAGE_SIZE",
                   "GROUP_CLASS", "GROUP_NAME_ATTRIBUTE", "IDENTITY_ATTRIBUTE")


class DrillTargetRefused(ValueError):
    """The drill target is not configured, or it is production."""


class ProductionWriteRefused(TargetError):
    """Something tried to write production during a drill."""


class ReadOnlyTarget(ClosesOnExit):
    """Production as a drill sees it: reads pass through, any write raises."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self.name = target.name

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        return self._target.read_grants(entitlements)

    def apply(self, adds: Iterable[Grant], removes: Iterable[Grant], *,
              batch_size: int = BATCH_SIZE,
              on_batch: ProgressCallback | None = None) -> ApplyResult:
        raise ProductionWriteRefused(f"a rollback drill never writes production ({self.name})")

    def close(self) -> None:
        """Production belongs to the runtime, which closes it."""


def drill_kind(settings: Settings, kind: str | None = None) -> str:
    chosen = (kind or settings.drill_target or "sandbox").lower()
    if chosen not in TARGET_KINDS:
        raise DrillTargetRefused(f"unknown drill target {chosen!r}; choose one of "
                                 f"{', '.join(TARGET_KINDS)}")
    return chosen


def drill_environ(kind: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The WAVEKIT_<KIND>_* variables the drill target is configured by (see module docstring)."""
    env = os.environ if environ is None else environ
    prefix = f"{DRILL_PREFIX}{kind.upper()}_"
    own = {f"WAVEKIT_{name[len(DRILL_PREFIX):]}": value for name, value in env.items()
           if name.startswith(prefix) and value}
    if kind == "scim":
        if "WAVEKIT_SCIM_URL" not in own:
            raise DrillTargetRefused("a SCIM drill target needs WAVEKIT_DRILL_SCIM_URL (another "
                                     "SCIM service than production)")
        return own
    if kind == "ldap":
        if "WAVEKIT_LDAP_BASE_DN" not in own:
            raise DrillTargetRefused("an LDAP drill target needs WAVEKIT_DRILL_LDAP_BASE_DN (a "
                                     "base other than production's)")
        inherited = {f"WAVEKIT_LDAP_{n}": env[f"WAVEKIT_LDAP_{n}"] for n in _LDAP_INHERITED
                     if env.get(f"WAVEKIT_LDAP_{n}")}
        return {**inherited, **own}
    return own


def build_drill_target(settings: Settings, kind: str | None = None, *, package_key: str,
                       production: Target, environ: Mapping[str, str] | None = None) -> Target:
    """The drill target for `package_key`, refused if it is `production`."""
    kind = drill_kind(settings, kind)
    target: Target
    if kind == "sandbox":
        from wavekit.adapters.targets.sandbox import SandboxTarget

        target = SandboxTarget(settings.resolved_database_url(),
                               sandbox=settings.drill_sandbox or f"drill-{package_key}")
    elif kind == "scim":
        from wavekit.adapters.targets.scim import ScimConfig, ScimTarget

        target = ScimTarget(ScimConfig.from_env(drill_environ(kind, environ)))
    else:
        from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget

        target = LdapTarget(LdapConfig.from_env(drill_environ(kind, environ)))
    try:
        refuse_production(target, production)
    except DrillTargetRefused:
        target.close()
        raise
    return target


def refuse_production(drill: Target, production: Target) -> None:
    """Raise DrillTargetRefused when `drill` is (or shares its groups with) `production`."""
    if drill.name == production.name:
        raise DrillTargetRefused(f"the drill target {drill.name} is the production target: a "
                                 "drill never writes production")
    d, p = getattr(drill, "config", None), getattr(production, "config", None)
    group_base = getattr(d, "group_base", None)
    if (group_base and (getattr(d, "host", None), getattr(d, "port", None))
            == (getattr(p, "host", None), getattr(p, "port", None))
            and str(group_base).lower() == str(getattr(p, "group_base", "")).lower()):
        raise DrillTargetRefused(f"the LDAP drill target's group base {group_base} is "
                                 "production's: a drill never writes production")


def provision_drill_directory(target: Target, identities: Iterable[Mapping[str, Any]],
                              groups: Iterable[str]) -> dict[str, int]:
    """Create the users and groups a SCIM or LDAP drill directory lacks (a sandbox needs none)."""
    from wavekit.adapters.targets.ldap import LdapTarget, provision_ldap_directory
    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory

    people, names = list(identities), list(groups)
    if isinstance(target, ScimTarget):
        made = provision_scim_directory(target, people, names)
        return {"users": made.users, "groups": made.groups}
    if isinstance(target, LdapTarget):
        return provision_ldap_directory(target, people, names)
    return {"users": 0, "groups": 0}

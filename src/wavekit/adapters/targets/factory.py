"""Pick the target implementation from configuration: the one place names map to classes."""

from __future__ import annotations

from wavekit.adapters.settings import Settings
from wavekit.adapters.targets.base import Target

TARGET_KINDS = ("sandbox", "scim", "ldap")


def build_target(settings: Settings, kind: str | None = None) -> Target:
    """The target named by `kind` (default: settings.target), configured from the environment."""
    kind = (kind or settings.target).lower()
    if kind == "sandbox":
        from wavekit.adapters.targets.sandbox import SandboxTarget

        return SandboxTarget(settings.resolved_database_url())
    if kind == "scim":
        from wavekit.adapters.targets.scim import ScimConfig, ScimTarget

        return ScimTarget(ScimConfig.from_env())
    if kind == "ldap":
        from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget

        return LdapTarget(LdapConfig.from_env())
    raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGET_KINDS)}")

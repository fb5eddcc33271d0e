"""Targets: systems that hold grants, behind one interface."""

from wavekit.adapters.targets.base import (
    ApplyResult,
    BatchResult,
    Target,
    TargetAuthError,
    TargetError,
    TargetRefused,
    TargetUnavailable,
)

__all__ = ["ApplyResult", "BatchResult", "Target", "TargetAuthError", "TargetError",
           "TargetRefused", "TargetUnavailable"]

"""Targets: systems that hold grants, behind one interface."""

from wavekit.adapters.targets.base import ApplyResult, BatchResult, Target, TargetError

__all__ = ["ApplyResult", "BatchResult", "Target", "TargetError"]

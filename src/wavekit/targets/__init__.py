"""Targets: systems that hold grants, behind one interface."""

from wavekit.targets.base import ApplyResult, BatchResult, Target, TargetError

__all__ = ["ApplyResult", "BatchResult", "Target", "TargetError"]

"""The wavekit.adapters.slack package's public surface stays complete and importable."""

from __future__ import annotations

import inspect

import wavekit.adapters.slack as slack


def test_every_public_name_is_exported_and_documented() -> None:
    for name in slack.__all__:
        obj = getattr(slack, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{name} needs a docstring"
    public = {n for n, o in vars(slack).items()
              if not n.startswith("_") and not inspect.ismodule(o) and n != "annotations"}
    assert public == set(slack.__all__)

"""Asymmetric layers, primitives, learning rules, path operations and presets.

Rules and presets are plain data and import without TensorFlow; the layers
(``AsymmetricDense``, ``AsymmetricConv2D``) load TensorFlow on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localrules.rules.presets import PRESETS, Preset, RunParams, get_preset, resolve_rule
from localrules.rules.spec import KINDS, PRIMITIVES, Kind, Noise, PathOps, Rule

if TYPE_CHECKING:
    from localrules.rules.conv import AsymmetricConv2D
    from localrules.rules.dense import AsymmetricDense

_LAZY = {
    "AsymmetricDense": "localrules.rules.dense",
    "AsymmetricConv2D": "localrules.rules.conv",
}

__all__ = [
    "KINDS",
    "PRESETS",
    "PRIMITIVES",
    "AsymmetricConv2D",
    "AsymmetricDense",
    "Kind",
    "Noise",
    "PathOps",
    "Preset",
    "Rule",
    "RunParams",
    "get_preset",
    "resolve_rule",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'localrules.rules' has no attribute {name!r}")

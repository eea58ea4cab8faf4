"""ResNet v1 and v2 (18/34/50/101/152) built only from asymmetric layers.

``MODELS``, ``STEMS`` and ``get_spec`` are plain data and import without TensorFlow; ``build`` and
``asymmetric_layers`` load TensorFlow on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localrules.models.registry import MODELS, STEMS, ModelSpec, get_spec

if TYPE_CHECKING:
    from localrules.models.builder import asymmetric_layers, build

_LAZY = {
    "build": "localrules.models.builder",
    "asymmetric_layers": "localrules.models.builder",
}

__all__ = ["MODELS", "STEMS", "ModelSpec", "asymmetric_layers", "build", "get_spec"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'localrules.models' has no attribute {name!r}")

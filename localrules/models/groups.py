"""The four block groups v1 and v2 share: widths, strides, projections and block names.

Group g (1-based) has width ``width·2^(g−1)`` (a bottleneck outputs 4× that) and stride 1, 2, 2, 2;
its first block downsamples and carries the projection shortcut — in every group, including
group 1 (paper-spec §D.4). Blocks are named ``group{g}_block{b}_…`` so names never depend on Keras
auto-numbering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localrules.models.factory import LayerFactory
from localrules.models.registry import ModelSpec

GROUP_STRIDES = (1, 2, 2, 2)

# block(factory, x, filters, strides, name_prefix, projection) -> block output
Block = Callable[[LayerFactory, Any, int, int, str, bool], Any]


def stack_groups(f: LayerFactory, x: Any, spec: ModelSpec, width: int, block: Block) -> Any:
    """Apply all blocks of the four groups to ``x``."""
    for g, (blocks, strides) in enumerate(zip(spec.blocks_per_group, GROUP_STRIDES, strict=True),
                                          start=1):
        for b in range(1, blocks + 1):
            x = block(f, x, width * 2 ** (g - 1), strides if b == 1 else 1,
                      f"group{g}_block{b}_", b == 1)
    return x

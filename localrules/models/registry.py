"""The model names and what each one is: version, block type, blocks per group.

Plain data with no TensorFlow import, so the CLI and the search controller can check a model name
in a fraction of a second before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from localrules.validation import check_choice

# How the network begins: "small" (3×3/1 conv, no max-pool) for 32×32 and smaller inputs,
# "imagenet" (7×7/2 conv and a 3×3/2 max-pool), or "auto" to choose by input size.
STEMS: tuple[str, ...] = ("auto", "small", "imagenet")

BASIC = "basic"
BOTTLENECK = "bottleneck"

# Blocks per group (four groups) and block type, by depth — the paper-spec §D.4 table.
_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: (BASIC, (2, 2, 2, 2)),
    34: (BASIC, (3, 4, 6, 3)),
    50: (BOTTLENECK, (3, 4, 6, 3)),
    101: (BOTTLENECK, (3, 4, 23, 3)),
    152: (BOTTLENECK, (3, 8, 36, 3)),
}


@dataclass(frozen=True)
class ModelSpec:
    """One registered network: ``version`` 1 (post-activation) or 2 (pre-activation)."""

    name: str
    version: int
    block: str
    blocks_per_group: tuple[int, int, int, int]

    @property
    def expansion(self) -> int:
        """Output channels of a block per unit of the group's width (4 for bottlenecks)."""
        return 4 if self.block == BOTTLENECK else 1


SPECS: dict[str, ModelSpec] = {
    f"resnet{depth}{suffix}": ModelSpec(f"resnet{depth}{suffix}", version, block, blocks)
    for version, suffix in ((1, ""), (2, "v2"))
    for depth, (block, blocks) in _DEPTHS.items()
}

MODELS: tuple[str, ...] = tuple(SPECS)


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; a ValueError listing the valid names otherwise."""
    return SPECS[check_choice("model", name, MODELS)]

"""``build``: one validated entry point from a model name to a functional Keras model.

Checks every argument before any layer exists (so a bad config fails in milliseconds with a
message naming what is valid), picks the stem for the input size, and hands the topology to the
v1 or v2 module.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras

from localrules.models import resnet_v1, resnet_v2
from localrules.models.factory import LayerFactory
from localrules.models.registry import STEMS, get_spec
from localrules.rules.base import AsymmetricLayer
from localrules.rules.presets import resolve_rule
from localrules.rules.spec import Rule
from localrules.validation import check_bool, check_choice, check_int, check_nonnegative

# Inputs at most this large (shorter side) get the small stem under stem="auto".
SMALL_IMAGE_MAX = 32
# The imagenet stem and the groups downsample by 32 in all; below that the last groups would
# only ever see a 1×1 map padded with zeros.
IMAGENET_MIN = 32

_VERSIONS = {1: resnet_v1, 2: resnet_v2}


def _plain_int(value: object) -> object:
    """NumPy integers (as dataset metadata often holds) as Python ints; anything else as is."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                   for v in input_shape)
    ):
        raise ValueError(f"input_shape must be (height, width, channels) with positive integers, "
                         f"got {input_shape!r}")
    return (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))


def choose_stem(stem: str, input_shape: Sequence[int]) -> str:
    """``"small"`` or ``"imagenet"`` for ``stem`` (one of STEMS) and an (H, W, C) input."""
    check_choice("stem", stem, STEMS)
    height, width, _ = _check_input_shape(input_shape)
    if stem == "auto":
        stem = "small" if min(height, width) <= SMALL_IMAGE_MAX else "imagenet"
    if stem == "imagenet" and min(height, width) < IMAGENET_MIN:
        raise ValueError(
            f"input {height}×{width} is too small for the imagenet stem, which with the four "
            f"groups downsamples by 32; use an input of at least {IMAGENET_MIN}×{IMAGENET_MIN} "
            "or stem='small' (or 'auto')"
        )
    return stem


def build(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    rule: Rule | str | dict | None,
    width: int = 64,
    *,
    weight_decay: float = 1e-4,
    stem: str = "auto",
    native: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """The ResNet ``name`` (one of MODELS) as a functional model from images to logits.

    ``rule`` is anything ``resolve_rule`` accepts; every conv (stem, blocks, projections) and the
    classifier is an asymmetric layer under it. ``width`` is the first group's channel count (64 in
    the paper). ``weight_decay`` is the paper's TF1 coefficient (``s·½Σw²``, so Keras ``L2(s/2)``)
    on forward kernels and the classifier bias; 0 adds no regularizers. ``stem`` is ``"small"``
    (3×3/1, no max-pool), ``"imagenet"`` (7×7/2 and max-pool) or ``"auto"`` (small for inputs of
    32×32 and below). ``native=True`` builds the same network, names and initialisers from
    keras.layers.Conv2D/Dense and ignores ``rule`` (a baseline for benchmarks). With ``seed`` every
    initialiser and noise generator is seeded, so equal seeds give equal weights.
    """
    spec = get_spec(name)
    num_classes = check_int("num_classes", _plain_int(num_classes), minimum=2)
    input_shape = _check_input_shape(input_shape)
    width = check_int("width", _plain_int(width), minimum=1)
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    stem_kind = choose_stem(stem, input_shape)
    check_bool("native", native)
    if seed is not None:
        seed = check_int("seed", _plain_int(seed), minimum=0)
    resolved = None if native else resolve_rule(rule)

    version = _VERSIONS[spec.version]
    factory = LayerFactory(rule=resolved, native=native, weight_decay=weight_decay,
                           bn_momentum=version.BN_MOMENTUM, seed=seed)
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = version.logits(factory, inputs, spec, width, stem_kind, num_classes)
    return keras.Model(inputs, outputs, name=name)


def asymmetric_layers(model: keras.Model) -> list[AsymmetricLayer]:
    """The model's asymmetric layers in forward (topological) order; empty for a native build."""
    return [layer for layer in model.layers if isinstance(layer, AsymmetricLayer)]

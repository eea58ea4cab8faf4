"""ResNet v1, the paper's "Google TPU" variant (paper-spec §D.4).

Post-activation blocks; a 1×1 conv + BN projection shortcut in the first block of *every* group
(also group 1 of ResNet-18/34, unlike torchvision); the last BN of each block starts with γ = 0;
BN momentum 0.9; classifier N(0, 0.01). A conv is told ``output_relu=True`` exactly when its
post-BN output goes through a ReLU (paper-spec §D.3): the stem conv, basic conv1, bottleneck
conv1 and conv2.
"""

from __future__ import annotations

from typing import Any

import keras

from localrules.models.factory import LayerFactory
from localrules.models.groups import stack_groups
from localrules.models.registry import BOTTLENECK, ModelSpec

BN_MOMENTUM = 0.9


def classifier_initializer(seed: int | None) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.01, seed=seed)


def stem(f: LayerFactory, x: Any, width: int, kind: str) -> Any:
    """conv → BN → ReLU, then (imagenet only) a 3×3/2 SAME max-pool."""
    if kind == "imagenet":
        x = f.conv(x, width, 7, 2, name="stem_conv", pad_name="stem_pad", output_relu=True)
    else:
        x = f.conv(x, width, 3, 1, name="stem_conv", output_relu=True)
    x = f.batch_norm(x, name="stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    if kind == "imagenet":
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    return x


def _shortcut(f: LayerFactory, x: Any, filters: int, strides: int, p: str,
              projection: bool) -> Any:
    if not projection:
        return x
    x = f.conv(x, filters, 1, strides, name=p + "shortcut", output_relu=False)
    return f.batch_norm(x, name=p + "shortcut_bn")


def basic_block(f: LayerFactory, x: Any, filters: int, strides: int, p: str,
                projection: bool) -> Any:
    """3×3(stride) → BN → ReLU → 3×3 → BN(γ=0) → + shortcut → ReLU."""
    shortcut = _shortcut(f, x, filters, strides, p, projection)
    y = f.conv(x, filters, 3, strides, name=p + "conv1", pad_name=p + "pad1", output_relu=True)
    y = keras.layers.ReLU(name=p + "relu1")(f.batch_norm(y, name=p + "bn1"))
    y = f.conv(y, filters, 3, 1, name=p + "conv2", output_relu=False)
    y = f.batch_norm(y, name=p + "bn2", zero_gamma=True)
    y = keras.layers.Add(name=p + "add")([y, shortcut])
    return keras.layers.ReLU(name=p + "out")(y)


def bottleneck_block(f: LayerFactory, x: Any, filters: int, strides: int, p: str,
                     projection: bool) -> Any:
    """1×1 → BN-ReLU → 3×3(stride) → BN-ReLU → 1×1 (4×) → BN(γ=0) → + shortcut → ReLU."""
    shortcut = _shortcut(f, x, 4 * filters, strides, p, projection)
    y = f.conv(x, filters, 1, 1, name=p + "conv1", output_relu=True)
    y = keras.layers.ReLU(name=p + "relu1")(f.batch_norm(y, name=p + "bn1"))
    y = f.conv(y, filters, 3, strides, name=p + "conv2", pad_name=p + "pad2", output_relu=True)
    y = keras.layers.ReLU(name=p + "relu2")(f.batch_norm(y, name=p + "bn2"))
    y = f.conv(y, 4 * filters, 1, 1, name=p + "conv3", output_relu=False)
    y = f.batch_norm(y, name=p + "bn3", zero_gamma=True)
    y = keras.layers.Add(name=p + "add")([y, shortcut])
    return keras.layers.ReLU(name=p + "out")(y)


def logits(f: LayerFactory, inputs: Any, spec: ModelSpec, width: int, stem_kind: str,
           num_classes: int) -> Any:
    """The whole v1 network from ``inputs`` to the logits."""
    block = bottleneck_block if spec.block == BOTTLENECK else basic_block
    x = stem(f, inputs, width, stem_kind)
    x = stack_groups(f, x, spec, width, block)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return f.classifier(x, num_classes, initializer=classifier_initializer, name="classifier")

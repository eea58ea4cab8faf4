"""ResNet v2, pre-activation (paper-spec §D.4).

Each block starts with BN-ReLU; the first block of every group takes its 1×1 projection shortcut
from that pre-activated input, the others add the raw block input. The stem conv has no BN/ReLU
after it, and a final BN-ReLU precedes the pooling. BN momentum 0.997; classifier glorot-uniform.

``output_relu`` follows the reference's table (paper-spec §D.3), which is narrower than "anything
that eventually meets a ReLU": only a conv whose output goes *directly* into its own BN-ReLU
inside the block — conv1 (basic and bottleneck) and bottleneck conv2. The stem, basic conv2,
bottleneck conv3 and the projections feed a residual sum first and are False.
"""

from __future__ import annotations

from typing import Any

import keras

from localrules.models.factory import LayerFactory
from localrules.models.groups import stack_groups
from localrules.models.registry import BOTTLENECK, ModelSpec

BN_MOMENTUM = 0.997


def classifier_initializer(seed: int | None) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(seed=seed)


def stem(f: LayerFactory, x: Any, width: int, kind: str) -> Any:
    """A bare conv (the first block pre-activates it), then (imagenet only) a 3×3/2 max-pool."""
    if kind == "imagenet":
        x = f.conv(x, width, 7, 2, name="stem_conv", pad_name="stem_pad", output_relu=False)
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    else:
        x = f.conv(x, width, 3, 1, name="stem_conv", output_relu=False)
    return x


def _preactivate(f: LayerFactory, x: Any, filters: int, strides: int, p: str,
                 projection: bool) -> tuple[Any, Any]:
    """(pre-activated input, shortcut)."""
    pre = keras.layers.ReLU(name=p + "preact_relu")(f.batch_norm(x, name=p + "preact_bn"))
    if not projection:
        return pre, x
    return pre, f.conv(pre, filters, 1, strides, name=p + "shortcut", output_relu=False)


def basic_block(f: LayerFactory, x: Any, filters: int, strides: int, p: str,
                projection: bool) -> Any:
    """BN-ReLU → 3×3(stride) → BN-ReLU → 3×3 → + shortcut."""
    y, shortcut = _preactivate(f, x, filters, strides, p, projection)
    y = f.conv(y, filters, 3, strides, name=p + "conv1", pad_name=p + "pad1", output_relu=True)
    y = keras.layers.ReLU(name=p + "relu1")(f.batch_norm(y, name=p + "bn1"))
    y = f.conv(y, filters, 3, 1, name=p + "conv2", output_relu=False)
    return keras.layers.Add(name=p + "add")([y, shortcut])


def bottleneck_block(f: LayerFactory, x: Any, filters: int, strides: int, p: str,
                     projection: bool) -> Any:
    """BN-ReLU → 1×1 → BN-ReLU → 3×3(stride) → BN-ReLU → 1×1 (4×) → + shortcut."""
    y, shortcut = _preactivate(f, x, 4 * filters, strides, p, projection)
    y = f.conv(y, filters, 1, 1, name=p + "conv1", output_relu=True)
    y = keras.layers.ReLU(name=p + "relu1")(f.batch_norm(y, name=p + "bn1"))
    y = f.conv(y, filters, 3, strides, name=p + "conv2", pad_name=p + "pad2", output_relu=True)
    y = keras.layers.ReLU(name=p + "relu2")(f.batch_norm(y, name=p + "bn2"))
    y = f.conv(y, 4 * filters, 1, 1, name=p + "conv3", output_relu=False)
    return keras.layers.Add(name=p + "add")([y, shortcut])


def logits(f: LayerFactory, inputs: Any, spec: ModelSpec, width: int, stem_kind: str,
           num_classes: int) -> Any:
    """The whole v2 network from ``inputs`` to the logits."""
    block = bottleneck_block if spec.block == BOTTLENECK else basic_block
    x = stem(f, inputs, width, stem_kind)
    x = stack_groups(f, x, spec, width, block)
    x = keras.layers.ReLU(name="final_relu")(f.batch_norm(x, name="final_bn"))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return f.classifier(x, num_classes, initializer=classifier_initializer, name="classifier")

"""``LayerFactory``: makes every conv, BatchNorm and classifier of one network the same way.

The ResNet modules describe topology only; this is where the paper's per-layer choices live once:
asymmetric (or native) layers, fan-in truncated-normal initialisers, TF1-scaled weight decay on
forward kernels and the classifier bias only, the reference "fixed padding" for strided convs,
BatchNorm constants, and seeds derived per layer so a seeded build is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from localrules.rules.conv import AsymmetricConv2D
from localrules.rules.dense import AsymmetricDense
from localrules.rules.spec import Rule

# Independent streams of derived seeds: one for weight initialisers, one for input noise.
_INIT_STREAM = 0
_NOISE_STREAM = 1
# Derived seeds stay below 2**30: the layers add a fixed offset to W's seed to draw B, and
# Keras seeds are 32-bit.
_SEED_BITS = 30

BN_EPSILON = 1e-5


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A well-mixed seed for layer ``index`` of a build seeded with ``seed``.

    Plain ``seed + index`` would give trial seed 1's layer i the values of trial seed 0's layer
    i + 1 whenever the shapes match (most ResNet convs share shapes), correlating trials that
    should be independent; hashing (seed, stream, index) avoids that.
    """
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> (64 - _SEED_BITS)


def fixed_padding(kernel_size: int) -> tuple[int, int]:
    """Zeros before and after for a strided conv: k − 1 in all, the extra one at the end.

    The reference pads explicitly and then runs a VALID conv, so the result does not depend on
    the input size's parity (unlike SAME) and the conv's input — what the alignment loss sees —
    is the padded tensor.
    """
    total = kernel_size - 1
    return total // 2, total - total // 2


class LayerFactory:
    """Layers for one network. ``rule`` is a resolved Rule (ignored when ``native``).

    Every layer gets an explicit name from the caller, never a Keras auto-number, so two builds in
    one process have identical layer and variable names (metrics and checkpoints line up).
    """

    def __init__(
        self,
        *,
        rule: Rule | None,
        native: bool,
        weight_decay: float,
        bn_momentum: float,
        seed: int | None,
    ) -> None:
        self.rule = rule
        self.native = native
        self.weight_decay = weight_decay
        self.bn_momentum = bn_momentum
        self.seed = seed
        self._index = 0

    # --- per-layer helpers --------------------------------------------------------------------
    def _seeds(self) -> tuple[int | None, int | None]:
        """(initialiser seed, noise seed) for the next layer with weights drawn at random."""
        index = self._index
        self._index += 1
        if self.seed is None:
            return None, None
        return (derive_seed(self.seed, _INIT_STREAM, index),
                derive_seed(self.seed, _NOISE_STREAM, index))

    def _l2(self) -> keras.regularizers.Regularizer | None:
        # TF1's l2_regularizer(s) adds s·½·Σw²; Keras L2(l) adds l·Σw² (DESIGN.md decision 5).
        return keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay > 0 else None

    # --- layers -------------------------------------------------------------------------------
    def conv(
        self,
        x: Any,
        filters: int,
        kernel_size: int,
        strides: int,
        *,
        name: str,
        output_relu: bool,
        pad_name: str | None = None,
    ) -> Any:
        """A bias-free conv of ``x``. Strided convs with k > 1 get a ZeroPadding2D ``pad_name``
        (fixed padding) and run VALID; everything else runs SAME (for a 1×1 conv the two agree).
        """
        padding = "same"
        if strides > 1:
            padding = "valid"
            if kernel_size > 1:
                if pad_name is None:
                    raise ValueError(f"{name}: a strided {kernel_size}×{kernel_size} conv needs "
                                     "a pad_name for its fixed-padding layer")
                x = keras.layers.ZeroPadding2D((fixed_padding(kernel_size),) * 2,
                                               name=pad_name)(x)
        init_seed, noise_seed = self._seeds()
        kwargs = dict(
            filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="truncated_normal", seed=init_seed),
            kernel_regularizer=self._l2(),
            name=name,
        )
        if self.native:
            return keras.layers.Conv2D(**kwargs)(x)
        return AsymmetricConv2D(**kwargs, rule=self.rule, output_relu=output_relu,
                                seed=noise_seed)(x)

    def batch_norm(self, x: Any, *, name: str, zero_gamma: bool = False) -> Any:
        """BatchNorm over channels; ``zero_gamma`` for the last BN of a v1 block, so every
        residual block starts as the identity."""
        return keras.layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=BN_EPSILON,
            gamma_initializer="zeros" if zero_gamma else "ones", name=name,
        )(x)

    def classifier(
        self,
        x: Any,
        num_classes: int,
        *,
        initializer: Callable[[int | None], keras.initializers.Initializer],
        name: str,
    ) -> Any:
        """The final dense layer with a zero-initialised bias. ``initializer(seed)`` makes the
        kernel initialiser (v1: N(0, 0.01); v2: glorot-uniform)."""
        init_seed, noise_seed = self._seeds()
        kwargs = dict(
            units=num_classes, use_bias=True, kernel_initializer=initializer(init_seed),
            bias_initializer="zeros", kernel_regularizer=self._l2(),
            bias_regularizer=self._l2(), name=name,
        )
        # Logits in float32 under a mixed-precision policy, as Keras recommends for the output.
        if keras.config.dtype_policy().compute_dtype != "float32":
            kwargs["dtype"] = "float32"
        if self.native:
            return keras.layers.Dense(**kwargs)(x)
        return AsymmetricDense(**kwargs, rule=self.rule, output_relu=False, seed=noise_seed)(x)

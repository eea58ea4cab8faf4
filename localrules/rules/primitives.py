"""The five primitives that learning rules weigh, at the reference code's scale.

No ½ anywhere; data terms are means over the batch of sums over features (all of H×W×C for a
convolution); weight terms are sums over elements (DESIGN.md decision 2, paper-spec §B.2). Every
primitive reads the same bundle of tensors so a rule is just a weighted sum over names.

Kernels arrive in the forward kernel's layout: a dense layer's backward kernel (stored
``(units, in)``) is transposed to ``(in, units)`` before it gets here, so ``self`` is ``−tr(BW)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf


class AlignmentTensors(NamedTuple):
    """What a primitive may read. ``forward_reconstruction`` is None unless a primitive needs it."""

    forward_kernel: tf.Tensor
    backward_kernel: tf.Tensor
    forward_output: tf.Tensor
    backward_output: tf.Tensor
    forward_reconstruction: tf.Tensor | None


def _batch(t: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.shape(t)[0], t.dtype)


def amp(t: AlignmentTensors) -> tf.Tensor:
    """−(1/N) Σ_n ⟨f_n, b_n⟩: Hebbian amplification of the B–W agreement on the data."""
    return -tf.reduce_sum(t.forward_output * t.backward_output) / _batch(t.forward_output)


def decay(t: AlignmentTensors) -> tf.Tensor:
    """ΣW² + ΣB² (the W term is inert unless W is trained by R)."""
    return tf.reduce_sum(tf.square(t.forward_kernel)) + tf.reduce_sum(tf.square(t.backward_kernel))


def null(t: AlignmentTensors) -> tf.Tensor:
    """(1/N) Σ_n ‖B W x_n‖²: keeps B's null space on the data the forward path produces."""
    rec = t.forward_reconstruction
    return tf.reduce_sum(tf.square(rec)) / _batch(rec)


def sparse(t: AlignmentTensors) -> tf.Tensor:
    """(1/N) Σ_n (‖W x_n‖² + ‖x_nᵀ B‖²)."""
    n = _batch(t.forward_output)
    return (tf.reduce_sum(tf.square(t.forward_output))
            + tf.reduce_sum(tf.square(t.backward_output))) / n


def self_(t: AlignmentTensors) -> tf.Tensor:
    """−Σ W ⊙ B (−tr(BW)); non-local, since W must be transported to where B lives."""
    return -tf.reduce_sum(t.forward_kernel * t.backward_kernel)


PRIMITIVE_FUNCTIONS: dict[str, Callable[[AlignmentTensors], tf.Tensor]] = {
    "amp": amp,
    "decay": decay,
    "null": null,
    "sparse": sparse,
    "self": self_,
}

NEEDS_RECONSTRUCTION: frozenset[str] = frozenset({"null"})

"""The layer-local alignment computation R_l: path operations, projections, primitives.

One function serves dense and convolutional layers: the layer supplies how to project an input
through a kernel and how to reconstruct an input from an output (dense: matmul and its transpose;
convolution: conv2d and conv2d_transpose, at the layer's stride and padding). The steps and their
order follow the reference code (paper-spec §D.2):

1. stop gradients on the input, W and the bias (R trains B only);
2. input noise replaces the input (fresh per layer per call);
3. per-example feature centering / L2-normalising of the input;
4. the backward path's input is optionally batch-centered;
5. projections f = proj(x, W), b = proj(x_b, B);
6. the layer's own bias on either path;
7. ReLU on either path, only where the layer's own output goes through a ReLU;
8. the reconstruction f_rec = proj⁻ᵀ(f, B), only if a primitive needs it;
9. forward-output centering → L2-normalising → batch-centering, on f and f_rec;
10. backward-output centering → L2-normalising, on b;
11. R_l = Σ_p weight_p · P_p.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from localrules.rules.primitives import NEEDS_RECONSTRUCTION, PRIMITIVE_FUNCTIONS, AlignmentTensors
from localrules.rules.spec import Noise, Rule

L2_EPSILON = 1e-12
"""Inside the norm, as the reference code's ``tf.nn.l2_normalize`` default."""

REPLICA_SEED_STRIDE = 1_000_003
"""Added per replica to the first seed word (the second one counts calls), far apart from the small
offsets between layers' seeds."""

Project = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
Reconstruct = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def _feature_axes(t: tf.Tensor) -> list[int]:
    return list(range(1, t.shape.rank))


def _subtract_mean(t: tf.Tensor, axes: list[int]) -> tf.Tensor:
    return t - tf.reduce_mean(t, axis=axes, keepdims=True)


# The standardisations carry hand-written gradients. Centering is an orthogonal projection P, so
# its gradient is P applied to the upstream gradient: two passes over the tensor instead of the
# five (negate, sum, broadcast, scale, add) autodiff builds. An R step runs them on every layer's
# full-size activations; on 2 CPU cores this made ia-tpe's R step 7% faster.


@tf.custom_gradient
def feature_center(t: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    """Subtract each example's mean over all of its features."""
    axes = _feature_axes(t)
    return _subtract_mean(t, axes), lambda g: _subtract_mean(g, axes)


@tf.custom_gradient
def batch_center(t: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    """Subtract the batch mean, separately for every feature (every h, w, c for convolutions)."""
    return _subtract_mean(t, [0]), lambda g: _subtract_mean(g, [0])


@tf.custom_gradient
def feature_normalize(t: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    """Center each example over its features, then scale it to unit L2 norm."""
    axes = _feature_axes(t)
    c = _subtract_mean(t, axes)
    squared_norm = tf.reduce_sum(tf.square(c), axis=axes, keepdims=True)
    inv_norm = tf.math.rsqrt(tf.maximum(squared_norm, L2_EPSILON))
    out = c * inv_norm

    def grad(g: tf.Tensor) -> tf.Tensor:
        # d(c/‖c‖) = (g − out·⟨out, g⟩)/‖c‖, then through the centering P. Where the norm is
        # clamped at ε the scale is a constant and only the first term remains.
        along = tf.reduce_sum(out * g, axis=axes, keepdims=True)
        along = tf.where(squared_norm > L2_EPSILON, along, tf.zeros_like(along))
        return _subtract_mean((g - out * along) * inv_norm, axes)

    return out, grad


def sample_noise(
    noise: Noise, shape: tf.Tensor, dtype: tf.DType, seed: keras.random.SeedGenerator | None
) -> tf.Tensor:
    """Gaussian N(0, σ²) or uniform U(−√3σ, √3σ) noise of the given shape.

    Under a distribution strategy every replica shares the layer's (mirrored) seed state, so the
    replica id is mixed into the seed: each replica draws its own noise, as each TPU core did.
    """
    seed_pair = tf.cast(
        seed.next() if seed is not None else tf.random.uniform([2], 0, 2**31 - 1, tf.int32),
        tf.int32,
    )
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        offset = tf.cast(replica.replica_id_in_sync_group, tf.int32) * REPLICA_SEED_STRIDE
        seed_pair = seed_pair + tf.stack([offset, tf.constant(0, tf.int32)])
    if noise.distribution == "normal":
        return tf.random.stateless_normal(shape, seed_pair, stddev=noise.stddev, dtype=dtype)
    half_width = math.sqrt(3.0) * noise.stddev
    return tf.random.stateless_uniform(
        shape, seed_pair, minval=-half_width, maxval=half_width, dtype=dtype
    )


def alignment_loss(
    rule: Rule,
    inputs: tf.Tensor,
    forward_kernel: tf.Tensor,
    backward_kernel: tf.Tensor,
    bias: tf.Tensor | None,
    *,
    project: Project,
    reconstruct: Reconstruct,
    relu: bool,
    seed: keras.random.SeedGenerator | None = None,
    forward_projection: tf.Tensor | None = None,
) -> tf.Tensor:
    """R_l for one layer. ``backward_kernel`` must already be in the forward kernel's layout; both
    kernels come at their stored precision and are cast to the input's dtype for projections.

    ``forward_projection`` may pass in proj(inputs, W) when the caller already computed it (the
    layer's own pre-bias output in a training call); it is used only when the forward path sees
    the raw input (no noise, no input centering or normalising), where it equals f.

    Only B receives a gradient: the input, W and the bias are stop-gradient. Projections run in
    the input's dtype; under mixed precision (float16/bfloat16) everything after them — the
    standardisations and the primitives' large sums — runs in float32.
    """
    ops = rule.ops
    x = tf.stop_gradient(inputs)
    compute = x.dtype
    w_full = tf.stop_gradient(forward_kernel)
    w = tf.cast(w_full, compute)
    b_kernel = tf.cast(backward_kernel, compute)
    raw_input = rule.noise is None and not (ops.center_input or ops.normalize_input)
    if rule.noise is not None:
        x = sample_noise(rule.noise, tf.shape(x), x.dtype, seed)
    if ops.center_input:
        x = feature_center(x)
    if ops.normalize_input:
        x = feature_normalize(x)
    x_backward = batch_center(x) if ops.batch_center_backward_input else x

    acc = tf.float32 if compute in (tf.float16, tf.bfloat16) else compute
    if forward_projection is not None and raw_input:
        f = tf.cast(tf.stop_gradient(forward_projection), acc)
    else:
        f = tf.cast(project(x, w), acc)
    b = tf.cast(project(x_backward, b_kernel), acc)
    if bias is not None:
        bias = tf.cast(tf.stop_gradient(bias), acc)
        if ops.bias_forward:
            f = f + bias
        if ops.bias_backward:
            b = b + bias
    if relu:
        if ops.relu_forward:
            f = tf.nn.relu(f)
        if ops.relu_backward:
            b = tf.nn.relu(b)

    active = rule.active_primitives
    f_rec = None
    if any(p in NEEDS_RECONSTRUCTION for p in active):
        f_rec = tf.cast(reconstruct(tf.cast(f, compute), b_kernel, tf.shape(x)), acc)

    forward_steps = [
        step
        for on, step in (
            (ops.center_forward_output, feature_center),
            (ops.normalize_forward_output, feature_normalize),
            (ops.batch_center_forward_output, batch_center),
        )
        if on
    ]
    for step in forward_steps:
        f = step(f)
        if f_rec is not None:
            f_rec = step(f_rec)
    if ops.center_backward_output and not ops.normalize_backward_output:
        b = feature_center(b)  # normalising centers anyway
    if ops.normalize_backward_output:
        b = feature_normalize(b)

    # The weight terms (decay, self) read the kernels at their stored precision, not the compute
    # dtype's copies.
    tensors = AlignmentTensors(tf.cast(w_full, acc), tf.cast(backward_kernel, acc), f, b, f_rec)
    total = tf.zeros([], dtype=f.dtype)
    for prim in active:
        total += tf.constant(rule.weights[prim], f.dtype) * PRIMITIVE_FUNCTIONS[prim](tensors)
    return total

"""Matmul and 2-D convolution whose input gradient flows through a separate backward kernel.

The forward pass uses W. The gradient sent to the input uses B (dense: ``dy·B`` with B stored
``(units, in)``; convolution: the transposed convolution with B, which has W's shape). W gets its
usual gradient. B gets a zero task gradient, or W's gradient in B's layout under Kolen–Pollack
(``tied=True``). The gradient functions are plain TF ops and can be differentiated again, but
note that an outer tape also sees the forward op through its custom gradient: a derivative of the
op's *output* with respect to its input is taken through B, not W (see rules/dynamics.py).

Kernels must be passed as tensors, not variables: ``tf.custom_gradient`` otherwise demands a
``variables=`` argument in the gradient function (DESIGN.md, measured facts).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def asymmetric_matmul(
    x: tf.Tensor, forward_kernel: tf.Tensor, backward_kernel: tf.Tensor, *, tied: bool = False
) -> tf.Tensor:
    """``x @ W`` over the last axis of ``x``, with the input gradient ``dy @ B``."""

    @tf.custom_gradient
    def op(x2, w, b):
        def grad(dy):
            dx = tf.matmul(dy, b)
            dw = tf.matmul(x2, dy, transpose_a=True)
            db = tf.transpose(dw) if tied else tf.zeros_like(b)
            return dx, dw, db

        return tf.matmul(x2, w), grad

    if x.shape.rank == 2:
        return op(x, forward_kernel, backward_kernel)
    # Dense layers act on the last axis of any-rank input, as keras.layers.Dense does.
    lead = tf.shape(x)[:-1]
    flat = tf.reshape(x, [-1, tf.shape(x)[-1]])
    y = op(flat, forward_kernel, backward_kernel)
    return tf.reshape(y, tf.concat([lead, tf.shape(y)[-1:]], 0))


def conv2d_input_gradient(
    dy: tf.Tensor,
    kernel: tf.Tensor,
    input_shape: tf.Tensor,
    strides: Sequence[int],
    padding: str,
    dilations: Sequence[int],
) -> tf.Tensor:
    """The transposed convolution of ``dy`` with ``kernel`` back to ``input_shape`` (NHWC)."""
    return tf.nn.conv2d_transpose(
        dy, kernel, input_shape, strides=strides, padding=padding, dilations=dilations
    )


def asymmetric_conv2d(
    x: tf.Tensor,
    forward_kernel: tf.Tensor,
    backward_kernel: tf.Tensor,
    *,
    strides: Sequence[int],
    padding: str,
    dilations: Sequence[int] = (1, 1),
    tied: bool = False,
) -> tf.Tensor:
    """NHWC ``conv2d(x, W)`` with the input gradient ``conv2d_transpose(dy, B)``."""
    strides = [1, *strides, 1]
    dilations = [1, *dilations, 1]
    padding = padding.upper()

    @tf.custom_gradient
    def op(x, w, b):
        def grad(dy):
            dx = conv2d_input_gradient(dy, b, tf.shape(x), strides, padding, dilations)
            dw = tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=strides,
                padding=padding, dilations=dilations,
            )
            db = dw if tied else tf.zeros_like(b)
            return dx, dw, db

        y = tf.nn.conv2d(x, w, strides=strides, padding=padding, dilations=dilations)
        return y, grad

    return op(x, forward_kernel, backward_kernel)

"""The task gradients of the asymmetric layers: input through B, W as usual, B zero (KP: tied)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from localrules.rules import AsymmetricConv2D, AsymmetricDense

CONV_CASES = [(1, "same"), (1, "valid"), (2, "same"), (2, "valid")]
# Even sizes make SAME at stride 2 pad unevenly; stride 3; even and 1×1 (projection) kernels.
MORE_CONV_CASES = [(k, s, p, n) for k in (1, 2, 3, 5) for s in (1, 2, 3) for p in ("same", "valid")
                   for n in (8, 9)]


def _grads(layer, x, dy, variables):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        # B of fa/bp is not trainable, so watch every variable explicitly.
        tape.watch([x, *(v.value for v in variables)])
        y = layer(x)
    return tape.gradient(y, [x, *variables], output_gradients=dy)


def _dense(rule, rng, in_dim=7, units=5, use_bias=True):
    layer = AsymmetricDense(units, rule=rule, use_bias=use_bias)
    layer.build((None, in_dim))
    x = rng.normal(size=(4, in_dim)).astype("float32")
    dy = rng.normal(size=(4, units)).astype("float32")
    return layer, x, dy


def _conv(rule, rng, strides, padding, size=9):
    layer = AsymmetricConv2D(4, 3, strides=strides, padding=padding, rule=rule, use_bias=False)
    layer.build((None, size, size, 3))
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    out = layer.compute_output_shape(x.shape)
    dy = rng.normal(size=out).astype("float32")
    return layer, x, dy


def _conv_transpose_with(kernel, x, dy, strides, padding):
    """An independent reference: autodiff of ⟨dy, conv(x, K)⟩ w.r.t. x is the transposed conv."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.conv2d(x, kernel, strides=strides, padding=padding.upper())
    return tape.gradient(y, x, output_gradients=dy)


def test_fa_dense_input_gradient_is_dy_times_b(rng):
    layer, x, dy = _dense("fa", rng)
    dx, dw, db = _grads(layer, x, dy, [layer.forward_kernel, layer.bias])
    np.testing.assert_allclose(dx, dy @ layer.backward_kernel.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dw, x.T @ dy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(dx, dy @ layer.forward_kernel.numpy().T)


@pytest.mark.parametrize(("strides", "padding"), CONV_CASES)
def test_fa_conv_input_gradient_is_transposed_conv_with_b(rng, strides, padding):
    layer, x, dy = _conv("fa", rng, strides, padding)
    dx, dw = _grads(layer, x, dy, [layer.forward_kernel])
    b = layer.backward_kernel.numpy()
    np.testing.assert_allclose(dx, _conv_transpose_with(b, x, dy, strides, padding),
                               rtol=1e-5, atol=1e-5)
    # W's gradient is the usual filter gradient.
    w = tf.Variable(layer.forward_kernel.numpy())
    with tf.GradientTape() as tape:
        y = tf.nn.conv2d(x, w, strides=strides, padding=padding.upper())
    np.testing.assert_allclose(dw, tape.gradient(y, w, output_gradients=dy), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "strides", "padding", "size"), MORE_CONV_CASES)
def test_fa_conv_input_gradient_any_kernel_stride_padding(rng, kernel, strides, padding, size):
    layer = AsymmetricConv2D(3, kernel, strides=strides, padding=padding, rule="fa",
                             use_bias=False)
    layer.build((None, size, size, 2))
    x = rng.normal(size=(2, size, size, 2)).astype("float32")
    dy = rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32")
    (dx,) = _grads(layer, x, dy, [])
    np.testing.assert_allclose(
        dx, _conv_transpose_with(layer.backward_kernel.numpy(), x, dy, strides, padding),
        rtol=1e-5, atol=1e-5)


def test_fa_dense_on_rank3_input_matches_flattened(rng):
    layer = AsymmetricDense(3, rule="fa")
    x = tf.constant(rng.normal(size=(2, 4, 5)).astype("float32"))
    dy = rng.normal(size=(2, 4, 3)).astype("float32")
    layer.build(x.shape)
    dx, dw = _grads(layer, x, dy, [layer.forward_kernel])
    b = layer.backward_kernel.numpy()
    np.testing.assert_allclose(dx, dy @ b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, x.numpy().reshape(-1, 5).T @ dy.reshape(-1, 3), rtol=1e-5,
                               atol=1e-5)


def test_dense_with_b_equal_w_transpose_matches_native_autodiff(rng):
    layer, x, dy = _dense("fa", rng)
    layer.backward_kernel.assign(tf.transpose(layer.forward_kernel))
    native = keras.layers.Dense(5)
    native.build((None, 7))
    native.set_weights([layer.forward_kernel.numpy(), layer.bias.numpy()])
    got = _grads(layer, x, dy, [layer.forward_kernel, layer.bias])
    want = _grads(native, x, dy, [native.kernel, native.bias])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


@pytest.mark.parametrize(("strides", "padding"), CONV_CASES)
def test_conv_with_b_equal_w_matches_native_autodiff(rng, strides, padding):
    layer, x, dy = _conv("fa", rng, strides, padding)
    layer.backward_kernel.assign(layer.forward_kernel)
    native = keras.layers.Conv2D(4, 3, strides=strides, padding=padding, use_bias=False)
    native.build((None, *x.shape[1:]))
    native.set_weights([layer.forward_kernel.numpy()])
    got = _grads(layer, x, dy, [layer.forward_kernel])
    want = _grads(native, x, dy, [native.kernel])
    np.testing.assert_allclose(layer(x), native(x), atol=1e-5)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_bp_is_exact_autodiff_whatever_b_is(rng):
    layer, x, dy = _dense("bp", rng)
    native = keras.layers.Dense(5)
    native.build((None, 7))
    native.set_weights([layer.forward_kernel.numpy(), layer.bias.numpy()])
    dx, _, _ = _grads(layer, x, dy, [layer.forward_kernel, layer.bias])
    np.testing.assert_allclose(dx, _grads(native, x, dy, [])[0], atol=1e-6)
    assert not layer.backward_kernel.trainable


@pytest.mark.parametrize("rule", ["fa", "wm", "ia", "sa", "aa"])
def test_backward_kernel_gets_zero_task_gradient(rng, rule):
    layer, x, dy = _dense(rule, rng)
    (db,) = _grads(layer, x, dy, [layer.backward_kernel])[1:]
    assert db is not None
    np.testing.assert_array_equal(db, np.zeros(layer.backward_kernel.shape))
    conv, xc, dyc = _conv(rule, rng, 2, "same")
    (dbc,) = _grads(conv, xc, dyc, [conv.backward_kernel])[1:]
    np.testing.assert_array_equal(dbc, np.zeros(conv.backward_kernel.shape))


def test_kolen_pollack_backward_gradient_is_tied_to_w(rng):
    layer, x, dy = _dense("kp", rng)
    _, dw, db = _grads(layer, x, dy, [layer.forward_kernel, layer.backward_kernel])
    np.testing.assert_allclose(db, np.transpose(dw), rtol=1e-6)
    assert layer.backward_kernel.trainable
    conv, xc, dyc = _conv("kp", rng, 2, "valid")
    _, dwc, dbc = _grads(conv, xc, dyc, [conv.forward_kernel, conv.backward_kernel])
    np.testing.assert_allclose(dbc, dwc, rtol=1e-6)


def test_backward_kernel_drawn_independently_with_the_same_initializer():
    init = keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal", seed=7)
    conv = AsymmetricConv2D(64, 3, kernel_initializer=init, rule="fa")
    conv.build((None, 8, 8, 32))
    w, b = conv.forward_kernel.numpy(), conv.backward_kernel.numpy()
    assert not np.allclose(w, b)
    assert np.std(b) == pytest.approx(np.std(w), rel=0.05)
    dense = AsymmetricDense(300, kernel_initializer="he_normal", rule="fa")
    dense.build((None, 50))  # fan_in 50 for W; B (300, 50) must use W's fan-in, not 300
    assert np.std(dense.backward_kernel.numpy()) == pytest.approx(np.sqrt(2 / 50), rel=0.05)


def test_higher_order_gradients_flow_through_the_custom_op(rng):
    layer, x, _ = _dense("fa", rng, use_bias=False)
    x = tf.constant(x)
    with tf.GradientTape() as outer:
        outer.watch(layer.backward_kernel.value)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(layer(x) ** 2)
        dx = inner.gradient(y, x)
        s = tf.reduce_sum(dx)
    # d/dB Σ(dy·B) with dy = 2y: the second-order path runs through B in the gradient function.
    got = outer.gradient(s, layer.backward_kernel.value)
    y = x.numpy() @ layer.forward_kernel.numpy()
    np.testing.assert_allclose(got, np.outer((2 * y).sum(0), np.ones(7)), rtol=1e-5, atol=1e-5)

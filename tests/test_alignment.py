"""The alignment loss R_l: each path operation's exact effect, the primitives, noise, locality."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from localrules.rules import AsymmetricConv2D, AsymmetricDense, Noise, PathOps, Rule
from localrules.rules.alignment import (
    batch_center,
    feature_center,
    feature_normalize,
    sample_noise,
)

EPS = 1e-12


# --- an independent NumPy reading of paper-spec §D.2 for dense layers ------------------------
def _center(t):
    return t - t.mean(axis=1, keepdims=True)


def _normalize(t):
    c = _center(t)
    return c / np.sqrt(np.maximum((c**2).sum(axis=1, keepdims=True), EPS))


def _batch_center(t):
    return t - t.mean(axis=0, keepdims=True)


def reference_r(rule: Rule, x, w, b_code, bias, relu: bool) -> float:
    """R_l in float64 for x (N, in), W (in, out), B stored (out, in)."""
    ops, n = rule.ops, x.shape[0]
    if ops.center_input:
        x = _center(x)
    if ops.normalize_input:
        x = _normalize(x)
    xb = _batch_center(x) if ops.batch_center_backward_input else x
    f, b = x @ w, xb @ b_code.T
    if ops.bias_forward:
        f = f + bias
    if ops.bias_backward:
        b = b + bias
    if relu and ops.relu_forward:
        f = np.maximum(f, 0)
    if relu and ops.relu_backward:
        b = np.maximum(b, 0)
    f_rec = f @ b_code
    for on, step in ((ops.center_forward_output, _center),
                     (ops.normalize_forward_output, _normalize),
                     (ops.batch_center_forward_output, _batch_center)):
        if on:
            f, f_rec = step(f), step(f_rec)
    if ops.center_backward_output:
        b = _center(b)
    if ops.normalize_backward_output:
        b = _normalize(b)
    bw = b_code.T
    prims = {
        "amp": -(f * b).sum() / n,
        "decay": (w**2).sum() + (bw**2).sum(),
        "null": (f_rec**2).sum() / n,
        "sparse": ((f**2).sum() + (b**2).sum()) / n,
        "self": -(w * bw).sum(),
    }
    return sum(weight * prims[p] for p, weight in rule.weights.items())


def _dense_layer(rule, rng, in_dim=6, units=4, output_relu=True, dtype="float64"):
    layer = AsymmetricDense(units, rule=rule, output_relu=output_relu, dtype=dtype)
    layer.build((None, in_dim))
    layer.bias.assign(rng.normal(size=units))
    x = rng.normal(loc=0.3, size=(5, in_dim))
    return layer, x


def _weights(layer):
    return (layer.forward_kernel.numpy(), layer.backward_kernel.numpy(), layer.bias.numpy())


# Weights of a size where every primitive moves R visibly.
KINDS_UNDER_TEST = [
    Rule("information", {"amp": 0.7, "decay": 0.01, "null": 0.3}),
    Rule("activation", {"sparse": 0.5, "amp": 0.9}),
    Rule("symmetric", {"decay": 0.2, "self": 0.6}),
]


@pytest.mark.parametrize("op", PathOps.names())
@pytest.mark.parametrize("base", KINDS_UNDER_TEST, ids=lambda r: r.kind)
def test_each_path_op_has_exactly_its_reference_effect(rng, op, base):
    rule = dataclasses.replace(base, ops=PathOps(**{op: True}))
    layer, x = _dense_layer(rule, rng)
    got = float(layer.alignment_loss(x))
    want = reference_r(rule, x, *_weights(layer), relu=True)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    if base.kind != "symmetric":  # SA reads only the weights: no path op can move it
        off = reference_r(base, x, *_weights(layer), relu=True)
        assert abs(want - off) > 1e-6, f"{op} should change R for {base.kind}"
    else:
        assert got == pytest.approx(reference_r(base, x, *_weights(layer), relu=True))


@pytest.mark.parametrize("base", KINDS_UNDER_TEST[:2], ids=lambda r: r.kind)
def test_all_ops_together_follow_the_fixed_order(rng, base):
    rule = dataclasses.replace(base, ops=PathOps(**dict.fromkeys(PathOps.names(), True)))
    layer, x = _dense_layer(rule, rng)
    want = reference_r(rule, x, *_weights(layer), relu=True)
    assert float(layer.alignment_loss(x)) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("op", ["relu_forward", "relu_backward"])
def test_relu_ops_act_only_when_the_layer_output_feeds_a_relu(rng, op):
    rule = Rule("aa", {"sparse": 0.5, "amp": 0.9}, PathOps(**{op: True}))
    layer, x = _dense_layer(rule, rng, output_relu=False)
    plain = Rule("aa", {"sparse": 0.5, "amp": 0.9})
    assert float(layer.alignment_loss(x)) == pytest.approx(
        reference_r(plain, x, *_weights(layer), relu=True), rel=1e-9)


def test_bias_ops_do_nothing_without_a_bias(rng):
    rule = Rule("aa", ops=PathOps(bias_forward=True, bias_backward=True))
    layer = AsymmetricDense(4, rule=rule, use_bias=False, dtype="float64")
    layer.build((None, 6))
    x = rng.normal(size=(5, 6))
    want = reference_r(Rule("aa"), x, layer.forward_kernel.numpy(),
                       layer.backward_kernel.numpy(), 0.0, relu=False)
    assert float(layer.alignment_loss(x)) == pytest.approx(want, rel=1e-9)


def test_standardisation_helpers(rng):
    t = tf.constant(rng.normal(loc=2.0, size=(3, 4, 5, 2)))
    flat = lambda v: v.numpy().reshape(3, -1)  # noqa: E731
    assert np.allclose(flat(feature_center(t)).mean(1), 0)
    n = flat(feature_normalize(t))
    assert np.allclose(n.mean(1), 0) and np.allclose(np.linalg.norm(n, axis=1), 1)
    assert np.allclose(batch_center(t).numpy().mean(0), 0)


def _autodiff_center(t, axes):
    return t - tf.reduce_mean(t, axis=axes, keepdims=True)


def _autodiff_normalize(t):
    c = _autodiff_center(t, [1, 2, 3])
    sq = tf.reduce_sum(tf.square(c), axis=[1, 2, 3], keepdims=True)
    return c * tf.math.rsqrt(tf.maximum(sq, EPS))


@pytest.mark.parametrize("name", ["feature_center", "feature_normalize", "batch_center"])
def test_standardisation_gradients_match_autodiff_and_finite_differences(rng, name):
    """The standardisations carry hand-written gradients (two passes instead of autodiff's five):
    they must equal autodiff of the plain formulas, also where the norm is clamped at ε (an
    example with nearly constant features), and finite differences."""
    helper = {"feature_center": feature_center, "feature_normalize": feature_normalize,
              "batch_center": batch_center}[name]
    plain = {"feature_center": lambda t: _autodiff_center(t, [1, 2, 3]),
             "feature_normalize": _autodiff_normalize,
             "batch_center": lambda t: _autodiff_center(t, [0])}[name]
    nearly_constant = 0.7 + 1e-8 * rng.normal(size=(1, 3, 2, 2))  # ‖c‖² < ε: clamped
    x = tf.constant(np.concatenate([rng.normal(size=(4, 3, 2, 2)), nearly_constant]))
    upstream = tf.constant(rng.normal(size=x.shape))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, theirs = helper(x), plain(x)
        loss_ours, loss_theirs = tf.reduce_sum(ours * upstream), tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours, theirs, atol=1e-14)
    np.testing.assert_allclose(tape.gradient(loss_ours, x), tape.gradient(loss_theirs, x),
                               atol=1e-12)
    smooth = tf.constant(rng.normal(size=(3, 2, 2, 2)))
    analytic, numeric = tf.test.compute_gradient(helper, [smooth])
    np.testing.assert_allclose(analytic[0], numeric[0], atol=1e-6)


@pytest.mark.parametrize(
    "rule",
    [*KINDS_UNDER_TEST,
     Rule("information", {"amp": 0.7, "decay": 0.01, "null": 0.3},
          PathOps(**dict.fromkeys(PathOps.names(), True)))],
    ids=lambda r: r.kind,
)
def test_conv_alignment_equals_dense_on_the_flattened_patch(rng, rule):
    """A VALID conv whose kernel covers the whole input is a dense layer on the flattened input,
    so the conv path (conv2d, conv2d_transpose, features over H×W×C) must give the same R_l."""
    conv = AsymmetricConv2D(4, (3, 2), rule=rule, output_relu=True, dtype="float64")
    conv.build((None, 3, 2, 2))
    conv.bias.assign(rng.normal(size=4))
    x = rng.normal(size=(5, 3, 2, 2))
    w = conv.forward_kernel.numpy().reshape(12, 4)
    b_code = conv.backward_kernel.numpy().reshape(12, 4).T
    want = reference_r(rule, x.reshape(5, 12), w, b_code, conv.bias.numpy(), relu=True)
    assert float(conv.alignment_loss(x)) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("layer_kind", ["dense", "conv"])
@pytest.mark.parametrize("rule", ["wm-ad-ops-tpe", "ia-tpe", "aa", "sa"])
def test_alignment_gradient_reaches_b_only(rng, layer_kind, rule):
    if layer_kind == "dense":
        layer = AsymmetricDense(4, rule=rule, output_relu=True)
        x = tf.constant(rng.normal(size=(6, 5)), tf.float32)
    else:
        layer = AsymmetricConv2D(4, 3, strides=2, padding="same", rule=rule, output_relu=True)
        x = tf.constant(rng.normal(size=(3, 8, 8, 2)), tf.float32)
    layer.build(x.shape)
    others = [x, layer.forward_kernel.value, layer.bias.value]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(others)
        r = layer.alignment_loss(x)
    for t in others:
        g = tape.gradient(r, t)
        assert g is None or not np.any(g.numpy())
    g_b = tape.gradient(r, layer.backward_kernel)
    assert g_b is not None and np.any(g_b.numpy())


def test_symmetric_alignment_gradient_closed_form(rng):
    alpha, beta = 1e-3, 2e-3  # appendix B.2
    for layer in (AsymmetricDense(4, rule="sa"), AsymmetricConv2D(3, 3, rule="sa")):
        shape = (None, 5) if isinstance(layer, AsymmetricDense) else (None, 6, 6, 2)
        layer.build(shape)
        x = rng.normal(size=(2, *shape[1:])).astype("float32")
        with tf.GradientTape() as tape:
            r = layer.alignment_loss(x)
        w, b = layer.forward_kernel.numpy(), layer.backward_kernel.numpy()
        w_in_b_layout = w.T if isinstance(layer, AsymmetricDense) else w
        np.testing.assert_allclose(tape.gradient(r, layer.backward_kernel),
                                   2 * alpha * b - beta * w_in_b_layout, rtol=1e-5, atol=1e-8)


def test_amp_gradient_is_hebbian_closed_form(rng):
    layer = AsymmetricDense(4, rule=Rule("wm", {"amp": 1.0, "decay": 0.0}), use_bias=False,
                            dtype="float64")
    layer.build((None, 6))
    x = rng.normal(size=(8, 6))
    with tf.GradientTape() as tape:
        r = layer.alignment_loss(x)
    f = x @ layer.forward_kernel.numpy()
    np.testing.assert_allclose(tape.gradient(r, layer.backward_kernel), -(f.T @ x) / 8, rtol=1e-9)


def test_symmetric_alignment_pulls_b_onto_w_transpose(rng):
    """Optimising SA's R alone drives B to Wᵀ: the weight angle goes to ~0."""
    layer = AsymmetricDense(8, rule="sa")
    layer.build((None, 10))
    x = rng.normal(size=(4, 10)).astype("float32")
    for _ in range(300):
        with tf.GradientTape() as tape:
            r = layer.alignment_loss(x)
        layer.backward_kernel.assign_sub(100.0 * tape.gradient(r, layer.backward_kernel))
    w, b = layer.forward_kernel.numpy(), layer.backward_kernel.numpy()
    cos = (w.T * b).sum() / np.linalg.norm(w) / np.linalg.norm(b)
    assert np.degrees(np.arccos(min(cos, 1.0))) < 1.0
    np.testing.assert_allclose(b, w.T, atol=1e-3)


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_noise_has_the_requested_std_and_replaces_the_input(rng, distribution):
    noise = Noise(stddev=0.7, distribution=distribution)
    sample = sample_noise(noise, tf.constant([200_000]), tf.float32,
                          keras.random.SeedGenerator(1)).numpy()
    assert sample.std() == pytest.approx(0.7, rel=0.01)
    assert abs(sample.mean()) < 0.01
    if distribution == "uniform":
        assert np.abs(sample).max() <= np.sqrt(3) * 0.7 + 1e-6

    rule = Rule("wm", {"amp": 1.0, "decay": 0.0}, noise=noise)
    a = AsymmetricDense(4, rule=rule, seed=11)
    b = AsymmetricDense(4, rule=rule, seed=11)
    a.build((None, 6))
    b.build((None, 6))
    b.set_weights(a.get_weights())
    x1 = rng.normal(size=(5, 6)).astype("float32")
    x2 = 100 * rng.normal(size=(5, 6)).astype("float32")
    # Same seed, different inputs: the same R, because the input is replaced by the noise.
    assert float(a.alignment_loss(x1)) == pytest.approx(float(b.alignment_loss(x2)), rel=1e-6)
    # Fresh noise on every call.
    assert float(a.alignment_loss(x1)) != pytest.approx(float(a.alignment_loss(x1)), rel=1e-6)


def test_noise_differs_between_layers_without_a_seed(rng):
    rule = Rule("wm", {"amp": 1.0, "decay": 0.0}, noise=Noise(stddev=1.0))
    a, b = AsymmetricDense(4, rule=rule), AsymmetricDense(4, rule=rule)
    a.build((None, 6))
    b.build((None, 6))
    b.set_weights(a.get_weights()[:3])
    x = rng.normal(size=(5, 6)).astype("float32")
    assert float(a.alignment_loss(x)) != pytest.approx(float(b.alignment_loss(x)), rel=1e-6)


def test_training_call_records_r_and_inference_does_not(rng):
    layer = AsymmetricDense(4, rule=Rule("ia"), output_relu=True)
    x = rng.normal(size=(5, 6)).astype("float32")
    layer(x)
    assert layer.last_alignment_loss is None
    layer(x, training=True)
    assert float(layer.last_alignment_loss) == pytest.approx(float(layer.alignment_loss(x)))
    fa = AsymmetricDense(4, rule="fa")
    fa(x, training=True)
    assert fa.last_alignment_loss is None


def test_recorded_r_is_usable_inside_a_tf_function(rng):
    layer = AsymmetricConv2D(4, 3, padding="same", rule="aa")
    x = tf.constant(rng.normal(size=(2, 6, 6, 3)), tf.float32)
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            layer(x, training=True)
            r = layer.last_alignment_loss
        return r, tape.gradient(r, layer.backward_kernel)

    r, g = step(x)
    assert float(r) == pytest.approx(float(layer.alignment_loss(x)), rel=1e-5)
    assert np.any(g.numpy())


def test_training_call_reuses_the_forward_projection_exactly(rng):
    for rule in ("aa", "wm", Rule("ia", ops=PathOps(center_input=True))):
        layer = AsymmetricConv2D(4, 3, strides=2, padding="same", rule=rule, output_relu=True,
                                 dtype="float64")
        x = rng.normal(size=(3, 7, 7, 2))
        layer.build(x.shape)
        layer.bias.assign(rng.normal(size=4))  # f is the pre-bias projection, not the output
        layer(x, training=True)
        assert float(layer.last_alignment_loss) == pytest.approx(
            float(layer.alignment_loss(x)), rel=1e-12)


def test_noise_alignment_loss_needs_no_input(rng):
    rule = Rule("wm", {"amp": 1.0, "decay": 0.5}, noise=Noise(stddev=0.6))
    a = AsymmetricConv2D(4, 3, strides=2, padding="same", rule=rule, seed=9)
    b = AsymmetricConv2D(4, 3, strides=2, padding="same", rule=rule, seed=9)
    a.build((None, 9, 9, 2))
    b.build((None, 9, 9, 2))
    b.set_weights(a.get_weights())
    x = rng.normal(size=(5, 9, 9, 2)).astype("float32")
    assert float(a.noise_alignment_loss(5)) == pytest.approx(float(b.alignment_loss(x)), rel=1e-6)
    with pytest.raises(ValueError, match="has no input noise"):
        AsymmetricDense(3, rule="wm").noise_alignment_loss(5)


@pytest.mark.parametrize(("strides", "padding", "size"),
                         [(2, "same", 8), (2, "valid", 9), (3, "same", 10), (1, "same", 7)])
def test_null_on_strided_convs_matches_an_autodiff_reconstruction(rng, strides, padding, size):
    """f_rec = Bᵀ-transposed-conv of f, checked against d/dx ⟨f, conv(x, B)⟩ by autodiff."""
    rule = Rule("ia", {"amp": 0.0, "decay": 0.0, "null": 1.0},
                PathOps(relu_forward=True, bias_forward=True))
    layer = AsymmetricConv2D(3, 3, strides=strides, padding=padding, rule=rule, output_relu=True,
                             dtype="float64")
    layer.build((None, size, size, 2))
    layer.bias.assign(rng.normal(size=3))
    x = tf.constant(rng.normal(size=(4, size, size, 2)))
    conv = {"strides": [1, strides, strides, 1], "padding": padding.upper()}
    f = tf.nn.relu(tf.nn.conv2d(x, layer.forward_kernel.value, **conv) + layer.bias.value)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = tf.nn.conv2d(x, layer.backward_kernel.value, **conv)
    f_rec = tape.gradient(z, x, output_gradients=f)
    want = float(tf.reduce_sum(f_rec**2)) / 4
    assert float(layer.alignment_loss(x)) == pytest.approx(want, rel=1e-10)


def test_noise_is_fresh_on_every_call_of_a_tf_function():
    rule = Rule("wm", {"amp": 1.0, "decay": 0.0}, noise=Noise(stddev=1.0))
    layer = AsymmetricDense(3, rule=rule, seed=1)
    layer.build((None, 4))
    step = tf.function(lambda: layer.noise_alignment_loss(8))
    assert float(step()) != pytest.approx(float(step()), rel=1e-6)


def test_replicas_draw_different_noise():
    """Under MirroredStrategy on two logical CPUs each replica gets its own noise (a subprocess,
    since logical devices must be configured before TensorFlow starts)."""
    import subprocess
    import sys

    code = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from localrules.rules import AsymmetricDense, Noise, Rule
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    rule = Rule("wm", {"amp": 1.0, "decay": 0.0}, noise=Noise(1.0))
    layer = AsymmetricDense(3, rule=rule, seed=4)
    layer.build((None, 4))
@tf.function
def step():
    return strategy.run(lambda: layer.noise_alignment_loss(8))
values = strategy.experimental_local_results(step())
print(float(values[0]), float(values[1]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = map(float, done.stdout.split())
    assert first != pytest.approx(second, rel=1e-6)

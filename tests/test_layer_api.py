"""The layers as Keras layers: arguments like Dense/Conv2D, serialisation, shapes, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from localrules.rules import PRESETS, AsymmetricConv2D, AsymmetricDense, Rule


def _model(rule):
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        AsymmetricConv2D(4, 3, strides=2, padding="same", rule=rule, output_relu=True,
                         use_bias=False, kernel_regularizer=keras.regularizers.L2(5e-5)),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        AsymmetricDense(3, rule=rule, kernel_initializer=keras.initializers.RandomNormal(0, 0.01)),
    ])


@pytest.mark.parametrize("rule", ["bp", "fa", "kp", "ia-tpe", PRESETS["wm-ad-ops-tpe-code"].rule])
def test_model_round_trips_through_keras_saving(tmp_path, rng, rule):
    model = _model(rule)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        if hasattr(a, "rule"):
            assert a.rule == b.rule
            np.testing.assert_array_equal(a.backward_kernel.numpy(), b.backward_kernel.numpy())


def test_get_config_mirrors_the_native_layers():
    conv = AsymmetricConv2D(8, (3, 5), strides=2, padding="SAME", dilation_rate=1,
                            activation="relu", use_bias=False, rule="sa", name="c")
    config = conv.get_config()
    for key in keras.layers.Conv2D(8, 3).get_config():
        assert key in config, key
    again = AsymmetricConv2D.from_config(config)
    assert again.get_config() == config
    assert config["padding"] == "same" and config["kernel_size"] == (3, 5)
    assert conv.feeds_relu  # its own activation is a ReLU
    dense_config = AsymmetricDense(3, rule="kp").get_config()
    for key in keras.layers.Dense(3).get_config():
        if key not in ("lora_rank", "lora_alpha", "quantization_config"):
            assert key in dense_config, key
    assert dense_config["rule"]["kind"] == "kolen_pollack"


@pytest.mark.parametrize(("strides", "padding", "size"), [(1, "same", 9), (2, "same", 9),
                                                          (2, "valid", 9), (3, "valid", 10)])
def test_output_shape_matches_native_conv(rng, strides, padding, size):
    layer = AsymmetricConv2D(5, 3, strides=strides, padding=padding, rule="fa")
    native = keras.layers.Conv2D(5, 3, strides=strides, padding=padding)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    assert layer(x).shape == native(x).shape
    assert layer.compute_output_shape(x.shape) == tuple(native(x).shape)


def test_regularizer_applies_to_the_forward_kernel_only(rng):
    layer = AsymmetricDense(3, rule="sa", kernel_regularizer=keras.regularizers.L2(0.5))
    layer(rng.normal(size=(2, 4)).astype("float32"))
    (loss,) = layer.losses
    assert float(loss) == pytest.approx(0.5 * float(tf.reduce_sum(layer.forward_kernel ** 2)))


def test_trainability_of_the_backward_kernel_follows_the_rule():
    for rule, trainable in (("bp", False), ("fa", False), ("wm", True), ("kp", True)):
        layer = AsymmetricDense(2, rule=rule)
        layer.build((None, 3))
        assert layer.backward_kernel.trainable is trainable
        assert layer.forward_kernel.trainable


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: AsymmetricDense(4, rule="nope"), "unknown rule 'nope'; valid:"),
        (lambda: AsymmetricDense(0), "units must be a positive integer"),
        (lambda: AsymmetricConv2D(4, 0), "kernel_size must be a positive integer"),
        (lambda: AsymmetricConv2D(4, (3, 3, 3)), "kernel_size must be a positive integer"),
        (lambda: AsymmetricConv2D(4, 3, strides=-1), "strides must be a positive integer"),
        (lambda: AsymmetricConv2D(4, 3, padding="full"),
         "unknown padding 'full'; valid: same, valid"),
        (lambda: AsymmetricConv2D(4, 3, groups=2), "groups must be 1"),
        (lambda: AsymmetricConv2D(4, 3, data_format="channels_first"),
         "unknown data_format 'channels_first'; valid: channels_last"),
        (lambda: AsymmetricDense(4, rule={"kind": "wm", "weights": {"self": 1.0}}),
         "primitive 'self' is not part of rule kind 'weight_mirror'"),
    ],
)
def test_bad_arguments(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value)


def test_wrong_input_shapes(rng):
    conv = AsymmetricConv2D(4, 3, rule="fa")
    with pytest.raises(ValueError, match="needs NHWC input of rank 4"):
        conv(rng.normal(size=(2, 8, 3)).astype("float32"))
    dense = AsymmetricDense(4, rule="fa")
    dense(rng.normal(size=(2, 5)).astype("float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 5"):
        dense(rng.normal(size=(2, 6)).astype("float32"))
    with pytest.raises(ValueError):
        dense.set_weights([np.zeros((5, 4)), np.zeros((5, 4)), np.zeros(4)])


def test_rule_given_as_a_rule_object_is_kept():
    rule = Rule("wm", {"amp": 0.5})
    assert AsymmetricDense(2, rule=rule).rule is rule


def test_mixed_bfloat16_runs_and_keeps_r_in_float32(rng):
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    init = keras.initializers.GlorotUniform(seed=5)
    full = AsymmetricConv2D(4, 3, padding="same", rule="ia-tpe", output_relu=True, seed=3,
                            kernel_initializer=init)
    half = AsymmetricConv2D(4, 3, padding="same", rule="ia-tpe", output_relu=True, seed=3,
                            kernel_initializer=init, dtype="mixed_bfloat16")
    full.build(x.shape)
    half.build(x.shape)
    half.set_weights(full.get_weights())
    assert half(x, training=True).dtype == tf.bfloat16
    assert half.last_alignment_loss.dtype == tf.float32
    full(x, training=True)
    # ia-tpe weighs amp by ~1e3, so bfloat16 projections (3 significant digits) move R by a few
    # units on terms of a few hundred.
    assert float(half.last_alignment_loss) == pytest.approx(
        float(full.last_alignment_loss), rel=5e-2, abs=5.0)

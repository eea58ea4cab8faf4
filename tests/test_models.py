"""ResNet v1/v2: structure per paper-spec §D.3/§D.4, names, seeds, regularizers, bad input.

Networks here are narrow (width 4–16) and inputs small so the file runs in well under a minute.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from localrules.models import MODELS, asymmetric_layers, build, get_spec
from localrules.rules import AsymmetricConv2D, AsymmetricDense
from localrules.rules.base import AsymmetricLayer

SMALL = (8, 8, 3)
# Asymmetric convs: 1 stem + convs per block · blocks + 4 projection shortcuts.
CONVS = {"resnet18": 21, "resnet34": 37, "resnet50": 53, "resnet101": 104, "resnet152": 155}


@functools.cache
def _shared(name: str) -> keras.Model:
    """One read-only build per name (width 4, 8×8×3, rule fa), shared by the structure tests."""
    return build(name, 3, SMALL, "fa", width=4)


def _convs(model: keras.Model) -> list[AsymmetricConv2D]:
    return [layer for layer in asymmetric_layers(model) if isinstance(layer, AsymmetricConv2D)]


def _role(layer_name: str) -> str:
    """'stem', 'conv1'…'conv3', 'shortcut' or 'classifier' from a stable layer name."""
    return layer_name.rsplit("_", 1)[-1] if layer_name.startswith("group") else \
        layer_name.split("_")[0]


# --- registry and import cost ----------------------------------------------------------------
def test_registry_lists_v1_and_v2_at_every_depth():
    depths = ("18", "34", "50", "101", "152")
    assert tuple(f"resnet{d}" for d in depths) + tuple(f"resnet{d}v2" for d in depths) == MODELS
    assert get_spec("resnet50v2").version == 2
    assert get_spec("resnet50").expansion == 4
    assert get_spec("resnet34").blocks_per_group == (3, 4, 6, 3)


# --- every name builds; layer counts ---------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_with_the_expected_asymmetric_layers(name):
    model = _shared(name)
    assert model.name == name
    layers = asymmetric_layers(model)
    assert len(_convs(model)) == CONVS[name.removesuffix("v2")]
    assert [layer.name for layer in layers if isinstance(layer, AsymmetricDense)] == ["classifier"]
    assert layers[0].name == "stem_conv" and layers[-1].name == "classifier"
    assert all(not isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
               for layer in model.layers)
    assert model.output_shape == (None, 3)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet18v2", "resnet50v2"])
def test_forward_pass_gives_logits(name, rng):
    model = build(name, 5, SMALL, "fa", width=4, seed=0)
    x = rng.normal(size=(2, *SMALL)).astype("float32")
    logits = model(x, training=False)
    assert logits.shape == (2, 5)
    assert np.all(np.isfinite(logits.numpy()))


# --- which convs feed a ReLU (paper-spec §D.3 table) ------------------------------------------
RELU_TABLE = {
    # (version, block): roles whose output goes through a ReLU in the alignment computation
    (1, "basic"): {"stem", "conv1"},
    (1, "bottleneck"): {"stem", "conv1", "conv2"},
    (2, "basic"): {"conv1"},
    (2, "bottleneck"): {"conv1", "conv2"},
}


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet18v2", "resnet50v2"])
def test_output_relu_flags_follow_the_spec_table(name):
    spec = get_spec(name)
    model = _shared(name)
    relu_roles = RELU_TABLE[(spec.version, spec.block)]
    roles = set()
    for layer in asymmetric_layers(model):
        role = _role(layer.name)
        roles.add(role)
        assert layer.output_relu == (role in relu_roles), layer.name
    expected = {"stem", "conv1", "conv2", "shortcut", "classifier"}
    assert roles == (expected | {"conv3"} if spec.block == "bottleneck" else expected)


# --- BatchNorm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_v1_last_bn_of_each_block_starts_with_zero_gamma(name):
    model = _shared(name)
    last = "bn3" if get_spec(name).block == "bottleneck" else "bn2"
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    zero = [bn.name for bn in bns if not np.any(bn.gamma.numpy())]
    assert zero == [bn.name for bn in bns if bn.name.endswith("_" + last)]
    assert len(zero) == sum(get_spec(name).blocks_per_group)
    assert all(np.all(bn.gamma.numpy() == 1) for bn in bns if bn.name not in zero)


@pytest.mark.parametrize(("name", "momentum"), [("resnet18", 0.9), ("resnet18v2", 0.997)])
def test_batch_norm_constants(name, momentum):
    model = _shared(name)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns
    for bn in bns:
        assert bn.momentum == pytest.approx(momentum)
        assert bn.epsilon == pytest.approx(1e-5)
        assert bn.gamma_regularizer is None and bn.beta_regularizer is None
    if name.endswith("v2"):
        assert all(np.all(bn.gamma.numpy() == 1) for bn in bns)
        assert bns[-1].name == "final_bn"


# --- initialisers ------------------------------------------------------------------------------
def test_v1_classifier_is_normal_with_std_one_hundredth():
    model = build("resnet18", 100, SMALL, "fa", width=32, seed=3)
    dense = model.get_layer("classifier")
    w = dense.forward_kernel.numpy()
    assert w.shape == (256, 100)
    assert w.std() == pytest.approx(0.01, rel=0.03)
    assert abs(w.mean()) < 1e-3
    assert np.abs(w).max() > 0.03  # untruncated normal
    assert not np.any(dense.bias.numpy())
    assert dense.backward_as_forward().numpy().std() == pytest.approx(0.01, rel=0.03)


def test_v2_classifier_is_glorot_uniform():
    model = build("resnet18v2", 100, SMALL, "fa", width=32, seed=3)
    w = model.get_layer("classifier").forward_kernel.numpy()
    limit = np.sqrt(6 / (256 + 100))
    assert np.abs(w).max() <= limit
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.03)


def test_conv_kernels_are_fan_in_truncated_normal_and_b_is_drawn_independently():
    model = build("resnet18", 3, SMALL, "fa", width=16, seed=5)
    conv = model.get_layer("group4_block2_conv2")  # 3×3×128×128
    w, b = conv.forward_kernel.numpy(), conv.backward_kernel.numpy()
    std = np.sqrt(1 / (3 * 3 * 128))
    for kernel in (w, b):
        assert kernel.std() == pytest.approx(std, rel=0.03)
        assert np.abs(kernel).max() <= 2 * std / 0.87962566103423978 + 1e-7
    assert abs(np.corrcoef(w.ravel(), b.ravel())[0, 1]) < 0.02
    # Layers of equal shape get different draws.
    other = model.get_layer("group4_block2_conv1").forward_kernel.numpy()
    assert not np.allclose(w, other)


# --- weight decay -----------------------------------------------------------------------------
def test_weight_decay_is_half_the_tf1_coefficient_on_forward_kernels_and_dense_bias_only():
    model = build("resnet18", 3, SMALL, "fa", width=4, weight_decay=1e-4)
    layers = asymmetric_layers(model)
    for layer in layers:
        assert layer.kernel_regularizer.l2 == pytest.approx(5e-5)
    dense = model.get_layer("classifier")
    assert dense.bias_regularizer.l2 == pytest.approx(5e-5)
    dense.bias.assign(np.ones(3, "float32"))
    # The model's penalty is exactly 5e-5·Σw² over forward kernels and the dense bias: nothing
    # on B, on BatchNorm or anywhere else.
    expected = 5e-5 * (sum(float(np.sum(layer.forward_kernel.numpy() ** 2)) for layer in layers)
                       + 3.0)
    assert len(model.losses) == len(layers) + 1
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_zero_weight_decay_adds_no_regularizers():
    model = build("resnet18v2", 3, SMALL, "fa", width=4, weight_decay=0)
    assert model.losses == []
    assert all(layer.kernel_regularizer is None for layer in asymmetric_layers(model))


# --- names and seeds ---------------------------------------------------------------------------
def test_names_are_stable_across_builds():
    a = _shared("resnet50v2")
    b = build("resnet50v2", 3, SMALL, "fa", width=4)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    assert [v.path for v in a.weights] == [v.path for v in b.weights]
    names = {layer.name for layer in a.layers}
    assert {"image", "stem_conv", "group1_block1_preact_bn", "group1_block1_shortcut",
            "group2_block1_pad2", "group4_block3_conv3", "final_bn", "final_relu", "pool",
            "classifier"} <= names
    v1 = {layer.name for layer in _shared("resnet18").layers}
    assert {"stem_bn", "group1_block1_shortcut", "group1_block1_shortcut_bn",
            "group2_block1_pad1", "group2_block2_out"} <= v1


def _weights(model):
    return [v.numpy() for v in model.weights]


def test_same_seed_same_weights_different_seed_different():
    a = _weights(build("resnet18", 3, SMALL, "fa", width=4, seed=7))
    b = _weights(build("resnet18", 3, SMALL, "fa", width=4, seed=7))
    c = _weights(build("resnet18", 3, SMALL, "fa", width=4, seed=8))
    d = _weights(_shared("resnet18"))
    e = _weights(build("resnet18", 3, SMALL, "fa", width=4))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    random = [i for i, x in enumerate(a) if x.ndim >= 2]  # conv and dense kernels, W and B
    assert random
    for other in (c, d):
        assert not any(np.array_equal(a[i], other[i]) for i in random)
    assert not any(np.array_equal(d[i], e[i]) for i in random)


def test_seed_also_fixes_the_input_noise_generators():
    a = build("resnet18", 3, SMALL, "ia-tpe", width=4, seed=1)
    b = build("resnet18", 3, SMALL, "ia-tpe", width=4, seed=1)
    states = [layer.noise_state.numpy() for layer in asymmetric_layers(a)]
    assert len({tuple(s) for s in states}) == len(states)  # every layer its own stream
    for s, layer in zip(states, asymmetric_layers(b), strict=True):
        np.testing.assert_array_equal(s, layer.noise_state.numpy())


# --- native ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet50v2"])
def test_native_build_matches_names_initial_weights_and_forward_parameters(name):
    asym = build(name, 3, SMALL, "fa", width=4, seed=2)
    native = build(name, 3, SMALL, "fa", width=4, seed=2, native=True)
    assert [layer.name for layer in native.layers] == [layer.name for layer in asym.layers]
    assert asymmetric_layers(native) == []
    b_size = sum(int(np.prod(layer.backward_kernel.shape)) for layer in asymmetric_layers(asym))
    assert native.count_params() == asym.count_params() - b_size
    for layer in asymmetric_layers(asym):
        twin = native.get_layer(layer.name)
        assert isinstance(twin, keras.layers.Conv2D | keras.layers.Dense)
        np.testing.assert_array_equal(twin.kernel.numpy(), layer.forward_kernel.numpy())
        if isinstance(twin, keras.layers.Conv2D):
            assert twin.padding == layer.padding and twin.strides == layer.strides
        assert twin.kernel_regularizer.l2 == pytest.approx(5e-5)
    x = np.random.default_rng(0).normal(size=(2, *SMALL)).astype("float32")
    np.testing.assert_allclose(native(x), asym(x), rtol=1e-4, atol=1e-6)


# --- padding and stems -------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "conv"), [("resnet18", "conv1"), ("resnet50", "conv2"),
                                            ("resnet18v2", "conv1"), ("resnet50v2", "conv2")])
def test_strided_3x3_convs_see_the_explicitly_padded_input(name, conv):
    model = _shared(name)
    for g in (2, 3, 4):
        p = f"group{g}_block1_"
        layer = model.get_layer(p + conv)
        pad = model.get_layer(p + "pad" + conv[-1])
        assert isinstance(pad, keras.layers.ZeroPadding2D)
        assert tuple(map(tuple, pad.padding)) == ((1, 1), (1, 1))
        assert layer.input is pad.output
        assert layer.strides == (2, 2) and layer.padding == "valid"
        shortcut = model.get_layer(p + "shortcut")
        assert shortcut.strides == (2, 2) and shortcut.kernel_size == (1, 1)
    pads = [layer for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert len(pads) == 3  # small stem: no stem padding, group 1 has stride 1
    for layer in _convs(model):
        assert (layer.padding == "valid") == (layer.strides == (2, 2)), layer.name


@pytest.mark.parametrize("name", ["resnet18", "resnet18v2"])
def test_imagenet_stem_at_64_pixels(name):
    model = build(name, 3, (64, 64, 3), "fa", width=4)  # auto → imagenet above 32 px
    shape = {layer.name: layer.output.shape[1:3] for layer in model.layers}
    assert shape["stem_pad"] == (70, 70)
    assert shape["stem_conv"] == (32, 32)
    assert shape["stem_pool"] == (16, 16)
    assert shape["group1_block1_add"] == (16, 16)
    assert shape["group4_block2_add"] == (2, 2)
    assert model.get_layer("stem_conv").kernel_size == (7, 7)
    assert model.get_layer("stem_pool").padding == "same"
    assert ("stem_bn" in shape) == (name == "resnet18")


def test_small_stem_is_chosen_up_to_32_pixels_and_can_be_forced():
    small = build("resnet18", 3, (32, 32, 3), "fa", width=4)
    names = {layer.name for layer in small.layers}
    assert "stem_pool" not in names and "stem_pad" not in names
    assert small.get_layer("stem_conv").kernel_size == (3, 3)
    assert small.get_layer("stem_conv").padding == "same"
    forced = build("resnet18", 3, (64, 64, 3), "fa", width=4, stem="small")
    assert forced.get_layer("stem_conv").kernel_size == (3, 3)
    big = build("resnet18", 3, (32, 32, 3), "fa", width=4, stem="imagenet")
    assert big.get_layer("group4_block2_out").output.shape[1:3] == (1, 1)


def test_v2_shortcuts_take_the_preactivated_input_and_identity_adds_the_raw_input():
    model = _shared("resnet18v2")
    assert model.get_layer("group2_block1_shortcut").input is \
        model.get_layer("group2_block1_preact_relu").output
    add_inputs = model.get_layer("group2_block2_add").input
    assert any(t is model.get_layer("group2_block1_add").output for t in add_inputs)
    assert model.get_layer("pool").input is model.get_layer("final_relu").output


# --- training ----------------------------------------------------------------------------------
def test_resnet18_trains_one_sgd_step_under_feedback_alignment(rng):
    model = build("resnet18", 10, (8, 8, 1), "fa", width=16, seed=0)
    layers = asymmetric_layers(model)
    backward = [layer.backward_kernel.value for layer in layers]  # tf.Variables, to watch
    forward = model.trainable_variables
    assert not {id(v) for v in backward} & {id(v) for v in forward}  # fa: B is fixed
    x = tf.constant(rng.normal(size=(8, 8, 8, 1)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=8))
    kernels = [layer.forward_kernel for layer in layers]
    before = [v.numpy() for v in kernels]
    with tf.GradientTape() as tape:
        tape.watch(backward)
        logits = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True)) + tf.add_n(model.losses)
    grads = tape.gradient(loss, forward + backward)
    forward_grads, backward_grads = grads[:len(forward)], grads[len(forward):]
    for layer in layers:
        g = forward_grads[[id(v) for v in forward].index(id(layer.forward_kernel))]
        assert g is not None and np.any(g.numpy()), layer.name
    for g in backward_grads:
        assert g is not None and not np.any(g.numpy())
    keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True).apply(forward_grads, forward)
    assert np.isfinite(loss.numpy())
    # (Not every variable moves on step one: behind a zero-γ BN, bn1's γ/β get no gradient.)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, kernels, strict=True))


def test_every_rule_layer_gets_the_rule():
    model = build("resnet18", 3, SMALL, "kp", width=4)
    assert all(layer.rule.kind == "kolen_pollack" for layer in asymmetric_layers(model))
    assert all(isinstance(layer, AsymmetricLayer) for layer in asymmetric_layers(model))


def test_alignment_losses_are_recorded_for_every_layer_in_a_training_call(rng):
    model = build("resnet18", 3, SMALL, "ia-tpe", width=4, seed=0)
    model(rng.normal(size=(4, *SMALL)).astype("float32"), training=True)
    losses = [layer.last_alignment_loss for layer in asymmetric_layers(model)]
    assert all(loss is not None and np.isfinite(loss.numpy()) for loss in losses)


def test_numpy_integers_are_accepted():
    model = build("resnet18", np.int64(4), tuple(np.array(SMALL)), "bp", width=np.int32(4),
                  seed=np.int64(1))
    assert model.output_shape == (None, 4)


def test_classifier_stays_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build("resnet18", 3, SMALL, "fa", width=4)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    assert model.get_layer("classifier").compute_dtype == "float32"
    assert model.output.dtype == "float32"


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(name="resnet20"), r"unknown model 'resnet20'; valid: .*resnet18.*resnet50v2"),
    (dict(num_classes=1), r"num_classes must be >= 2"),
    (dict(num_classes=2.5), r"num_classes must be an integer"),
    (dict(width=0), r"width must be >= 1"),
    (dict(input_shape=(8, 8)), r"input_shape must be \(height, width, channels\)"),
    (dict(input_shape=(8, 0, 3)), r"input_shape must be .* positive integers"),
    (dict(input_shape=(8.0, 8, 3)), r"input_shape"),
    (dict(stem="tiny"), r"unknown stem 'tiny'; valid: auto, imagenet, small"),
    (dict(stem="imagenet"), r"input 8×8 is too small for the imagenet stem.*at least 32×32"),
    (dict(weight_decay=-1e-4), r"weight_decay must be a finite number >= 0"),
    (dict(seed=-1), r"seed must be >= 0"),
    (dict(rule="nonsense"), r"unknown rule 'nonsense'"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = dict(name="resnet18", num_classes=3, input_shape=SMALL, rule="fa", width=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build(args.pop("name"), args.pop("num_classes"), args.pop("input_shape"),
              args.pop("rule"), **args)

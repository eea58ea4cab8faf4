"""Presets carry the appendix's numbers digit for digit, in both readings of α/β/γ."""

from __future__ import annotations

import pytest

from localrules.rules import PRESETS, PathOps

ALL_OPS_OFF = dict.fromkeys(PathOps.names(), False)


def _ops(*on: str) -> dict[str, bool]:
    return {**ALL_OPS_OFF, **dict.fromkeys(on, True)}


AKROUT = _ops("batch_center_backward_input", "batch_center_forward_output", "relu_forward",
              "bias_forward")


def test_expected_presets_exist():
    assert set(PRESETS) == {
        "bp", "fa", "sa", "aa", "wm-tpe", "wm-tpe-code", "wm-ad-tpe", "wm-ad-tpe-code",
        "wm-ad-ops-tpe", "wm-ad-ops-tpe-code", "ia-tpe", "ia-tpe-code",
    }


@pytest.mark.parametrize(
    ("name", "ratio", "beta", "sigma", "ops"),
    [
        ("wm-tpe", 15.6606919586, 0.028327320537228435, 0.690465059717068, AKROUT),
        ("wm-ad-tpe", 13.9035614049, 2.8109006032182933e-8, 0.949983201505862, AKROUT),
        ("wm-ad-ops-tpe", 0.13444256251, 232.78563021186207, 0.6401550883361206,
         _ops("bias_forward", "relu_forward", "relu_backward", "batch_center_forward_output",
              "batch_center_backward_input", "center_forward_output",
              "normalize_backward_output")),
    ],
)
def test_weight_mirror_presets(name, ratio, beta, sigma, ops):
    appendix, code = PRESETS[name].rule, PRESETS[f"{name}-code"].rule
    assert appendix.kind == code.kind == "weight_mirror"
    assert appendix.weights == {"amp": ratio * beta, "decay": beta}
    assert code.weights == {"decay": ratio * beta, "amp": beta}
    for rule in (appendix, code):
        assert rule.noise.stddev == sigma and rule.noise.distribution == "normal"
        assert rule.ops.to_dict() == ops


def test_derived_alphas_match_the_numbers_printed_in_paper_spec():
    assert PRESETS["wm-tpe"].rule.weights["amp"] == pytest.approx(0.4436254, rel=1e-6)
    assert PRESETS["wm-ad-tpe"].rule.weights["amp"] == pytest.approx(3.908153e-7, rel=1e-6)
    assert PRESETS["wm-ad-ops-tpe"].rule.weights["amp"] == pytest.approx(31.29630, rel=1e-6)
    assert PRESETS["ia-tpe"].rule.weights["amp"] == pytest.approx(1032.77549, rel=1e-8)
    assert PRESETS["wm-tpe-code"].rule.weights["decay"] == pytest.approx(0.4436254, rel=1e-6)


@pytest.mark.parametrize("name", ["bp", "fa"])
def test_baseline_presets(name):
    preset = PRESETS[name]
    assert preset.rule.weights == {} and preset.rule.noise is None
    assert preset.run.alignment_lr is None and not preset.run.alternate
    run = preset.run
    assert (run.batch_size, run.effective_task_lr, run.epochs) == (256, 0.1, 90)


def test_code_readings_differ_only_in_weights():
    for name in ("wm-tpe", "wm-ad-tpe", "wm-ad-ops-tpe", "ia-tpe"):
        appendix, code = PRESETS[name], PRESETS[f"{name}-code"]
        assert appendix.rule.ops == code.rule.ops and appendix.rule.noise == code.rule.noise
        assert appendix.run == code.run
        assert appendix.rule.weights != code.rule.weights


def test_wm_tpe_run_is_ours_and_says_so():
    run = PRESETS["wm-tpe"].run
    assert not run.alternate and run.delay_epochs == 0 and run.alignment_lr == 1e-3
    assert "not stated" in PRESETS["wm-tpe"].source


def test_information_alignment_presets():
    alpha = 129.112317983 * 7.999046944679209
    assert alpha == pytest.approx(1032.77549, rel=1e-8)
    appendix, code = PRESETS["ia-tpe"].rule, PRESETS["ia-tpe-code"].rule
    assert appendix.weights == {"amp": alpha, "decay": 7.999046944679209,
                                "null": 3.1610192645608835e-6}
    assert code.weights == {"amp": alpha, "null": 7.999046944679209,
                            "decay": 3.1610192645608835e-6}
    assert appendix.noise.stddev == 0.8176668980121832
    assert appendix.ops.to_dict() == _ops(
        "bias_forward", "bias_backward", "relu_forward", "batch_center_forward_output",
        "center_forward_output", "center_backward_output", "normalize_backward_output")
    run = PRESETS["ia-tpe"].run
    assert run.alignment_lr == 0.009785729149984566
    assert run.delay_epochs == 1 and run.alternate
    assert run.batch_size == 256 and run.effective_task_lr == 0.125
    assert run.warmup_epochs == 6 and run.drop_epochs == (30, 60, 80) and run.epochs == 100


@pytest.mark.parametrize(
    ("name", "eta"), [("wm-ad-tpe", 0.005268466140227959), ("wm-ad-ops-tpe", 0.0024814785849458275)]
)
def test_ad_search_run_settings(name, eta):
    run = PRESETS[name].run
    assert run.alignment_lr == eta and run.alignment_schedule == "task"
    assert run.delay_epochs == 0 and run.alternate
    assert run.effective_task_lr == 256 / 2048


@pytest.mark.parametrize(("name", "weights"), [
    ("sa", {"decay": 1e-3, "self": 2e-3}), ("aa", {"sparse": 1e-3, "amp": 2e-3}),
])
def test_table4_presets(name, weights):
    preset = PRESETS[name]
    assert preset.rule.weights == weights
    assert preset.rule.ops.to_dict() == _ops("bias_forward", "bias_backward")
    assert preset.rule.noise is None
    run = preset.run
    assert (run.batch_size, run.effective_task_lr) == (256, 0.1)
    assert (run.warmup_epochs, run.epochs) == (5, 90)
    assert run.drop_epochs == (30, 60, 80) and run.alignment_lr == 1e-3
    assert run.momentum == 0.9 and run.weight_decay == 1e-4
    # B.2 is silent on η's schedule: constant, the code default (B.3's drops are selectable)
    assert not run.alternate and run.delay_epochs == 0 and run.alignment_schedule == "constant"
    assert preset.reading == "code"


def test_every_preset_serialises_to_json():
    import json

    for preset in PRESETS.values():
        data = json.loads(json.dumps(preset.to_dict()))
        assert data["name"] == preset.name and data["source"]

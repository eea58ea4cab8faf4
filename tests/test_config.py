"""The trial config: presets and rules in, dotted overrides, JSON round trip, bad input."""

from __future__ import annotations

import pytest

from localrules.config import TrialConfig, apply_overrides, config_from_preset


def test_preset_config_carries_rule_and_run():
    config = config_from_preset("ia-tpe")
    assert config.rule.kind == "information" and config.run.delay_epochs == 1
    assert TrialConfig.from_json(config.to_json()) == config


def test_rule_config_gets_an_alignment_rate_when_it_needs_one():
    assert config_from_preset(rule="wm").run.alignment_lr == 1e-3
    assert config_from_preset(rule="fa").run.alignment_lr is None


def test_overrides_reach_nested_keys():
    config = config_from_preset("wm-ad-ops-tpe", overrides=[
        "run.epochs=3", "run.drop_epochs=[1, 2]", "rule.weights.amp=2.5",
        "rule.ops.center_input=true", "rule.noise.distribution=uniform", "width=8",
        "update_noise.task_variance=0.01", "data_dir=/tmp/x",
    ])
    assert config.run.epochs == 3 and config.run.drop_epochs == (1, 2)
    assert config.rule.weights["amp"] == 2.5 and config.rule.ops.center_input
    assert config.rule.noise.distribution == "uniform"
    assert config.width == 8 and config.update_noise.task_variance == 0.01
    assert config.data_dir == "/tmp/x"


def test_noise_section_is_created_and_removed():
    noisy = config_from_preset(rule="wm", overrides=["rule.noise.stddev=0.3"])
    assert noisy.rule.noise.stddev == 0.3
    assert config_from_preset("ia-tpe", overrides=["rule.noise=null"]).rule.noise is None


def test_apply_overrides_copies():
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2"]) == {"a": {"b": 2}} and data == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["run.epoch=3"], "unknown config key 'run.epoch'; valid: alignment_lr"),
        (["runs.epochs=3"], "unknown config key 'runs'; valid: data_dir, dataset"),
        (["run.epochs=0"], "epochs must be an integer in [1, 10000], got 0"),
        (["run.epochs=three"], "run.epochs must be an integer, got 'three'"),
        (["width=2.5"], "config.width must be an integer"),
        (["rule.weights.null=1"], "primitive 'null' is not part of rule kind 'symmetric'"),
        (["rule.ops.relu=true"], "unknown config key 'rule.ops.relu'; valid: batch_center"),
        (["rule.noise.stddev=-1"], "noise stddev must be a number in [0, 1e+12]"),
        (["strategy=gpu"], "unknown strategy 'gpu'; valid: auto, default, mirrored, tpu"),
        (["run.alignment_lr=null"], "has an alignment loss but run.alignment_lr is not set"),
        (["epochs"], "must look like key=value"),
        (["run.momentum=1.0"], "momentum must be a number in [0, 1)"),
        (["update_noise.distribution=cauchy"], "unknown update noise distribution 'cauchy'"),
    ],
)
def test_bad_overrides(overrides, fragment):
    with pytest.raises(ValueError) as info:
        config_from_preset("sa", overrides=overrides)
    assert fragment in str(info.value)


def test_preset_and_rule_together_is_an_error():
    with pytest.raises(ValueError, match="a preset or a rule, not both"):
        config_from_preset("sa", rule="fa")


def test_from_json_rejects_garbage():
    with pytest.raises(ValueError, match="not valid JSON"):
        TrialConfig.from_json("{nope")
    with pytest.raises(ValueError, match="unknown config key 'colour'"):
        TrialConfig.from_dict({"colour": 1})


def test_set_keys_never_writes_into_the_values_it_was_given():
    from localrules.config import set_keys

    noise = {"stddev": 0.5, "distribution": "normal"}
    out = set_keys({"rule": {"noise": None}}, [("rule.noise", noise), ("rule.noise.stddev", 0.9)])
    assert out["rule"]["noise"]["stddev"] == 0.9 and noise["stddev"] == 0.5

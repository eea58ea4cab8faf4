"""Numeric limits (``validation.Limit``): NaN, ±inf and absurd numbers are refused wherever a
number enters — config fields, search settings, worker and engine parameters — while the paper's
own settings (ResNet-152, 100 epochs, batch 4096, seeds below 2^32) pass."""

from __future__ import annotations

import math

import pytest

from localrules.config import TrialConfig, config_from_preset, parse_value, set_keys
from localrules.rules.presets import RunParams
from localrules.rules.spec import Rule
from localrules.search.settings import SearchSettings, TpeSettings
from localrules.spaces import Budget, default_budget
from localrules.validation import (
    BATCH_SIZE,
    EPOCHS,
    INTERVAL,
    MAX_SAFE_INT,
    SEED,
    Limit,
    ParameterError,
    check_finite,
    check_int,
    check_json,
    check_nonnegative,
    shown,
)

HOSTILE_NUMBERS = [float("nan"), float("inf"), float("-inf"), 2**63, 2**64, 10**400, -(2**63) - 1]


# --- the helpers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
def test_helpers_refuse_non_finite_and_huge_numbers_with_a_value_error(value):
    for check in (check_finite, check_nonnegative):
        with pytest.raises(ValueError):
            check("x", value)
    if isinstance(value, int):
        with pytest.raises(ValueError, match=f"x must be [<>]= -?{MAX_SAFE_INT}"):
            check_int("x", value)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "0x10",
                                  "1_000", "१२", "", " ", "+", "--1", "1e", "9" * 400, "2.5"])
def test_integer_limits_parse_only_plain_decimal_integers(text):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\]"):
        SEED.parse("seed", text)


def test_limits_parse_what_they_admit_and_name_the_range():
    assert SEED.parse("seed", " 4294967295 ") == 2**32 - 1
    assert INTERVAL.parse("lease", "1e3") == 1000.0 and INTERVAL.parse("lease", ".5") == 0.5
    with pytest.raises(ValueError, match=r"lease must be a number in \(0, 604800\], got '0'"):
        INTERVAL.parse("lease", "0")
    with pytest.raises(ValueError, match=r"got 'inf'"):
        INTERVAL.parse("lease", "inf")
    half_open = Limit(0, 1, high_open=True)
    assert half_open.describe() == "a number in [0, 1)" and not half_open.contains(1.0)
    with pytest.raises(ParameterError) as err:
        EPOCHS.check_parameter("epochs", 0)
    assert err.value.naming("--epochs") == "--epochs must be an integer in [1, 10000], got 0"


def test_messages_show_hostile_values_briefly():
    assert shown(10**4000).startswith("<an integer of")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert len(shown(deep)) < 40 and len(shown("x" * 10**6)) < 80


def test_check_json_refuses_bombs_without_recursing():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than"):
        check_json("options", {"a": deep})
    with pytest.raises(ValueError, match="more than 10000 values"):
        check_json("options", {"a": list(range(20_000))})
    for bad in (float("nan"), 2**64, {1: 2}, object()):
        with pytest.raises(ValueError):
            check_json("options", {"a": [bad]})


@pytest.mark.parametrize("override", [
    "rule.weights.amp.x=1", "rule.weights.null.x=1", "rule.noise.stddev.x=1",
    "run.drop_epochs=" + "[" * 300 + "]" * 300, "run.drop_epochs=" + "[" * 900 + "]" * 900,
])
def test_set_overrides_below_a_missing_or_open_key_are_value_errors(override):
    """These were KeyError (a missing key of an open mapping) or RecursionError (copying a
    deep value)."""
    with pytest.raises(ValueError):
        config_from_preset("wm-tpe", overrides=[override])


def test_a_new_key_below_an_open_mapping_is_created():  # checked by the dataset's loader
    config = config_from_preset("bp", overrides=["dataset_options.a.b=1"])
    assert config.dataset_options == {"a": {"b": 1}}


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"width": ' + "9" * 5000 + "}",
                                  '{"width": NaN}', '{"seed": 1e400}', "", "\x00"])
def test_a_config_file_of_hostile_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        TrialConfig.from_json(text)


def test_parse_value_of_a_nesting_bomb_or_a_huge_integer():
    with pytest.raises(ValueError, match="nested too deep"):
        parse_value("[" * 100_000 + "]" * 100_000)
    assert parse_value("9" * 5000) == "9" * 5000  # not a number Python will convert: a string


# --- configs ------------------------------------------------------------------------------------
def test_the_papers_settings_are_admitted():
    run = RunParams(batch_size=4096, task_lr=1.0, lr_reference_batch=2048, warmup_epochs=6.0,
                    epochs=100, alignment_lr=0.009785729149984566, delay_epochs=1,
                    alternate=True, alignment_schedule="task")
    config = TrialConfig(model="resnet152v2", dataset="imagenet", width=64, image_size=299,
                         rule=Rule("information", {"amp": 1032.8, "decay": 7.99}), run=run,
                         seed=2**32 - 1)
    assert TrialConfig.from_dict(config.to_dict()) == config
    assert Rule("wm", {"amp": 200 * 1e7, "decay": 1e7}).weights["amp"] == 2e9  # paper space's top
    assert Budget("imagenet", batch_sizes=(256, 1024, 2048, 4096), epochs=45).epochs == 45


@pytest.mark.parametrize(("key", "value", "message"), [
    ("width", 10**30, r"width must be an integer in \[1, 4096\]"),
    ("seed", 2**32, r"seed must be an integer in \[0, 4294967295\]"),
    ("seed", 2**64, r"seed must be an integer in \[0, 4294967295\]"),
    ("image_size", 2**63, r"image_size must be an integer in \[8, 4096\]"),
    ("eval_every", 10**6, r"eval_every must be an integer in \[1, 10000\]"),
    ("weight_samples", 2**40, r"weight_samples must be an integer in \[0, 16777216\]"),
    ("run.epochs", 10**5, r"epochs must be an integer in \[1, 10000\]"),
    ("run.batch_size", 2**31, r"batch_size must be an integer in \[1, 1048576\]"),
    ("run.task_lr", float("inf"), "task_lr must be a finite number"),
    ("run.task_lr", 1e300, r"task_lr must be a number in \[0, 1e\+12\]"),
    ("run.alignment_lr", float("nan"), "alignment_lr must be a finite number"),
    ("run.warmup_epochs", 1e9, r"warmup_epochs must be a number in \[0, 10000\]"),
    ("run.delay_epochs", float("nan"), "delay_epochs must be a finite number"),
    ("run.drop_epochs", [30.0, 1e9], r"drop_epochs must be a number in \[0, 10000\]"),
    ("run.drop_epochs", list(range(1, 500)), "drop_epochs must be a list of at most 100"),
    ("run.lr_reference_batch", 2**53, r"lr_reference_batch must be an integer in \[1, 1048576"),
    ("run.momentum", float("nan"), "momentum must be a finite number"),
    ("rule.weights.amp", 1e13, r"weight of 'amp' must be a number in \[0, 1e\+12\]"),
    ("rule.weights.amp", 10**400, r"weight of 'amp' must be a number in \[0, 1e\+12\]"),
    ("rule.noise", {"stddev": float("inf")}, r"noise stddev must be a number in \[0, 1e\+12\]"),
    ("update_noise.task_variance", 1e20, r"task_variance must be a number in \[0, 1e\+12\]"),
    ("dataset_options", {"train_examples": float("nan")}, "must be a finite number"),
    ("dataset_options", {"train_examples": 2**64}, "must be a finite number"),
])
def test_stored_configs_are_bounded(key, value, message):
    data = set_keys(config_from_preset("ia-tpe").to_dict(), {key: value})
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_dict(data)


@pytest.mark.parametrize("data", [
    [], "config", 3, None, {"rule": []}, {"rule": {"kind": ["wm"]}},
    {"rule": {"kind": "wm", "weights": [1, 2]}}, {"rule": {"kind": "wm", "weights": "amp"}},
    {"rule": {"kind": "wm", "ops": [True]}}, {"rule": {"kind": "wm", "noise": [0.5]}},
    {"rule": {"kind": "wm", "noise": {"stddev": {"a": 1}}}}, {"run": {"drop_epochs": {"a": 1}}},
    {"run": {"drop_epochs": 30}}, {"run": "fast"}, {"update_noise": [1]},
    {"dataset_options": [1]}, {"width": {"a": 1}}, {"width": [64]}, {"seed": 2.5},
])
def test_from_dict_raises_only_value_error_for_the_wrong_shape(data):
    with pytest.raises(ValueError):
        TrialConfig.from_dict(data)


@pytest.mark.parametrize(("changes", "message"), [
    ({"max_trials": 10**9}, r"max_trials must be an integer in \[1, 1000000\]"),
    ({"seed": 2**32}, r"seed must be an integer in \[0, 4294967295\]"),
    ({"concurrency": 2**63}, r"concurrency must be an integer in \[1, 10000\]"),
    ({"reference_seeds": 10**6}, r"reference_seeds must be an integer in \[1, 1000\]"),
    ({"max_attempts": 0}, r"max_attempts must be an integer in \[1, 1000\]"),
    ({"references": [["bp"]]}, r"references\[0\] must be a string"),
    ({"references": ["bp"] * 100}, "references must be a list of presets"),
    ({"ray": {"x": float("nan")}}, "must be a finite number"),
    ({"tpe": {"gamma": float("nan")}}, "gamma must be a finite number"),
    ({"tpe": {"gamma": 1.0}}, r"tpe gamma must be a number in \(0, 1\)"),
    ({"tpe": {"n_ei_candidates": 10**12}}, r"n_ei_candidates must be an integer in \[1, 10"),
    ({"tpe": {"prior_weight": float("inf")}}, "prior_weight must be a finite"),
])
def test_search_settings_are_bounded(changes, message):
    data = {**SearchSettings().to_dict(), **changes}
    if "tpe" in changes:
        data["tpe"] = {**TpeSettings().__dict__, **changes["tpe"]}
    with pytest.raises(ValueError, match=message):
        SearchSettings.from_dict(data)


def test_budget_from_an_old_divisor_refuses_a_bad_divisor():
    data = default_budget("imagenet").to_dict()
    for divisor in (0, "2", 10**30, None):
        with pytest.raises(ValueError, match="batch_divisor"):
            Budget.from_dict({**data, "batch_divisor": divisor})


# --- workers and engines ----------------------------------------------------------------------
@pytest.mark.parametrize(("parameter", "value"), [
    ("lease_seconds", float("nan")), ("lease_seconds", float("inf")), ("lease_seconds", 0),
    ("lease_seconds", 1e300), ("poll_seconds", float("nan")), ("poll_seconds", -1.0),
    ("heartbeat_seconds", float("inf")), ("idle_exit", float("nan")), ("idle_exit", -1.0),
    ("max_trials", 0), ("max_trials", 2**64), ("max_trials", 1.5),
])
def test_a_worker_refuses_non_finite_or_absurd_timings(tmp_path, parameter, value):
    """`localrules worker --lease nan` stored a NULL lease (its trial never requeued) and
    `--lease inf` killed the heartbeat thread: the Worker itself refuses both."""
    from localrules.worker import Worker

    with pytest.raises(ParameterError) as err:
        Worker(None, tmp_path, **{parameter: value})  # type: ignore[arg-type]
    assert err.value.parameter == parameter and "must be" in str(err.value)


def test_a_heartbeat_interval_is_always_a_valid_wait():
    # The longest lease a worker accepts still gives a wait threading can do.
    import threading

    assert math.isfinite(INTERVAL.maximum) and INTERVAL.maximum / 4 < threading.TIMEOUT_MAX


def test_resources_per_trial_are_bounded():
    from localrules.raytune.engine import check_resources

    for text in ("cpu=nan", "cpu=inf", "cpu=1e400", "cpu=१", "gpu=0x1", "cpu=1e7"):
        with pytest.raises(ParameterError):
            check_resources(text)
    for mapping in ({"cpu": 10**400}, {"cpu": float("nan")}, {3: 1.0}):
        with pytest.raises(ParameterError):
            check_resources(mapping)
    assert check_resources("cpu=2,TPU=4") == {"cpu": 2.0, "TPU": 4.0}
    assert BATCH_SIZE.contains(4096)

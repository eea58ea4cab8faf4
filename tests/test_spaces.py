"""Search spaces: paper spaces sampled through hyperopt, params ↔ vals, budgets, YAML spaces.

Everything here runs without TensorFlow (tests/test_layers.py checks it).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import pytest

from localrules.config import TrialConfig
from localrules.rules.presets import PRESETS
from localrules.rules.spec import AKROUT_OPS, PathOps
from localrules.spaces import (
    DEFAULT_BUDGETS,
    PAPER_SPACES,
    Budget,
    Space,
    default_budget,
    load_space,
    space_from_source,
)
from localrules.spaces.budget import PAPER_BATCH_SIZES
from localrules.spaces.nodes import (
    Choice,
    Option,
    Uniform,
    params_from_vals,
    vals_from_params,
)
from localrules.spaces.paper import paper_space
from localrules.spaces.yaml_space import load_space_file, parse_space

ROOT = Path(__file__).resolve().parents[1]
BUDGET = default_budget("digits")
N_SAMPLES = 200
OPS = PathOps.names()
WEIGHTS = {"amp_decay_ratio", "decay"}
ADAPTIVE = {"noise", "sigma", "batch_size", "alignment_lr", "delay_epochs", "alternate"}
LABELS = {
    "wm": {"sigma", *WEIGHTS},
    "wm-ad": {*WEIGHTS, *ADAPTIVE},
    "wm-ad-ops": {*WEIGHTS, *ADAPTIVE, *OPS},
    "ia": {*WEIGHTS, *ADAPTIVE, *OPS, "null"},
}


def _suggest(space, n: int, seed: int) -> list[dict]:
    """``n`` samples drawn by hyperopt's own random search: each doc's ``misc["vals"]``."""
    from hyperopt import Trials, rand
    from hyperopt.base import Domain

    domain = Domain(lambda p: 0, space.to_hyperopt())
    docs = rand.suggest(list(range(n)), domain, Trials(), seed)
    assert len(docs) == n
    return [doc["misc"]["vals"] for doc in docs]


@functools.cache
def _paper_vals(name: str) -> tuple[dict, ...]:
    return tuple(_suggest(paper_space(name, BUDGET), N_SAMPLES, seed=20200301))


def _within(value: float, low: float, high: float, rel: float = 0.0) -> bool:
    return low * (1 - rel) <= value <= high * (1 + rel)


# --- paper spaces through hyperopt -----------------------------------------------------------

@pytest.mark.parametrize("name", PAPER_SPACES)
def test_paper_space_samples_give_matching_configs(name):
    space = paper_space(name, BUDGET)
    assert set(space.labels()) == LABELS[name]
    has_ops = name in ("wm-ad-ops", "ia")
    seen: dict[str, set] = {k: set() for k in ("noise", "batch_size", "delay_epochs",
                                               "alternate", *OPS)}
    decays, etas = [], []
    for i, vals in enumerate(_paper_vals(name)):
        params = space.params_from_vals(vals)
        config = space.config(params, seed=i)
        assert isinstance(config, TrialConfig)
        rule, run = config.rule, config.run
        assert config.seed == i

        # rule: kind and weights (amp derived from the ratio)
        assert rule.kind == ("information" if name == "ia" else "weight_mirror")
        assert rule.weights["decay"] == params["decay"]
        assert rule.weights["amp"] == pytest.approx(
            params["amp_decay_ratio"] * params["decay"], rel=1e-12)
        if name == "ia":
            assert rule.weights["null"] == params["null"]
            assert _within(params["null"], 1e-11, 1e7, rel=1e-9)
        else:
            assert "null" not in rule.weights and "null" not in params

        # noise: σ always on for wm, gated by the noise choice otherwise
        if name == "wm":
            assert "noise" not in params
            noise_on = True
        else:
            noise_on = params["noise"]
            seen["noise"].add(noise_on)
        if noise_on:
            assert rule.noise is not None and rule.noise.stddev == params["sigma"]
            assert rule.noise.distribution == "normal"
            assert 1e-10 <= params["sigma"] <= 1.0
        else:
            assert rule.noise is None and "sigma" not in params

        # ranges of the weights
        assert 0.1 <= params["amp_decay_ratio"] <= 200.0
        assert _within(params["decay"], 1e-11, 1e7, rel=1e-9)
        decays.append(params["decay"])

        # run settings: fixed for wm, sampled for the +AD searches
        if name == "wm":
            assert run.batch_size == BUDGET.batch_size == 64
            assert run.alignment_lr == 1e-3
            assert run.delay_epochs == 0 and run.alternate is False
        else:
            assert run.batch_size == params["batch_size"]
            assert run.alignment_lr == params["alignment_lr"]
            assert _within(params["alignment_lr"], 1e-6, 1e-2, rel=1e-9)
            etas.append(params["alignment_lr"])
            # the delay is in paper epochs (of a 45-epoch trial), scaled like the schedule
            assert type(params["delay_epochs"]) is int
            assert run.delay_epochs == pytest.approx(params["delay_epochs"] * 10 / 45, abs=1e-6)
            assert run.alternate is params["alternate"]
            for key in ("batch_size", "delay_epochs", "alternate"):
                seen[key].add(params[key])

        # path operations
        if has_ops:
            for op in OPS:
                assert getattr(rule.ops, op) is params[op], op
                seen[op].add(params[op])
        else:
            assert rule.ops == AKROUT_OPS
            assert not set(OPS) & set(params)

        # the budget's schedule by fractions and its lr, linear in the batch from 0.1 at 64
        assert (config.dataset, config.model, config.width) == ("digits", "resnet18", 16)
        assert run.epochs == 10 and run.warmup_epochs == pytest.approx(10 * 6 / 45, abs=1e-6)
        assert run.drop_epochs == pytest.approx((10 * 30 / 45,), abs=1e-6)
        assert run.task_lr == 0.1 and run.lr_reference_batch == 64
        assert run.alignment_schedule == "task"
        assert run.effective_task_lr == pytest.approx(0.1 * run.batch_size / 64)

    # every branch was exercised
    if name != "wm":
        assert seen["noise"] == {True, False}
        assert seen["batch_size"] == set(BUDGET.batch_sizes) == {16, 32, 64, 128}
        assert seen["delay_epochs"] == {0, 1, 2}
        assert seen["alternate"] == {True, False}
        # log-uniform, not uniform: the samples span the decades
        assert min(etas) < 1e-5 and max(etas) > 1e-3
    if has_ops:
        for op in OPS:
            assert seen[op] == {True, False}, op
    assert min(decays) < 1e-5 and max(decays) > 10.0


@pytest.mark.parametrize("name", PAPER_SPACES)
def test_params_and_vals_round_trip(name):
    space = paper_space(name, BUDGET)
    for vals in _paper_vals(name):
        assert set(vals) == set(space.labels())
        params = space.params_from_vals(vals)
        # params are plain JSON (no numpy scalars) and survive the store
        assert all(type(v) in (bool, int, float) for v in params.values()), params
        stored = json.loads(json.dumps(params))
        assert stored == params
        assert space.params_from_vals(space.vals_from_params(stored)) == params
        # hyperopt's vals (choice indices; [] for inactive labels) come back exactly
        back = space.vals_from_params(params)
        assert set(back) == set(vals)
        for label, value in vals.items():
            assert back[label] == list(value), (label, back[label], value)


def test_inactive_labels_are_empty_in_vals():
    space = paper_space("wm-ad", BUDGET)
    base = {"amp_decay_ratio": 1.0, "decay": 1e-3, "batch_size": 64, "alignment_lr": 1e-3,
            "delay_epochs": 2, "alternate": True}
    off = space.vals_from_params({**base, "noise": False})
    on = space.vals_from_params({**base, "noise": True, "sigma": 0.25})
    assert off["sigma"] == [] and off["noise"] == [0]
    assert on["sigma"] == [0.25] and on["noise"] == [1]
    assert off["batch_size"] == [2] and off["delay_epochs"] == [2] and off["alternate"] == [0]


@pytest.mark.parametrize("values, chosen, index", [
    ((0, False), False, 1),
    ((False, 0), 0, 1),
    ((1, True), True, 1),
    ((1, 1.0), 1.0, 1),
    ((None, 0, False), False, 2),
])
def test_choice_vals_tell_equal_comparing_options_apart(values, chosen, index):
    # bool == int in Python (Option(0) == Option(False)); the index must follow the value's type.
    nodes = (Choice("x", None, tuple(Option(v) for v in values)),)
    vals = vals_from_params(nodes, {"x": chosen})
    assert vals == {"x": [index]}
    back = params_from_vals(nodes, vals)["x"]
    assert back == chosen and type(back) is type(chosen)


# --- check_params ----------------------------------------------------------------------------

def _ia_params(noise: bool = True) -> dict:
    params = {"noise": noise, "amp_decay_ratio": 10.0, "decay": 1e-3, "batch_size": 16,
              "alignment_lr": 1e-3, "delay_epochs": 1, "alternate": True,
              **{op: False for op in OPS}, "null": 1e-4}
    if noise:
        params["sigma"] = 0.5
    return params


def test_valid_params_check_and_normalise():
    space = paper_space("ia", BUDGET)
    for noise in (True, False):
        assert space.check_params(_ia_params(noise)) == _ia_params(noise)
    # an int for a float parameter comes back as a float
    normal = space.check_params({**_ia_params(), "amp_decay_ratio": 3})
    assert normal["amp_decay_ratio"] == 3.0 and type(normal["amp_decay_ratio"]) is float
    config = space.config(_ia_params(), seed=7)
    assert config.rule.weights == pytest.approx({"amp": 1e-2, "decay": 1e-3, "null": 1e-4})
    assert config.seed == 7


@pytest.mark.parametrize("change, name, words", [
    ({"decay": None}, "decay", "no value"),                   # missing (None = delete)
    ({"sigma": None}, "sigma", "no value"),                   # missing child of the chosen option
    ({"noise": None}, "noise", "no value"),                   # missing gating choice
    ({"decay": 1e8}, "decay", "[1e-11, 1e+07]"),              # out of range
    ({"decay": 0.0}, "decay", "must be"),
    ({"amp_decay_ratio": 0.05}, "amp_decay_ratio", "[0.1, 200]"),
    ({"sigma": 1.5}, "sigma", "[1e-10, 1]"),
    ({"alignment_lr": 0.1}, "alignment_lr", "must be"),
    ({"null": 1e8}, "null", "must be"),
    ({"decay": "0.001"}, "decay", "must be"),                 # wrong type
    ({"decay": True}, "decay", "must be"),
    ({"batch_size": 48}, "batch_size", "one of"),            # not an option
    ({"delay_epochs": 3}, "delay_epochs", "one of"),
    ({"alternate": 1}, "alternate", "one of"),               # an int is not a bool
    ({"center_input": 0}, "center_input", "one of"),
    ({"foo": 1.0}, "foo", "not in the space"),               # unknown name
    ({"noise": False, "sigma": 0.5}, "sigma", "inactive"),   # inactive under noise = False
])
def test_check_params_errors_name_the_parameter(change, name, words):
    space = paper_space("ia", BUDGET)
    params = _ia_params()
    for key, value in change.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    for call in (space.check_params, space.config):
        with pytest.raises(ValueError) as err:
            call(params)
        assert f"'{name}'" in str(err.value)
        assert words in str(err.value)


def test_wm_has_no_noise_choice():
    space = paper_space("wm", BUDGET)
    params = {"sigma": 0.3, "amp_decay_ratio": 2.0, "decay": 1.0}
    assert space.config(params).rule.noise.stddev == 0.3
    with pytest.raises(ValueError, match=r"'noise'.*not in the space"):
        space.check_params({**params, "noise": True})
    with pytest.raises(ValueError, match=r"'sigma'.*no value"):
        space.check_params({"amp_decay_ratio": 2.0, "decay": 1.0})


# --- budgets ---------------------------------------------------------------------------------

def test_digits_budget_maps_the_paper_schedule_by_fractions():
    b = default_budget("digits")
    assert (b.dataset, b.width, b.epochs, b.batch_size, b.lr) == ("digits", 16, 10, 64, 0.1)
    assert b.time_scale == pytest.approx(10 / 45)
    # the paper trial's warm-up (6 of 45) and its one drop (30 of 45) at the same fractions
    assert b.warmup_epochs() == pytest.approx(1.333333) and b.drop_epochs() == (6.666667,)
    assert b.delay_epochs(1) == pytest.approx(0.222222) and b.delay_epochs(0) == 0
    assert b.batch_sizes == (16, 32, 64, 128)
    assert b.settings() == {
        "dataset": "digits", "model": "resnet18", "width": 16, "data_dir": None,
        "image_size": None, "run.epochs": 10, "run.warmup_epochs": 1.333333,
        "run.drop_epochs": [6.666667], "run.batch_size": 64, "run.task_lr": 0.1,
        "run.lr_reference_batch": 64,
    }
    text = b.describe()
    assert "digits" in text and "10 epochs" in text and "6.66667" in text
    assert "{16, 32, 64, 128}" in text and "lr 0.1 at batch 64" in text


def test_imagenet_budget_is_the_papers_trial():
    b = default_budget("imagenet")
    assert b.epochs == 45 and b.warmup_epochs() == 6.0 and b.drop_epochs() == (30.0,)
    assert b.batch_sizes == PAPER_BATCH_SIZES and b.batch_size == 256
    # lr = |B| / 2048 at every choice, as in the paper
    assert [b.task_lr(x) for x in PAPER_BATCH_SIZES] == [x / 2048 for x in PAPER_BATCH_SIZES]


@pytest.mark.parametrize("epochs", [1, 3, 10, 45, 90])
def test_epochs_stretch_the_whole_schedule(epochs):
    b = default_budget("digits", epochs=epochs)
    assert b.warmup_epochs() / epochs == pytest.approx(6 / 45, abs=1e-5)
    assert [d / epochs for d in b.drop_epochs()] == pytest.approx([30 / 45], abs=1e-5)
    assert b.delay_epochs(2) / epochs == pytest.approx(2 / 45, abs=1e-5)
    # None overrides are ignored
    assert default_budget("digits", epochs=None) == DEFAULT_BUDGETS["digits"]


@pytest.mark.parametrize("dataset", sorted(DEFAULT_BUDGETS))
def test_learning_rate_is_linear_in_the_batch(dataset):
    b = default_budget(dataset)
    space = paper_space("wm-ad", b)
    for batch in b.batch_sizes:
        params = {"noise": False, "amp_decay_ratio": 1.0, "decay": 1.0, "batch_size": batch,
                  "alignment_lr": 1e-3, "delay_epochs": 0, "alternate": False}
        run = space.config(params).run
        assert run.batch_size == batch
        assert run.effective_task_lr == pytest.approx(b.lr * batch / b.batch_size)
    assert b.batch_size in b.batch_sizes or dataset == "synthetic"


def test_standard_batch_gives_the_budget_rate():
    run = paper_space("wm", BUDGET).config(
        {"sigma": 0.5, "amp_decay_ratio": 1.0, "decay": 1.0}).run
    assert run.batch_size == 64 and run.effective_task_lr == 0.1


@pytest.mark.parametrize("changes, match", [
    ({"batch_sizes": ()}, "batch_sizes"),
    ({"batch_sizes": (64, 32)}, "increasing"),
    ({"batch_sizes": (32, 32)}, "distinct"),
    ({"batch_sizes": (0, 32)}, r"batch_sizes must be an integer in \[1, 1048576\], got 0"),
    ({"lr": 0.0}, r"lr must be a number in \(0, 1e\+12\], got 0.0"),
    ({"lr": float("nan")}, r"lr must be a number in \(0, 1e\+12\], got nan"),
    ({"batch_size": 0}, r"batch_size must be an integer in \[1, 1048576\]"),
    ({"epochs": 0}, r"epochs must be an integer in \[1, 10000\]"),
    ({"epochs": 10**30}, r"epochs must be an integer in \[1, 10000\]"),
    ({"width": 2**63}, r"width must be an integer in \[1, 4096\]"),
    ({"batch_sizes": (16, 2**64)}, r"batch_sizes must be an integer in \[1, 1048576\]"),
    ({"lr": float("inf")}, r"lr must be a number in \(0, 1e\+12\], got inf"),
])
def test_invalid_budgets(changes, match):
    with pytest.raises(ValueError, match=match):
        Budget("digits", **changes)


def test_closest_batch_choice():
    assert BUDGET.closest_batch(64) == 64 and BUDGET.closest_batch(256) == 128
    assert BUDGET.closest_batch(20) == 16 and BUDGET.closest_batch(1) == 16


def test_budget_stored_with_a_batch_divisor_still_reads():
    """Experiments stored before fractional budgets kept ``batch_divisor``: the same batches
    and lr rule (|B| / (2048 / divisor)) come back."""
    old = {"dataset": "digits", "model": "resnet18", "width": 8, "epochs": 4,
           "batch_divisor": 16, "data_dir": None, "image_size": None}
    b = Budget.from_dict(old)
    assert b.batch_sizes == (16, 64, 128, 256) and b.batch_size == 16
    assert b.task_lr(128) == pytest.approx(128 * 16 / 2048)


@pytest.mark.parametrize("budget", [
    *DEFAULT_BUDGETS.values(),
    Budget("cifar10", model="resnet34", width=16, epochs=7, batch_size=32,
           batch_sizes=(32, 64), lr=0.05, data_dir="/data/cifar", image_size=32),
])
def test_budget_dict_round_trip(budget):
    assert Budget.from_dict(budget.to_dict()) == budget
    assert Budget.from_dict(json.loads(json.dumps(budget.to_dict()))) == budget


def test_budget_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown budget key 'epoch'"):
        Budget.from_dict({"dataset": "digits", "epoch": 3})


# --- fingerprints and loading ----------------------------------------------------------------

def test_fingerprints():
    prints = {name: paper_space(name, BUDGET).fingerprint() for name in PAPER_SPACES}
    assert len(set(prints.values())) == len(PAPER_SPACES)
    for name in PAPER_SPACES:
        assert paper_space(name, default_budget("digits")).fingerprint() == prints[name]
        assert load_space(name, BUDGET).fingerprint() == prints[name]
        for other in (default_budget("digits", epochs=5), default_budget("digits", width=8),
                      default_budget("digits", batch_sizes=(16, 32)),
                      default_budget("cifar10")):
            assert paper_space(name, other).fingerprint() != prints[name], (name, other)


def test_load_space_unknown_name_lists_the_valid_spaces():
    with pytest.raises(ValueError) as err:
        load_space("wm-ops", BUDGET)
    message = str(err.value)
    assert "'wm-ops'" in message
    for name in PAPER_SPACES:
        assert name in message
    with pytest.raises(ValueError, match="wm-ad-ops"):
        paper_space("nope", BUDGET)


@pytest.mark.parametrize("name", PAPER_SPACES)
def test_space_from_source_rebuilds_paper_spaces(name):
    space = load_space(name, BUDGET)
    source = json.loads(json.dumps(space.source))
    rebuilt = space_from_source(source, BUDGET)
    assert rebuilt.name == name and rebuilt.fingerprint() == space.fingerprint()


def test_space_from_source_rejects_unknown_sources():
    with pytest.raises(ValueError, match="'paper' or 'yaml'"):
        space_from_source({"python": "x"}, BUDGET)


# --- YAML spaces -----------------------------------------------------------------------------

VALID_YAML = """\
name: tiny
description: IA with noise on/off
base: ia-tpe
fixed:
  run.alternate: false
  rule.ops.center_input: true
parameters:
  run.batch_size: {choice: [16, 32]}
  run.alignment_lr: {loguniform: [1e-6, 1e-2]}
  run.delay_epochs: {int: [0, 2]}
  noise:
    key: null
    choice:
      - value: false
        set: {rule.noise: null}
      - value: true
        parameters:
          sigma: {key: rule.noise.stddev, uniform: [0.1, 1.0]}
"""


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_space_samples_give_matching_configs(tmp_path):
    path = _write(tmp_path, VALID_YAML)
    space = load_space(str(path), BUDGET)
    assert space.name == "tiny" and space.description == "IA with noise on/off"
    assert set(space.labels()) == {"run.batch_size", "run.alignment_lr", "run.delay_epochs",
                                   "noise", "sigma"}
    lr = next(n for n in space.tree() if n["name"] == "run.alignment_lr")
    # PyYAML reads 1e-6 as a string; the loader takes it as a number
    assert (lr["type"], lr["low"], lr["high"]) == ("loguniform", 1e-6, 1e-2)
    assert type(lr["low"]) is float

    preset = PRESETS["ia-tpe"]
    seen: dict[str, set] = {"noise": set(), "batch": set(), "delay": set()}
    for i, vals in enumerate(_suggest(space, N_SAMPLES, seed=5)):
        params = space.params_from_vals(vals)
        assert space.vals_from_params(json.loads(json.dumps(params))) == {
            k: list(v) for k, v in vals.items()}
        config = space.config(params, seed=i)
        rule, run = config.rule, config.run
        # base preset, then the budget, then fixed keys, then the sample
        assert rule.kind == "information" and rule.weights == preset.rule.weights
        assert rule.ops == PathOps(**{**preset.rule.ops.to_dict(), "center_input": True})
        assert run.alternate is False and preset.run.alternate is True
        assert (config.dataset, config.width, run.epochs) == ("digits", 16, 10)
        assert run.drop_epochs == (6.666667,)
        assert run.batch_size == params["run.batch_size"] and run.batch_size in (16, 32)
        assert run.effective_task_lr == pytest.approx(0.1 * run.batch_size / 64)
        assert run.alignment_lr == params["run.alignment_lr"]
        assert _within(run.alignment_lr, 1e-6, 1e-2, rel=1e-9)
        assert run.delay_epochs == params["run.delay_epochs"]
        assert type(params["run.delay_epochs"]) is int
        if params["noise"]:
            assert rule.noise.stddev == params["sigma"] and 0.1 <= params["sigma"] <= 1.0
            assert rule.noise.distribution == preset.rule.noise.distribution
        else:
            assert rule.noise is None and "sigma" not in params
        seen["noise"].add(params["noise"])
        seen["batch"].add(run.batch_size)
        seen["delay"].add(run.delay_epochs)
    assert seen == {"noise": {True, False}, "batch": {16, 32}, "delay": {0, 1, 2}}


def test_yaml_space_without_base_or_name(tmp_path):
    path = _write(tmp_path, "parameters:\n  rule.weights.decay: {loguniform: [1.0e-3, 1.0]}\n"
                            "fixed: {rule.kind: kolen_pollack, run.alignment_lr: 0.01}\n",
                  name="my-space.yml")
    space = load_space(str(path), BUDGET)
    assert space.name == "my-space"
    config = space.config({"rule.weights.decay": 0.5})
    assert config.rule.kind == "kolen_pollack" and config.rule.weights == {"decay": 0.5}
    assert config.run.alignment_lr == 0.01 and config.run.epochs == 10
    assert space.reading == "none" and space.warm_starts == ()


def test_yaml_space_from_source_round_trip(tmp_path):
    path = _write(tmp_path, VALID_YAML)
    space = load_space_file(path, BUDGET)
    source = json.loads(json.dumps(space.source))
    rebuilt = space_from_source(source, BUDGET)
    assert rebuilt.fingerprint() == space.fingerprint()
    params = {"run.batch_size": 32, "run.alignment_lr": 1e-4, "run.delay_epochs": 1,
              "noise": True, "sigma": 0.5}
    assert rebuilt.config(params, seed=3) == space.config(params, seed=3)
    # a different file or budget is a different space
    other = parse_space(VALID_YAML.replace("[16, 32]", "[16, 64]"), BUDGET)
    assert other.fingerprint() != space.fingerprint()
    assert parse_space(VALID_YAML, default_budget("digits", epochs=5)).fingerprint() \
        != space.fingerprint()
    assert space.fingerprint() not in {paper_space(n, BUDGET).fingerprint() for n in PAPER_SPACES}


NOISE_CHILD = """\
parameters:
  noise:
    key: null
    choice:
      - value: false
        set: {rule.noise: null}
      - value: true
        parameters:
          sigma: {key: rule.noise.stddev, uniform: [0.1, 1.0]}
"""

YAML_ERRORS = {
    "unknown top-level key": (
        "paramters:\n  run.alignment_lr: {uniform: [0, 1]}\n",
        ["unknown top-level key 'paramters'"]),
    "missing parameters": ("name: x\n", ["'parameters'"]),
    "empty parameters": ("parameters: {}\n", ["parameters must be a non-empty mapping"]),
    "not a mapping": ("- a\n- b\n", ["mapping", "list"]),
    "unknown config key": (
        "parameters:\n  run.nope: {uniform: [0, 1]}\n",
        ["parameters.run.nope", "unknown config key 'run.nope'"]),
    "unknown nested config key": (
        NOISE_CHILD.replace("key: rule.noise.stddev", "key: rule.noise.std"),
        ["parameters.noise.choice[1].parameters.sigma", "'rule.noise.std'"]),
    "unknown key in set": (
        NOISE_CHILD.replace("set: {rule.noise: null}", "set: {rule.nois: null}"),
        ["parameters.noise.choice[0].set.rule.nois", "unknown config key 'rule.nois'"]),
    "unknown fixed key": (
        "fixed: {run.nope: 1}\nparameters:\n  run.alignment_lr: {uniform: [0, 1]}\n",
        ["fixed.run.nope"]),
    "two distributions": (
        "parameters:\n  run.alignment_lr: {uniform: [0, 1], loguniform: [1.0e-6, 1.0]}\n",
        ["parameters.run.alignment_lr", "exactly one distribution"]),
    "no distribution": (
        "parameters:\n  run.alignment_lr: {key: run.alignment_lr}\n",
        ["parameters.run.alignment_lr", "exactly one distribution", "none"]),
    "unknown node field": (
        "parameters:\n  run.alignment_lr: {uniform: [0, 1], low: 0}\n",
        ["parameters.run.alignment_lr", "unknown field 'low'"]),
    "low above high": (
        "parameters:\n  run.alignment_lr: {uniform: [0.5, 0.1]}\n",
        ["parameters.run.alignment_lr", "lower bound"]),
    "low equals high": (
        "parameters:\n  run.alignment_lr: {loguniform: [1e-3, 1e-3]}\n",
        ["parameters.run.alignment_lr", "lower bound"]),
    "loguniform low zero": (
        "parameters:\n  run.alignment_lr: {loguniform: [0, 1.0e-2]}\n",
        ["parameters.run.alignment_lr", "> 0"]),
    "loguniform low negative": (
        "parameters:\n  run.alignment_lr: {loguniform: [-1, 1]}\n",
        ["parameters.run.alignment_lr", "> 0"]),
    "nested bad bounds": (
        NOISE_CHILD.replace("uniform: [0.1, 1.0]", "uniform: [1.0, 0.1]"),
        ["parameters.noise.choice[1].parameters.sigma", "lower bound"]),
    "bounds not numbers": (
        "parameters:\n  run.alignment_lr: {uniform: [a, 1]}\n",
        ["parameters.run.alignment_lr", "bounds must be numbers in [-1e+15, 1e+15]"]),
    "option without value": (
        NOISE_CHILD.replace("- value: false\n        set:", "- set:"),
        ["parameters.noise.choice[0]", "'value'"]),
    "empty choice": (
        "parameters:\n  run.alternate: {choice: []}\n",
        ["parameters.run.alternate.choice", "non-empty list"]),
    "duplicate option": (
        "parameters:\n  run.alternate: {choice: [true, true]}\n",
        ["parameters.run.alternate", "twice"]),
    "duplicate name across branches": (
        NOISE_CHILD.replace("set: {rule.noise: null}",
                            "parameters:\n          sigma: {key: null, uniform: [0, 1]}"),
        ["'sigma'", "appears twice"]),
    "unknown base preset": (
        "base: ia-tpee\nparameters:\n  run.alignment_lr: {uniform: [0, 1]}\n",
        ["base", "unknown preset 'ia-tpee'", "ia-tpe"]),
    "base not a name": (
        "base: [ia-tpe]\nparameters:\n  run.alignment_lr: {uniform: [0, 1]}\n",
        ["base", "unknown preset"]),
    "float batch choice": (
        "parameters:\n  run.batch_size: {choice: [16.0, 32.0]}\n",
        ["batch_size", "integer"]),
    "uniform batch size": (
        "parameters:\n  run.batch_size: {uniform: [16, 64]}\n",
        ["batch_size", "integer"]),
    "invalid value in a later option": (
        "parameters:\n  run.batch_size: {choice: [16, 0]}\n",
        ["batch_size", "must be an integer in [1, 1048576], got 0"]),
}


@pytest.mark.parametrize("case", sorted(YAML_ERRORS))
def test_yaml_space_errors_name_the_node(tmp_path, case):
    text, fragments = YAML_ERRORS[case]
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_space(str(path), BUDGET)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_noise_fragment_is_valid():
    # the nested error cases above break this valid file in one place each
    space = parse_space(NOISE_CHILD, BUDGET)
    assert space.labels() == ("noise", "sigma")
    assert space.config({"noise": True, "sigma": 0.5}).rule.noise.stddev == 0.5
    assert space.config({"noise": False}).rule.noise is None


def test_malformed_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "name: x\nparameters:\n\trun.alignment_lr: {uniform: [0, 1]}\n")
    with pytest.raises(ValueError) as err:
        load_space(str(path), BUDGET)
    message = str(err.value)
    assert str(path) in message and "malformed YAML" in message
    assert re.search(r"line 3\b", message), message
    with pytest.raises(ValueError, match=r"malformed YAML at line \d+"):
        parse_space("parameters:\n  x: {uniform: [0, 1]\n", BUDGET)


def test_missing_space_file_names_the_path(tmp_path):
    path = tmp_path / "absent.yaml"
    for call in (lambda: load_space(str(path), BUDGET), lambda: load_space_file(path, BUDGET)):
        with pytest.raises(ValueError) as err:
            call()
        assert str(path) in str(err.value)


# --- description -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*PAPER_SPACES, "yaml"])
def test_describe_mentions_every_parameter_and_the_budget(name):
    space = parse_space(VALID_YAML, BUDGET) if name == "yaml" else paper_space(name, BUDGET)
    text = space.describe()
    for label in space.labels():
        assert re.search(rf"^\s*- {re.escape(label)}: ", text, re.M), label
    assert space.describe_budget() in text and "10 epochs per trial" in text
    assert space.name in text
    # YAML spaces take batch sizes as written: the budget's divisor is not claimed for them.
    assert ("batch choices {16, 32, 64, 128}" in text) == (name != "yaml")
    if name != "yaml":
        assert "rule.weights.amp = amp_decay_ratio · decay" in text
        assert "log-uniform [1e-11, 1e+07]" in text
    else:
        assert "when noise = true" in text and "rule.noise.stddev" in text


def test_nodes_reject_bad_definitions():
    with pytest.raises(ValueError, match="'x'"):
        Uniform("x", None, 1.0, 1.0)
    with pytest.raises(ValueError, match="'c'"):
        Choice("c", None, ())
    with pytest.raises(ValueError, match="appears twice"):
        Space(
            name="dup", nodes=(Uniform("x", None, 0, 1), Uniform("x", None, 0, 1)),
            base={}, budget=BUDGET, source={})


# --- no TensorFlow ---------------------------------------------------------------------------

def test_log_uniform_samples_stay_within_tolerance():
    # exp(log(x)) may leave the bounds by a few ulps; check accepts that, not more
    space = paper_space("ia", BUDGET)
    top = {**_ia_params(), "decay": 1e7 * (1 + 1e-12)}
    assert space.check_params(top)["decay"] == top["decay"]
    with pytest.raises(ValueError, match="'decay'"):
        space.check_params({**_ia_params(), "decay": 1e7 * (1 + 1e-6)})
    assert math.isclose(space.config(top).rule.weights["amp"], 10.0 * top["decay"])


def test_sampling_never_changes_the_space():
    space = load_space("ia", default_budget("digits"))
    before = space.fingerprint()
    params = {"noise": True, "sigma": 0.3, "amp_decay_ratio": 2.0, "decay": 1e-3,
              "batch_size": 16, "alignment_lr": 1e-3, "delay_epochs": 0, "alternate": True,
              "null": 1e-4, **{name: False for name in PathOps.names()}}
    assert space.config(params).rule.noise.stddev == 0.3
    assert space.fingerprint() == before
    off = {k: v for k, v in params.items() if k != "sigma"} | {"noise": False}
    assert space.config(off).rule.noise is None
    assert space.fingerprint() == before

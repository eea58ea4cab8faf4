"""YAML spaces within limits: a hostile file (deep, huge, repetitive, ambiguous) is a clear
ValueError within a second, never a RecursionError, a hang or a silently dropped parameter."""

from __future__ import annotations

import time

import pytest

from localrules.spaces import default_budget, parse_space
from localrules.spaces.nodes import MAX_OPTIONS, Choice, Option, Uniform, check_tree
from localrules.spaces.yaml_space import MAX_BYTES

BUDGET = default_budget("synthetic")


def refused(text: str, *fragments: str) -> str:
    started = time.monotonic()
    with pytest.raises(ValueError) as err:
        parse_space(text, BUDGET, origin="space.yaml")
    assert time.monotonic() - started < 1.0
    message = str(err.value)
    assert message.startswith("space.yaml: ")
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("text", [
    "parameters:\n  x: " + "[" * 400 + "]" * 400 + "\n",
    "parameters:\n  x: " + "{a: " * 400 + "1" + "}" * 400 + "\n",
    "parameters: " + "{x: {key: null, choice: [{value: 1, parameters: " * 100
    + "{y: {uniform: [0, 1]}}" + "}]}}" * 100 + "\n",
    "[" * 20_000 + "]" * 20_000,
])
def test_a_400_deep_nesting_is_refused_quickly(text):
    refused(text, "nested more than 32 levels deep")


def test_a_200000_option_choice_is_refused_quickly():
    options = ", ".join(str(i) for i in range(200_000))
    refused(f"parameters:\n  x: {{key: null, choice: [{options}]}}\n", f"at most {MAX_BYTES}")
    compact = ",".join("1" for _ in range(30_000))  # within the size limit: the value count
    refused(f"parameters:\n  x: {{key: null, choice: [{compact}]}}\n", "more than 2000 values")
    several = ", ".join(str(i) for i in range(MAX_OPTIONS + 1))
    refused(f"parameters:\n  x: {{key: null, choice: [{several}]}}\n",
            f"more than {MAX_OPTIONS} options in all")


def test_an_alias_bomb_is_refused_while_it_is_read():
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, previous in zip("bcdefgh", "abcdefg", strict=True):
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]\n"
    refused(text + "parameters: {x: {uniform: [0, 1]}}\n", "more than 2000 values")


def test_a_repeated_key_is_refused_not_silently_dropped():
    refused("parameters:\n  run.alignment_lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
            "  run.alignment_lr: {uniform: [0.1, 1.0]}\n",
            "found the key 'run.alignment_lr' twice", "line 3")
    refused("parameters:\n  x: {key: null, uniform: [0, 1], uniform: [0, 2]}\n", "twice")


def test_two_parameters_setting_one_config_key_are_refused():
    refused("parameters:\n  a: {key: run.alignment_lr, loguniform: [1.0e-4, 1.0e-2]}\n"
            "  b: {key: run.alignment_lr, uniform: [0.1, 1.0]}\n",
            "parameter 'a' and parameter 'b' both set config key 'run.alignment_lr'")
    refused("parameters:\n  run.alignment_lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
            "  flag:\n    key: null\n    choice:\n      - value: true\n"
            "        set: {run.alignment_lr: 0.1}\n      - false\n",
            "both set config key 'run.alignment_lr'")


@pytest.mark.parametrize("text", ["parameters:\n  seed: {int: [0, 10]}\n",
                                  "parameters: {x: {uniform: [0, 1]}}\nfixed: {seed: 3}\n"])
def test_a_space_cannot_set_the_seed_each_trial_gets(text):
    refused(text, "'seed' is set per trial from the search's seed")


def test_one_key_in_exclusive_branches_is_fine():
    space = parse_space(
        "parameters:\n  branch:\n    key: null\n    choice:\n"
        "      - value: slow\n        parameters: {a: {key: run.alignment_lr, "
        "loguniform: [1.0e-4, 1.0e-3]}}\n"
        "      - value: fast\n        parameters: {b: {key: run.alignment_lr, "
        "loguniform: [1.0e-3, 1.0e-2]}}\n", BUDGET)
    assert space.labels() == ("branch", "a", "b")


def test_the_same_key_check_guards_every_space_not_only_yaml():
    with pytest.raises(ValueError, match=r"both set config key 'rule\.noise\.stddev'"):
        check_tree((Uniform("s", "rule.noise.stddev", 0.0, 1.0),
                    Choice("c", None, (Option(True, (Uniform("t", "rule.noise.stddev", 0, 1),)),
                                       Option(False)))))


@pytest.mark.parametrize(("text", "fragment"), [
    ("parameters:\n  x: {key: null, uniform: [-1.0e308, 1.0e308]}\n", "bounds must be numbers"),
    ("parameters:\n  x: {key: null, uniform: [0, .inf]}\n", "bounds must be numbers"),
    ("parameters:\n  x: {key: null, int: [0, " + "9" * 30 + "]}\n", "bounds must be numbers"),
    ("parameters:\n  x: {key: null, choice: [.nan, 1]}\n", "must be a finite number"),
    ("parameters:\n  x: {key: null, choice: [" + "9" * 30 + ", 1]}\n", "must be a finite number"),
    ("parameters:\n  run.batch_size: {choice: [16, 4294967296]}\n",
     "batch_size must be an integer in [1, 1048576]"),
    ("parameters:\n  run.epochs: {int: [1, 100000]}\n", "epochs must be an integer in [1, 10000]"),
    ("base: wm-tpe\nparameters:\n  rule.weights.amp.x: {uniform: [0, 1]}\n",
     "cannot set 'rule.weights.amp.x': rule.weights.amp is not a section"),
    ("parameters:\n  weight_samples: {int: [0, 4294967296]}\n",
     "weight_samples must be an integer in [0, 16777216]"),
    ("parameters:\n  x: {key: null, uniform: [0, 1]}\nwarm_start:\n  - {x: .nan}\n",
     "must be a number in [0, 1]"),
    ("parameters:\n  x: {key: null, uniform: [0, 1]}\nfixed: {run.epochs: .inf}\n",
     "epochs must be an integer"),
    ("parameters:\n  x: {key: null, uniform: [0, 1]}\nfixed: {width: 100000}\n",
     "width must be an integer in [1, 4096]"),
])
def test_absurd_numbers_in_a_space_are_refused(text, fragment):
    refused(text, fragment)


def test_the_papers_ranges_still_load():
    from localrules.spaces import PAPER_SPACES, load_space

    for name in PAPER_SPACES:
        assert load_space(name, default_budget("imagenet")).labels()


def test_a_space_file_that_is_a_pipe_huge_or_not_text_is_refused_before_it_is_read(tmp_path):
    import os

    from localrules.spaces import load_space

    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)  # reading it would block for ever
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(10**9)  # sparse: a gigabyte that is never read
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"parameters: \xff\xfe\n")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    for path, fragment in ((pipe, "not a regular file"), (huge, "1000000000 bytes"),
                           (binary, "not UTF-8 text"), (folder, "not a regular file"),
                           (tmp_path / "gone.yaml", "no such file")):
        started = time.monotonic()
        with pytest.raises(ValueError, match=fragment):
            load_space(str(path), BUDGET)
        assert time.monotonic() - started < 1.0


def test_warm_starts_are_bounded():
    points = "".join("  - {x: 0.5}\n" for _ in range(65))
    refused("parameters: {x: {key: null, uniform: [0, 1]}}\nwarm_start:\n" + points,
            "warm_start must be a list of 1 to 64 parameter mappings")

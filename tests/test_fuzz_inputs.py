"""Property-based tests of the input boundaries: numeric flags, stored configs, YAML spaces.

Whatever a user types or a store holds, the answer is a valid value or a ValueError (exit 2 on
the command line) — never another exception, a hang, or a value outside its limit."""

from __future__ import annotations

import argparse
import json
import math
import time

import pytest
import yaml
from fuzzing import (
    HOSTILE_YAML_TEXT,
    JSON_VALUES,
    NUMBER_TEXT,
    YAML_VALUES,
    mutated_mapping,
)
from hypothesis import given
from hypothesis import strategies as st

from localrules.cli.main import build_parser, main
from localrules.config import TrialConfig, apply_overrides, config_from_preset
from localrules.search.settings import SearchSettings
from localrules.spaces import Budget, Space, default_budget, parse_space

pytestmark = pytest.mark.fuzz


def _numeric_flags() -> list[tuple[str, str, argparse.Action]]:
    found = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
            elif hasattr(action.type, "limit"):
                found.append((prefix, action.option_strings[-1], action))

    walk(build_parser(), "")
    return found


NUMERIC_FLAGS = _numeric_flags()
SEARCH_FLAGS = [f for c, f, _ in NUMERIC_FLAGS if c == "search"]


# --- (a) numeric flags ---------------------------------------------------------------------------
@given(st.sampled_from(NUMERIC_FLAGS), NUMBER_TEXT)
def test_every_numeric_flag_gives_a_bounded_number_or_a_usage_error(flag, text):
    _command, _name, action = flag
    limit = action.type.limit
    try:
        value = action.type(text)
    except argparse.ArgumentTypeError as err:
        assert "must be" in str(err)
        return
    assert isinstance(value, int if limit.integer else float) and not isinstance(value, bool)
    assert math.isfinite(value) and limit.contains(value)


@given(st.sampled_from(SEARCH_FLAGS), NUMBER_TEXT)
def test_search_flags_end_to_end_exit_0_or_2_and_write_nothing(tmp_path_factory, flag, text):
    """Through the real CLI (``--show-space``: everything is checked, nothing run)."""
    folder = tmp_path_factory.mktemp("search")
    db = folder / "s.db"
    code = main(["search", "--space", "wm", "--experiment", "x", "--db", f"sqlite:///{db}",
                 "--artifacts", str(folder / "artifacts"), "--show-space", f"{flag}={text}"])
    assert code in (0, 2)
    assert list(folder.iterdir()) == []


@given(st.sampled_from(["--lease", "--poll", "--idle-exit", "--max-trials"]), NUMBER_TEXT)
def test_worker_flags_end_to_end_refuse_before_the_store(tmp_path_factory, flag, text):
    folder = tmp_path_factory.mktemp("worker")
    parser_ok = True
    try:
        build_parser().parse_args(["worker", f"{flag}={text}"])
    except SystemExit:
        parser_ok = False
    if parser_ok:
        return  # an accepted value would start a worker: the parse-level test covers it
    assert main(["worker", "--db", f"sqlite:///{folder / 'w.db'}", f"{flag}={text}",
                 "--spool", str(folder / "spool")]) == 2
    assert list(folder.iterdir()) == []


@given(st.sampled_from(["run.epochs", "run.batch_size", "seed", "width", "run.task_lr",
                        "rule.weights.decay", "run.drop_epochs", "update_noise.task_variance"]),
       NUMBER_TEXT)
def test_set_overrides_give_a_config_or_a_value_error(key, text):
    data = config_from_preset("wm-tpe").to_dict()
    try:
        config = TrialConfig.from_dict(apply_overrides(data, [f"{key}={text}"]))
    except ValueError:
        return
    json.dumps(config.to_dict(), allow_nan=False)  # what a store keeps: strict JSON


# --- (b) stored configs -------------------------------------------------------------------------
VALID_CONFIG = default_budget("imagenet").preset_config("ia-tpe", seed=2**32 - 1).to_dict()


def _strict_round_trip(config: TrialConfig) -> None:
    text = json.dumps(config.to_dict(), allow_nan=False)
    assert TrialConfig.from_json(text) == config


@given(mutated_mapping(VALID_CONFIG))
def test_a_mutated_stored_config_is_a_config_or_a_value_error(data):
    try:
        config = TrialConfig.from_dict(data)
    except ValueError:
        return
    _strict_round_trip(config)


@given(st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from(list(VALID_CONFIG)), JSON_VALUES)))
def test_any_json_is_a_config_or_a_value_error(data):
    try:
        config = TrialConfig.from_dict(data)
    except ValueError:
        return
    _strict_round_trip(config)


@given(mutated_mapping(SearchSettings().to_dict()))
def test_mutated_search_settings_are_settings_or_a_value_error(data):
    try:
        settings = SearchSettings.from_dict(data)
    except ValueError:
        return
    json.dumps(settings.to_dict(), allow_nan=False)
    assert settings.seed < 2**32


@given(mutated_mapping(default_budget("digits").to_dict()))
def test_a_mutated_budget_is_a_budget_or_a_value_error(data):
    try:
        budget = Budget.from_dict(data)
    except ValueError:
        return
    json.dumps(budget.to_dict(), allow_nan=False)


# --- (c) YAML spaces ----------------------------------------------------------------------------
BUDGET = default_budget("synthetic")
SECONDS = 3.0
"""Generous against a busy machine; each case takes well under a second alone."""


def _space_or_value_error(text: str) -> None:
    started = time.monotonic()
    try:
        space = parse_space(text, BUDGET, origin="fuzz.yaml")
    except ValueError as err:
        assert str(err).startswith("fuzz.yaml")
    else:
        assert isinstance(space, Space)
    assert time.monotonic() - started < SECONDS


@given(HOSTILE_YAML_TEXT)
def test_a_hostile_space_file_is_a_space_or_a_value_error_in_time(text):
    _space_or_value_error(text)


@given(YAML_VALUES)
def test_space_shaped_yaml_of_any_shape_is_a_space_or_a_value_error(data):
    _space_or_value_error(yaml.safe_dump(data, width=10**6))


@given(YAML_VALUES)
def test_yaml_values_under_parameters_are_a_space_or_a_value_error(data):
    _space_or_value_error(yaml.safe_dump({"parameters": data}, width=10**6))


# --- the query language (localrules trials --where) ------------------------------------------
QUERY_PIECES = st.sampled_from([
    "params.noise", "params.sigma", "result.top1", "state", "gap_closed", "created_at",
    "params.nosie", "__import__", "os.system", "==", "!=", "<=", ">", " in ", " not ", " and ",
    " or ", "(", ")", ",", "'", '"', "'done'", "true", "false", "null", "0.5", "-1e400", "1e5",
    "done", "'2026-12-01'", "\\", "=", ";", "$", ".", "\x00", " "])


@given(st.one_of(st.text(max_size=80), st.lists(QUERY_PIECES, max_size=14).map("".join)))
def test_any_filter_text_binds_or_is_refused_with_a_position(text):
    """Whatever is typed after --where: a bound filter, or a QuerySyntaxError (a ValueError:
    exit 2) — never another exception, and never anything evaluated."""
    from localrules.store.query.fields import BOOL, NUMBER, STRING, Catalog, bind
    from localrules.store.query.language import QuerySyntaxError

    catalog = Catalog({"params.noise": frozenset({BOOL}), "params.sigma": frozenset({NUMBER}),
                       "result.top1": frozenset({NUMBER}),
                       "params.mode": frozenset({STRING, NUMBER})},
                      lambda: ["params.noise", "params.sigma", "result.top1", "params.mode"])
    try:
        bind(text, catalog)
    except QuerySyntaxError as err:
        assert str(err).startswith("--where")

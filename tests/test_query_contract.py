"""The query contract: one filter, one semantics, on every backend.

The same trials go into SQLite and MongoDB (SecantusDB); every filter below, and a few hundred
generated ones, must select identical rows (experiment, trial id, in order) from the SQLite
WHERE clause, the MongoDB query, a pandas filter of the whole frame (``to_frame``) and the
Python evaluation of the documents (``plan.holds``): inactive parameters, nulls, mixed kinds,
booleans against numbers, negations, gap closed from references, rung results.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_store_contract import experiment_doc

from localrules.store import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    Trial,
)
from localrules.store.query import QuerySyntaxError
from localrules.store.query.plan import for_experiment, holds
from localrules.store.query.run import select
from localrules.store.query.to_frame import filter_frame
from localrules.store.references import reference_marker

EXPERIMENTS = ("qa", "qb")
STATES_CYCLE = (DONE, DONE, DONE, FAILED, QUEUED, RUNNING, CANCELLED, DONE)


def _trials(name: str, n: int, seed: int) -> list[Trial]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        state = STATES_CYCLE[i % len(STATES_CYCLE)]
        params: dict[str, Any] = {"noise": rng.random() < 0.5,
                                  "batch_size": rng.choice([16, 32, 64, 256]),
                                  "alternate": rng.random() < 0.5,
                                  "mode": rng.choice(["fast", "slow", 3, 2.5, True])}
        if params["noise"]:
            params["sigma"] = rng.choice([0.1, 0.5, 1.0, round(rng.random(), 3)])
        result = None
        if state == DONE:
            top1 = round(rng.uniform(0.1, 0.99), 4)
            result = {"objective": top1, "top1": top1, "diverged": rng.random() < 0.1,
                      "epochs": 3, "history": [{"epoch": 1}]}
            if rng.random() < 0.3:
                result.update(rung=0, stopped_early=True, trial_epochs=1)
            elif rng.random() < 0.2:
                result["objective"] = None  # a done trial without an objective
            if rng.random() < 0.2:
                result["note"] = rng.choice(["x", "y", 1, None])
        out.append(Trial(experiment=name, trial_id=i, config={}, params=params,
                         misc={"idxs": {}, "vals": {}}, state=state, result=result,
                         worker=None if state in (QUEUED, CANCELLED) else f"w{i % 3}",
                         error="boom" if state == FAILED else None, attempt=1 + i % 3,
                         created_at=1_767_225_600.0 + 3600 * i,
                         finished_at=1_767_225_600.0 + 3600 * i + 60 if state == DONE else None))
    return out


def _references(name: str, first: int) -> list[Trial]:
    out = []
    for j, (rule, objective) in enumerate((("bp", 0.95), ("fa", 0.55), ("bp", 0.97))):
        out.append(Trial(experiment=name, trial_id=first + j, config={}, params={},
                         misc={"idxs": {}, "vals": {}}, state=DONE,
                         result={"objective": objective, "top1": objective,
                                 "diverged": False, "epochs": 3},
                         reference=reference_marker(rule, j, f"key-{rule}-{j}")))
    return out


@pytest.fixture
def filled(store):
    """Two experiments: qa with bp and fa references (gap 0.41), qb without."""
    for k, name in enumerate(EXPERIMENTS):
        store.create_experiment(experiment_doc(name, settings={
            "seed": 1, "max_trials": 50, "references": ["bp", "fa"] if k == 0 else []}))
        store.allocate_trial_ids(name, 40)
        trials = _trials(name, 36, seed=k)
        if k == 0:
            trials += _references(name, 36)
        store.add_trials(trials)
    return store


FILTERS = [
    "params.noise == true",
    "params.noise",
    "not params.noise",
    "params.sigma > 0.4",
    "params.sigma != 0.5",
    "not params.sigma == 0.5",
    "not (params.sigma < 0.5 or params.batch_size == 16)",
    "not (params.sigma < 0.5 and params.batch_size == 16)",
    "params.batch_size != 256",
    "params.batch_size in (16, 32)",
    "params.batch_size not in (16, 32)",
    "params.mode == 'fast'",
    "params.mode == fast or params.mode == 3",
    "params.mode >= 2.6",
    "params.mode == true",
    "params.mode != 'fast'",
    "params.mode not in (fast)",
    "state in (done, failed)",
    "state != done",
    "result.top1 >= 0.5 and not params.alternate",
    "result.objective > 0.5",
    "not result.objective > 0.5",
    "result.gap_closed > 0.5",
    "gap_closed <= 0.25",
    "not gap_closed > 0.5",
    "gap_closed in (0.0, 1.0)",
    "full_budget",
    "not full_budget",
    "full_budget and result.diverged == false",
    "result.rung == 0",
    "result.stopped_early",
    "result.note == x",
    "result.note != x",
    "result.note == 1",
    "reference == bp",
    "reference != bp",
    "not reference in (bp)",
    "is_reference",
    "not is_reference and full_budget",
    "worker == w1 or error == boom",
    "worker != w1",
    "attempt >= 2 and trial_id < 20",
    "created_at >= '2026-01-01T05:00:00' and created_at < 1767250000",
    "finished_at > 0",
    "not finished_at > 1767300000",
    "experiment == qb",
    "(params.noise or params.alternate) and not (state == done or params.batch_size > 32)",
]


@pytest.fixture
def baseline(filled):
    """Every trial (documents and frame) with the experiments' references and field kinds:
    what the pandas and Python filters start from."""
    from localrules.store.query.fields import Catalog

    fields = ["params.noise", "params.sigma", "params.batch_size", "params.alternate",
              "params.mode", "result.top1", "result.objective", "result.diverged",
              "result.rung", "result.stopped_early", "result.note"]
    return (select(filled, EXPERIMENTS), filled.query(EXPERIMENTS),
            Catalog(filled.query_kinds(EXPERIMENTS, fields)))


def _expected(baseline, where: str | None) -> list[tuple[str, int]]:
    """The rows by the pandas filter of every trial and by Python on the documents."""
    from localrules.store.query.fields import EVERYTHING, bind

    chosen, frame, catalog = baseline
    node = EVERYTHING if where is None else bind(where, catalog)
    by_pandas = filter_frame(frame, node, chosen.references)
    pandas_rows = list(zip(by_pandas["experiment"], by_pandas["trial_id"], strict=True))
    python_rows = [(t.experiment, t.trial_id) for t in chosen.trials
                   if holds(for_experiment(node, chosen.references[t.experiment]), t)]
    assert pandas_rows == python_rows, where
    return python_rows


def test_every_backend_selects_the_same_rows(filled, baseline):
    wrong = []
    for where in FILTERS:  # one store for all: SecantusDB takes a second to fill one
        got = [(t.experiment, t.trial_id) for t in filled.select(EXPERIMENTS, where).trials]
        if got != _expected(baseline, where):
            wrong.append((where, got, _expected(baseline, where)))
    assert not wrong


def test_the_filters_are_not_trivial(filled):
    """Each filter above selects some trials and leaves some out (else it tests little)."""
    total = len(filled.select(EXPERIMENTS).trials)
    for where in FILTERS:
        n = len(filled.select(EXPERIMENTS, where).trials)
        assert 0 < n < total, (where, n, total)


def _generated(rng: random.Random, depth: int = 0) -> str:
    atoms = ["params.noise", "not params.alternate", "params.sigma > 0.3",
             "params.sigma != 0.1", "params.batch_size in (16, 64)", "params.mode < 3",
             "params.mode != slow", "state == done", "result.top1 >= 0.6",
             "gap_closed > 0.2", "full_budget", "result.note != 1", "reference == fa",
             "worker != w2", "params.batch_size <= 32", "is_reference"]
    if depth >= 3 or rng.random() < 0.35:
        return rng.choice(atoms)
    op = rng.choice([" and ", " or "])
    text = op.join(_generated(rng, depth + 1) for _ in range(rng.randint(2, 3)))
    return f"not ({text})" if rng.random() < 0.4 else f"({text})"


def test_generated_filters_agree(filled, baseline):
    rng = random.Random(17)
    for _ in range(60):
        where = _generated(rng)
        got = [(t.experiment, t.trial_id) for t in filled.select(EXPERIMENTS, where).trials]
        assert got == _expected(baseline, where), where


SORTS = ["objective", "top1", "gap_closed", "params.sigma", "params.mode", "state",
         "finished_at", "rung", "trial_id"]


def test_sort_and_limit_are_pushed_down_in_one_order(filled, baseline):
    where = "params.noise or state == done"
    expected = set(_expected(baseline, where))
    for sort in SORTS:
        for reverse in (False, True):
            _check_sort(filled, sort, reverse, where, expected)


def _check_sort(filled, sort: str, reverse: bool, where: str,
                expected: set[tuple[str, int]]) -> None:
    every = filled.select(EXPERIMENTS, sort=sort, reverse=reverse).trials
    assert len(every) == len(filled.select(EXPERIMENTS).trials)
    for limit in (1, 17):  # inside the first group, and across groups
        top = filled.select(EXPERIMENTS, sort=sort, reverse=reverse, limit=limit).trials
        assert [(t.experiment, t.trial_id) for t in top] == \
            [(t.experiment, t.trial_id) for t in every[:limit]]
    some = filled.select(EXPERIMENTS, where, sort=sort, reverse=reverse, limit=7).trials
    want = [t for t in every if (t.experiment, t.trial_id) in expected]
    assert [(t.experiment, t.trial_id) for t in some] == \
        [(t.experiment, t.trial_id) for t in want[:7]]


def test_pages_are_the_full_order_cut_by_offset_and_limit(filled):
    """Skipped by the database within one experiment (whole groups by their count, then rows),
    cut after merging across experiments: every page equals the full order's slice."""
    for names in (EXPERIMENTS[:1], EXPERIMENTS):
        for sort, reverse in ((None, False), ("trial_id", True), ("objective", False),
                              ("gap_closed", True), ("params.sigma", False), ("state", True)):
            every = [(t.experiment, t.trial_id)
                     for t in filled.select(names, sort=sort, reverse=reverse).trials]
            for offset in (0, 1, 6, 20, 38, len(every), len(every) + 3):
                for limit in (None, 1, 7):
                    page = filled.select(names, sort=sort, reverse=reverse, limit=limit,
                                         offset=offset).trials
                    end = None if limit is None else offset + limit
                    assert [(t.experiment, t.trial_id) for t in page] == every[offset:end], \
                        (names, sort, reverse, offset, limit)


@pytest.mark.parametrize("offset", [-1, 1.5, True, "3"])
def test_a_bad_offset_is_refused(filled, offset):
    with pytest.raises(ValueError, match="offset: a count >= 0"):
        filled.select(EXPERIMENTS, offset=offset)


def test_a_limit_of_0_selects_nothing(filled):
    assert filled.select(EXPERIMENTS, sort="objective", limit=0).trials == []
    assert filled.select(EXPERIMENTS, limit=0).trials == []


def test_scores_put_full_budget_results_first_best_first(filled):
    ranked = filled.select(EXPERIMENTS, sort="objective").trials
    from localrules.store.documents import full_budget_trial

    flags = [full_budget_trial(t) for t in ranked]
    first_rung = flags.index(False)
    assert all(flags[:first_rung]) and not any(flags[first_rung:])
    scores = [t.result["objective"] for t in ranked[:first_rung]]
    assert scores == sorted(scores, reverse=True)


def test_the_frame_has_typed_columns_and_the_union_of_experiments(filled):
    import pandas as pd

    frame = filled.query(EXPERIMENTS, where="state == done")
    assert set(frame["experiment"]) == set(EXPERIMENTS)
    assert str(frame["params.noise"].dtype) == "boolean"
    assert str(frame["params.batch_size"].dtype) == "Int64"
    assert frame["params.sigma"].dtype == "float64"
    assert frame["params.mode"].dtype == object  # text, numbers and booleans
    assert str(frame["state"].dtype) == "string"
    assert isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype)
    qa = frame[frame["experiment"] == "qa"]
    qb = frame[frame["experiment"] == "qb"]
    assert qa["gap_closed"].notna().any() and qb["gap_closed"].isna().all()
    some = filled.query(EXPERIMENTS, where="full_budget", columns=["experiment", "trial_id",
                                                                   "result.gap_closed",
                                                                   "params.sigma"])
    assert list(some.columns) == ["experiment", "trial_id", "gap_closed", "params.sigma"]


@pytest.mark.parametrize("where, message", [
    ("params.nosie == true", "unknown field 'params.nosie'.*params.noise"),
    ("params.noise == 1", "holds booleans, not numbers"),
    ("params.batch_size == '16'", "holds numbers, not text"),
    ("params.noise > false", "only equal or not"),
    ("params.sigma", "a bare field is a truth test"),
    ("state == runing", "unknown state 'runing'"),
    ("result.history == 1", "holds no number, text or boolean"),
    ("created_at > 'yesterday'", "is a time"),
    ("__import__('os').system('true')", "position"),
    ("params.noise.__class__ == 1", "one name after the dot"),
    ("params.noise == true and", "position 25"),
    ("params.batch_size > 99999999999999999999", "beyond 64-bit"),
    ("params.sigma > 1e999", "not a finite number"),
    ("params.noise = true", "compare with '=='"),
    ("params.noise == null", "not a value"),
    ("params.sigma > params.decay", "not another field"),
    ("params.noise == \"it's\"", "a string runs"),
])
def test_bad_filters_are_refused_naming_the_position_and_nothing_is_run(filled, where,
                                                                        message):
    with pytest.raises(QuerySyntaxError, match=message):
        filled.select(EXPERIMENTS, where)


def test_a_missing_experiment_among_several_is_named(filled):
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        filled.query(["qa", "nope", "qb"])

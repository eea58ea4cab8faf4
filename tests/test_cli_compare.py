"""``localrules experiments --compare A B …``: the named experiments side by side, one row each
in the order given, with figures of their search trials only (reference runs left out), the
top decile's median of the full-budget results, and the gap closed against bp and fa. A name
the database lacks is bad input (exit 2, nothing printed); the database is only read."""

from __future__ import annotations

import json
import os
import statistics

import pytest

from localrules.cli.main import main
from localrules.store import Experiment, Trial, TrialStore, open_store
from localrules.store.documents import HistoryEntry, top_decile_median
from localrules.store.references import reference_marker, references_of
from localrules.store.summary import NO_RESULT, search_summary

BP, FA = 0.9, 0.5
FULL = [0.55, 0.81, 0.60, 0.70, 0.79, 0.52, 0.65, 0.58, 0.61, 0.66, 0.77, 0.50]
"""Twelve full-budget results: the top ceil(12 / 10) = 2 are 0.81 and 0.79, median 0.80."""
PAUSED = 0.95
"""Two rung results above every full-budget one (and above bp): never the best."""
PLAIN = [0.40, 0.45, 0.42]
"""Three full-budget results: the top ceil(3 / 10) = 1 is 0.45."""


def _done(name: str, trial_id: int, objective: float, epochs: int, **extra) -> Trial:
    result = {"objective": objective, "top1": objective, "diverged": False, "epochs": epochs,
              "trial_epochs": epochs, **extra.pop("result", {})}
    return Trial(name, trial_id, {}, {"x": objective}, {"idxs": {}, "vals": {}},
                 state="done", attempt=1, result=result, **extra)


def _fill(store: TrialStore) -> None:
    """``refs``: bp and fa references (10 epochs each, both above most search results), twelve
    full-budget trials of 10 epochs, two paused at rung 0 after 1 epoch, one queued and one
    failed. ``plain``: no references asked for, three full-budget trials of 5 epochs and one
    cancelled."""
    store.create_experiment(Experiment(
        "refs", "wm-ad", {"paper": "wm-ad"}, "f", {"epochs": 10},
        {"references": ["bp", "fa"], "fidelity": {"kind": "asha"}, "max_trials": 20}))
    ids = iter(store.allocate_trial_ids("refs", 2 + len(FULL) + 4))
    trials = [_done("refs", next(ids), score, 10,
                    reference=reference_marker(rule, 0, f"key-{rule}"))
              for rule, score in (("bp", BP), ("fa", FA))]
    trials += [_done("refs", next(ids), score, 10) for score in FULL]
    trials += [_done("refs", next(ids), PAUSED, 1,
                     result={"stopped_early": True, "rung": 0},
                     fidelity={"bracket": 0, "rung": 0, "epochs": 1}) for _ in range(2)]
    trials += [Trial("refs", next(ids), {}, {}, {"idxs": {}, "vals": {}}),
               Trial("refs", next(ids), {}, {}, {"idxs": {}, "vals": {}}, state="failed",
                     attempt=1, error="boom")]
    store.add_trials(trials)
    store.create_experiment(Experiment("plain", "ia", {"paper": "ia"}, "g", {"epochs": 5}))
    ids = iter(store.allocate_trial_ids("plain", len(PLAIN) + 1))
    store.add_trials([*(_done("plain", next(ids), score, 5) for score in PLAIN),
                      Trial("plain", next(ids), {}, {}, {"idxs": {}, "vals": {}},
                            state="cancelled")])


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/compare.db"
    with open_store(url) as store:
        _fill(store)
    return url


def _check_refs(row: dict) -> None:
    assert row["name"] == "refs" and row["space"] == "wm-ad" and row["fidelity"] == "asha"
    # the references are not search trials: not counted, not the best, no epochs spent
    assert row["counts"] == {"queued": 1, "running": 0, "done": 14, "failed": 1,
                             "cancelled": 0}
    assert row["full_budget_trials"] == 12 and row["paused"] == 2
    assert row["trial_epochs"] == 12 * 10 + 2 * 1
    assert row["best_objective"] == 0.81 and row["best_trial"] == 3
    assert row["top_decile_median"] == pytest.approx(0.80)
    assert row["best_gap_closed"] == pytest.approx((0.81 - FA) / (BP - FA))
    assert row["best_gap_closed_reason"] is None and row["gap_reason"] is None
    assert row["reference_objectives"] == {"bp": BP, "fa": FA}
    assert row["references"]["bp"] == {"objective": BP, "sem": None, "n": 1}
    assert row["max_trials"] == 20


def _check_plain(row: dict) -> None:
    assert row["name"] == "plain" and row["space"] == "ia" and row["fidelity"] == "none"
    assert row["counts"] == {"queued": 0, "running": 0, "done": 3, "failed": 0,
                             "cancelled": 1}
    assert row["full_budget_trials"] == 3 and row["paused"] == 0
    assert row["trial_epochs"] == 15
    assert row["best_objective"] == 0.45 and row["top_decile_median"] == 0.45
    assert row["best_gap_closed"] is None
    assert "no bp reference" in row["best_gap_closed_reason"]
    assert row["reference_objectives"] == {"bp": None, "fa": None}
    assert row["references"] == {}


def test_compare_json_in_the_order_given_on_every_backend(store_url, capsys):
    with open_store(store_url) as store:
        _fill(store)
    assert main(["experiments", "--db", store_url, "--compare", "refs", "plain", "refs",
                 "--format", "json"]) == 0
    refs, plain = json.loads(capsys.readouterr().out)  # a duplicate name comes once
    _check_refs(refs)
    _check_plain(plain)
    assert main(["experiments", "--db", store_url, "--compare", "plain", "refs",
                 "--format", "json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["plain", "refs"]


def test_compare_table(db, capsys):
    assert main(["experiments", "--db", db, "--compare", "refs", "plain"]) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["experiment", "queued", "running", "done", "failed",
                              "cancelled", "best", "top-10%", "median", "gap", "closed", "bp",
                              "fa", "trial-epochs", "paused", "fidelity", "space"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert [r.split() for r in rows] == [
        ["refs", "1", "0", "14", "1", "0", "0.81", "0.8", "0.775", "0.9", "0.5", "122", "2",
         "asha", "wm-ad"],
        ["plain", "0", "0", "3", "0", "1", "0.45", "0.45", "-", "-", "-", "15", "0", "none",
         "ia"],
    ]


def test_the_listing_shares_the_rows(db, capsys):
    """Without --compare every experiment, by name, with the same row and the new columns."""
    assert main(["experiments", "--db", db, "--format", "json"]) == 0
    plain, refs = json.loads(capsys.readouterr().out)
    _check_refs(refs)
    _check_plain(plain)
    assert refs["created_at"].endswith("+00:00")  # ISO text, as before
    assert main(["experiments", "--db", db]) == 0
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert "top-10% median" in header and header.split()[-2:] == ["max", "created"]
    assert [r.split()[0] for r in rows] == ["plain", "refs"]
    assert rows[1].split()[6:8] == ["0.81", "0.8"]


def _file(url: str) -> tuple[bytes, int]:
    path = url[len("sqlite:///"):]
    return open(path, "rb").read(), os.stat(path).st_mtime_ns


def test_a_missing_experiment_is_bad_input_and_nothing_is_written(db, capsys):
    before = _file(db)
    assert main(["experiments", "--db", db, "--compare", "refs", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no experiment 'nope'" in captured.err
    assert "experiments: plain, refs" in captured.err
    assert main(["experiments", "--db", db, "--compare", "refs", "plain"]) == 0
    assert capsys.readouterr().out
    assert _file(db) == before  # same bytes, same mtime
    # SQLite's reader of a WAL database may leave its side files, but nothing in the log
    wal = db[len("sqlite:///"):] + "-wal"
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0


def test_compare_needs_a_name(db, capsys):
    assert main(["experiments", "--db", db, "--compare"]) == 2
    assert capsys.readouterr().out == ""


# --- the statistics, pure ----------------------------------------------------------------------

def _entries(objectives, **extra) -> list[HistoryEntry]:
    return [HistoryEntry(i, "done", {}, {"objective": v, "epochs": 1, **extra})
            for i, v in enumerate(objectives)]


@pytest.mark.parametrize(("objectives", "expected"), [
    ([], None),
    ([0.3], 0.3),
    ([0.1 * i for i in range(10)], 0.9),  # ceil(10 / 10) = 1
    ([0.1 * i for i in range(11)], statistics.median([1.0, 0.9])),  # ceil(11 / 10) = 2
    ([i / 25 for i in range(25)], 23 / 25),  # the top 3: 24, 23, 22
])
def test_top_decile_median(objectives, expected):
    got = top_decile_median(_entries(objectives))
    assert got == (None if expected is None else pytest.approx(expected))


def test_the_top_decile_leaves_out_references_rung_results_and_unfinished_trials():
    entries = _entries([0.5, 0.6])
    entries += _entries([0.99], stopped_early=True, rung=0)
    entries += [HistoryEntry(7, "done", {}, {"objective": 0.98},
                             reference=reference_marker("bp", 0, "k")),
                HistoryEntry(8, "running", {}, {"objective": 0.97})]
    assert top_decile_median(entries) == 0.6


def test_no_gap_closed_without_a_full_budget_result():
    refs = [HistoryEntry(0, "done", {}, {"objective": BP},
                         reference=reference_marker("bp", 0, "b")),
            HistoryEntry(1, "done", {}, {"objective": FA},
                         reference=reference_marker("fa", 0, "f"))]
    summary = search_summary(refs, references_of(refs, ("bp", "fa")))
    assert summary["best_objective"] is None and summary["top_decile_median"] is None
    assert summary["best_gap_closed"] is None and summary["best_gap_closed_reason"] == NO_RESULT
    assert summary["trial_epochs"] == 0 and sum(summary["counts"].values()) == 0

"""What the readers make of a multi-fidelity search (issue 17): a trial paused at a lower rung
is never the best, has no gap closed, is left out of the importance analysis, and is shown
apart; the trial-epochs spent add up; ``report progress --x trial-epochs`` puts every result
where the search had spent that many epochs when it finished."""

from __future__ import annotations

import csv
import io
import itertools
import json

import pytest

from localrules.analysis.importance import experiment_data, experiment_importance
from localrules.analysis.plots import progress_figure
from localrules.analysis.progress import epoch_curve, experiment_progress
from localrules.cli.main import main
from localrules.cli.trials_cmd import leaderboard
from localrules.results import at_rung
from localrules.search import Controller, SearchSettings, TpeSettings, open_experiment
from localrules.search.fidelity import Fidelity
from localrules.spaces import default_budget, load_space
from localrules.store import Trial, open_store
from localrules.store.documents import best_objective
from localrules.store.references import references_of

RUNGS = (1, 3, 9, 10)  # ASHA from 1 epoch, η = 3, on the digits budget's 10 epochs
BP, FA = 0.9, 0.5


def planted(params) -> float:
    """A full-budget objective: input noise on is worth +0.2."""
    return 0.4 + 0.2 * params["noise"] + 0.01 * (params["batch_size"] == 16)


def paused_objective(params) -> float:
    """A rung objective planted against the full-budget effect and above every full-budget
    result, so a reader that ranked it, or analysed it, would show it."""
    return 0.95 - 0.3 * params["noise"]


def asha_store(url: str, n: int = 24, name: str = "mf") -> dict[int, int]:
    """An ASHA search of ``n`` trials through the store's own moves (reserve, complete,
    promote): trials whose id is divisible by 3 train the full budget (rung by rung), the others
    pause at rung 0 or 1 (even / odd ids); each rung result stamped by a clock that ticks
    once per result, so the order they finished is known. bp and fa references finished.
    Returns each search trial's rung at the end (3: full budget)."""
    space = load_space("wm-ad", default_budget("digits"))
    settings = SearchSettings(max_trials=n, concurrency=n, fidelity=Fidelity("asha"),
                              warm_start=False,
                              tpe=TpeSettings(n_startup_jobs=n), references=("bp", "fa"))
    clock = itertools.count(1_000)
    final: dict[int, int] = {}
    with open_store(url) as store:
        c = Controller(store, open_experiment(store, name, space, settings), space, settings)
        from localrules.search.references import new_reference_trials

        store.add_trials(new_reference_trials(store, name, space.budget, settings))
        while (ref := store.reserve("w", 60)) is not None:
            store.complete(name, ref.trial_id, ref.attempt,
                           {"objective": {"bp": BP, "fa": FA}[ref.reference["rule"]],
                            "epochs": 10, "trial_epochs": 10})
        c.step()
        target = {}
        for rung in range(len(RUNGS)):
            while (t := store.reserve("w", 60)) is not None:
                assert t.fidelity["rung"] == rung
                target.setdefault(t.trial_id, 3 if t.trial_id % 3 == 0 else t.trial_id % 2)
                full = rung == len(RUNGS) - 1
                objective = planted(t.params) if full else paused_objective(t.params)
                result = at_rung({"objective": objective, "top1": objective, "diverged": False,
                                  "epochs": RUNGS[rung]}, t.fidelity, t.result, 10,
                                 finished_at=float(next(clock)))
                assert result["stopped_early"] == (not full)
                store.complete(name, t.trial_id, t.attempt, result)
                final[t.trial_id] = rung
            for trial in store.trials(name, ["done"]):
                if trial.reference is None and target[trial.trial_id] > rung:
                    assert store.promote(name, trial.trial_id, trial.attempt,
                                         {"bracket": 0, "rung": rung + 1,
                                          "epochs": RUNGS[rung + 1]})
    return final


@pytest.fixture()
def mf(tmp_path):
    url = f"sqlite:///{tmp_path}/mf.db"
    return url, asha_store(url)


def test_the_frame_has_the_fidelity_columns_and_gap_closed_only_at_full_budget(mf):
    url, final = mf
    with open_store(url, create=False) as store:
        frame = store.query("mf")
    assert {"rung", "stopped_early", "full_budget", "trial_epochs"} <= set(frame.columns)
    assert "result.rungs" not in frame.columns and "result.rung" in frame.columns
    search = frame[frame.reference.isna()].set_index("trial_id")
    for trial_id, rung in final.items():
        row = search.loc[trial_id]
        assert row.rung == rung and row.trial_epochs == RUNGS[rung]
        assert bool(row.full_budget) == (rung == 3) and bool(row.stopped_early) == (rung < 3)
        if rung == 3:
            assert row.gap_closed == pytest.approx((row["result.objective"] - FA) / (BP - FA))
        else:  # a rung objective against full-budget references is no gap
            assert row.gap_closed is None or row.gap_closed != row.gap_closed
    refs = frame[frame.reference.notna()]
    assert refs.full_budget.all() and (refs.trial_epochs == 10).all()


def test_a_paused_trial_is_never_the_best(mf):
    url, final = mf
    with open_store(url, create=False) as store:
        trials = store.trials("mf")
        ranked = [t for t in store.select("mf", sort="objective").trials
                  if t.reference is None]
        worst_first = [t for t in store.select("mf", sort="objective", reverse=True).trials
                       if t.reference is None]
    best = best_objective(trials)
    assert final[best.trial_id] == 3
    assert max(t.objective for t in trials if t.reference is None) > best.objective
    full = sum(rung == 3 for rung in final.values())
    assert all(final[t.trial_id] == 3 for t in ranked[:full])  # full-budget results first
    assert all(final[t.trial_id] < 3 for t in ranked[full:])
    # worst first: still full-budget first
    assert {t.trial_id for t in worst_first[:full]} == {t.trial_id for t in ranked[:full]}
    assert [t.objective for t in worst_first[:full]] == sorted(t.objective for t in ranked[:full])
    board = leaderboard(trials, references_of(trials), limit=100)
    ranked_ids = [int(line.split()[0]) for line in board.splitlines()
                  if line.split() and line.split()[0].isdigit()]
    assert sorted(ranked_ids) == sorted(i for i, r in final.items() if r == 3)
    paused = len(final) - full
    assert f"paused at a lower rung (rung results, not ranked): {paused}" in board
    spent = sum(RUNGS[r] for r in final.values())
    assert f"trial-epochs spent: {spent}; best full-budget objective so far: " \
           f"{best.objective:.4f} (trial {best.trial_id}" in board


def test_importance_analyses_full_budget_results_only(mf, capsys, caplog):
    url, final = mf
    full = sorted(i for i, r in final.items() if r == 3)
    with open_store(url, create=False) as store:
        trials = {t.trial_id: t for t in store.trials("mf")}
        with caplog.at_level("DEBUG", logger="localrules.analysis.importance"):
            data = experiment_data(store, "mf")
        report = experiment_importance(store, "mf")
    paused = len(final) - len(full)
    assert len(data.rows) == report.analysed == len(full) and data.paused == report.paused
    assert report.paused == paused
    assert f"{paused} trial(s) paused at a lower rung left out" in caplog.text
    noise = {p.parameter: p for p in report.parameters}["noise"]
    for level in noise.levels:  # the means of the full-budget results alone
        values = [trials[i].objective for i in full if trials[i].params["noise"] == level.level]
        assert level.n == len(values) and level.mean == pytest.approx(sum(values) / len(values))
    assert noise.importance == pytest.approx(0.2, abs=0.011)  # the rung results say −0.3
    assert main(["report", "importance", "--experiment", "mf", "--db", url]) == 0
    out = capsys.readouterr().out
    assert f"{len(full)} trials analysed" in out
    assert f"{paused} trial(s) paused at a lower rung left out (only full-budget" in out


def test_model_importance_fits_full_budget_results_only(mf, capsys):
    url, final = mf
    assert main(["report", "importance", "--experiment", "mf", "--db", url, "--method",
                 "model", "--bootstrap", "2", "--parameter", "noise"]) == 0
    out = capsys.readouterr().out
    full = sum(r == 3 for r in final.values())
    assert f"{full} trials analysed" in out and "paused at a lower rung left out" in out
    assert main(["report", "importance", "--experiment", "mf", "--db", url, "--method",
                 "model", "--bootstrap", "2", "--format", "json"]) == 0
    by_name = {m["parameter"]: m for m in json.loads(capsys.readouterr().out)}
    assert by_name["noise"]["n"] == full


def test_the_progress_curve_against_trial_epochs(mf, tmp_path, capsys):
    url, final = mf
    out = tmp_path / "p"
    assert main(["report", "progress", "--experiment", "mf", "--db", url, "--x",
                 "trial-epochs", "--format", "json", "--out", str(out)]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    spent = sum(RUNGS[r] for r in final.values())
    curve = doc["curve"]
    assert doc["trial_epochs"] == spent and curve[-1]["trial_epochs"] == spent
    assert len(curve) == sum(r + 1 for r in final.values())  # one point per rung result
    stamps = [c["finished_at"] for c in curve]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # order of finishing
    assert [b["trial_epochs"] - a["trial_epochs"] for a, b in itertools.pairwise(curve)] == \
        [c["epochs"] for c in curve[1:]]
    assert all(c["epochs"] == RUNGS[c["rung"]] - (RUNGS[c["rung"] - 1] if c["rung"] else 0)
               for c in curve)
    full = [c for c in curve if c["full_budget"]]
    assert {c["trial_id"] for c in full} == {i for i, r in final.items() if r == 3}
    assert all(c["rung"] == 3 for c in full)
    assert all(c["gap_closed"] is None for c in curve if not c["full_budget"])
    best = None
    for c in curve:  # the best so far is made of full-budget results only
        if c["full_budget"]:
            best = c["objective"] if best is None else max(best, c["objective"])
        assert c["best_so_far"] == best
    assert curve[0]["best_so_far"] is None  # rung-0 results come first: no best yet
    assert doc["paused"] == sum(r < 3 for r in final.values())
    by_trial = {t["trial_id"]: t for t in doc["trials"]}
    assert all(by_trial[i]["trial_epochs"] == RUNGS[r] for i, r in final.items())
    assert all(t["best_so_far"] is None or t["best_so_far"] <= best for t in doc["trials"])
    assert max(t["best_so_far"] or 0 for t in doc["trials"]) == best
    rows = list(csv.DictReader(io.StringIO((out / "progress.csv").read_text())))
    assert len(rows) == len(curve) and rows[-1]["trial_epochs"] == str(spent)
    assert (out / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "progress", "--experiment", "mf", "--db", url]) == 0
    text = capsys.readouterr().out
    assert str(spent) in text and "trial-epochs" in text and "paused" in text


def test_the_trial_epochs_figure(mf):
    url, final = mf
    with open_store(url, create=False) as store:
        progress = experiment_progress(store, "mf")
    (ax,) = progress_figure([progress], "trial-epochs").axes
    assert ax.get_xlabel() == "trial-epochs spent (cumulative, in order of finishing)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    rung_results = sum(final.values()) + sum(r < 3 for r in final.values())
    assert f"mf: rung results ({rung_results})" in legend
    spent = sum(RUNGS[r] for r in final.values())
    assert any(t.startswith("mf: best full-budget so far") and f"in {spent} trial-epochs" in t
               for t in legend)
    assert ax.get_xlim()[1] >= spent
    (ax,) = progress_figure([progress]).axes  # by trial number: paused trials apart
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"mf: paused at a lower rung ({sum(r < 3 for r in final.values())})" in legend
    with pytest.raises(ValueError, match="unknown x-axis"):
        progress_figure([progress], "time")


def test_the_trials_and_experiments_commands(mf, capsys):
    url, final = mf
    spent = sum(RUNGS[r] for r in final.values())
    assert main(["trials", "--experiment", "mf", "--db", url, "--format", "json"]) == 0
    docs = {d["trial_id"]: d for d in json.loads(capsys.readouterr().out)
            if d["reference"] is None}
    for trial_id, rung in final.items():
        d = docs[trial_id]
        assert d["trial_epochs"] == RUNGS[rung] and d["full_budget"] == (rung == 3)
        if rung < 3:
            assert d["gap_closed"] is None and "not a full-budget result" in \
                d["gap_closed_reason"]
        else:
            assert d["gap_closed"] == pytest.approx((d["result"]["objective"] - FA) / (BP - FA))
    assert main(["trials", "--experiment", "mf", "--db", url, "--sort", "objective"]) == 0
    text = capsys.readouterr().out
    assert f"trial-epochs spent: {spent}; best full-budget objective so far" in text
    lines = [line.split() for line in text.splitlines() if line.split()
             and line.split()[0].isdigit()]
    assert "paused" not in lines[0]  # the top of the list is a full-budget result
    assert sum("paused" in line for line in lines) == sum(r < 3 for r in final.values())
    assert main(["trials", "--experiment", "mf", "--db", url, "--sort", "trial_epochs",
                 "--format", "json", "--limit", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["trial_epochs"] == 1
    assert main(["experiments", "--db", url, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    with open_store(url, create=False) as store:
        best = best_objective(store.trials("mf"))
    assert row["trial_epochs"] == spent and row["paused"] == sum(r < 3 for r in final.values())
    assert row["best_objective"] == best.objective and row["fidelity"] == "asha"
    assert main(["experiments", "--db", url]) == 0
    text = capsys.readouterr().out
    assert "trial-epochs" in text and str(spent) in text


def _trial(trial_id: int, result, finished_at: float, state: str = "done") -> Trial:
    return Trial("x", trial_id, {}, {}, {}, state=state, result=result,
                 finished_at=finished_at)


def test_epoch_curve_interleaves_rungs_by_when_they_finished():
    """A promoted trial's earlier rungs count when they finished, not when it did; a plain
    result (or Ray's, without rungs) is one point at its trial's finish; a result without
    stamps falls back to the trial's; a failed run that never reported adds nothing."""
    rungs = [{"rung": 0, "epochs": 1, "objective": 0.3, "finished_at": 1.0},
             {"rung": 1, "epochs": 3, "objective": 0.5, "finished_at": 3.0},
             {"rung": 2, "epochs": 9, "objective": 0.6, "finished_at": 7.0},
             {"rung": 3, "epochs": 10, "objective": 0.7, "finished_at": 8.0}]
    trials = [
        _trial(1, {"objective": 0.7, "epochs": 10, "trial_epochs": 10, "rung": 3,
                   "stopped_early": False, "rungs": rungs}, 8.0),
        _trial(2, {"objective": 0.6, "epochs": 10}, 5.0),  # written before trial_epochs
        _trial(3, {"objective": 0.9, "epochs": 1, "trial_epochs": 1, "rung": 0,
                   "stopped_early": True,
                   "rungs": [{"rung": 0, "epochs": 1, "objective": 0.9}]}, 2.0),
        _trial(4, {"objective": 0.95, "epochs": 3, "trial_epochs": 3,
                   "stopped_early": True, "engine": "ray"}, 4.0),  # Ray's ASHA stopped it
        _trial(5, None, 6.0, state="failed"),
    ]
    curve = epoch_curve(trials)
    assert [(c.trial_id, c.rung, c.epochs, c.trial_epochs, c.full_budget) for c in curve] == [
        (1, 0, 1, 1, False), (3, 0, 1, 2, False), (1, 1, 2, 4, False),
        (4, None, 3, 7, False), (2, None, 10, 17, True), (1, 2, 6, 23, False),
        (1, 3, 1, 24, True)]
    from localrules.analysis.progress import SearchProgress

    progress = SearchProgress("x", (), None, curve=curve)
    assert progress.curve_best == [None, None, None, None, 0.6, 0.6, 0.7]
    assert progress.epochs_to(0.6) == 17 and progress.epochs_to(0.7) == 24
    assert progress.epochs_to(0.8) is None


def test_a_rung_result_is_stamped_when_it_finished():
    """The worker's rung results carry their own finish time (the trial's is overwritten by
    each rung), which is what places a promoted trial's earlier epochs on the curve."""
    first = at_rung({"objective": 0.4, "epochs": 1}, {"bracket": 0, "rung": 0, "epochs": 1},
                    None, 10, finished_at=5.0)
    assert first["rungs"] == [{"rung": 0, "epochs": 1, "objective": 0.4, "finished_at": 5.0}]
    second = at_rung({"objective": 0.6, "epochs": 3}, {"bracket": 0, "rung": 1, "epochs": 3},
                     first, 10)
    assert second["rungs"][0]["finished_at"] == 5.0 and second["rungs"][1]["finished_at"] > 5
    assert second["trial_epochs"] == 3 and second["stopped_early"]
    plain = at_rung({"objective": 0.6, "epochs": 10}, None, None, 10)
    assert plain == {"objective": 0.6, "epochs": 10, "trial_epochs": 10}


def test_the_html_report_says_how_many_paused_trials_were_left_out(mf, tmp_path, capsys):
    url, final = mf
    out = tmp_path / "r"
    assert main(["report", "importance", "--experiment", "mf", "--db", url, "--out",
                 str(out)]) == 0
    page = (out / "report.html").read_text()
    paused = sum(r < 3 for r in final.values())
    assert f"{paused} trial(s) paused at a lower rung of the multi-fidelity search" in page
    with open_store(url, create=False) as store:
        best = best_objective(store.trials("mf"))
    assert f"Best trial: objective {best.objective:.4f}" in page  # not a rung result's 0.95


def test_every_backend_reads_the_rungs_alike(store_url, capsys):
    final = asha_store(store_url, n=9)
    spent = sum(RUNGS[r] for r in final.values())
    assert main(["experiments", "--db", store_url, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["trial_epochs"] == spent and row["paused"] == sum(r < 3 for r in final.values())
    assert main(["report", "progress", "--experiment", "mf", "--db", store_url, "--format",
                 "json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["curve"][-1]["trial_epochs"] == spent
    assert [c["finished_at"] for c in doc["curve"]] == sorted(c["finished_at"]
                                                             for c in doc["curve"])
    full = {c["trial_id"] for c in doc["curve"] if c["full_budget"]}
    assert full == {i for i, r in final.items() if r == 3}


def test_the_rung_column_and_the_spent_line_of_a_history():
    from localrules.cli.trials_cmd import rung_text, spent_line

    paused = {"objective": 0.5, "epochs": 1, "trial_epochs": 1, "rung": 0,
              "stopped_early": True}
    promoted = Trial("x", 1, {}, {}, {}, state="running", result=paused,
                     fidelity={"bracket": 0, "rung": 1, "epochs": 3})
    first = Trial("x", 2, {}, {}, {}, state="queued",
                  fidelity={"bracket": 0, "rung": 0, "epochs": 1})
    done = Trial("x", 3, {}, {}, {}, state="done", result={**paused, "stopped_early": False,
                                                           "rung": 3, "trial_epochs": 10,
                                                           "objective": 0.7})
    ray = Trial("x", 4, {}, {}, {}, state="done", result={"objective": 0.9, "epochs": 2,
                                                          "stopped_early": True})
    plain = Trial("x", 5, {}, {}, {}, state="done", result={"objective": 0.6, "epochs": 10})
    assert [rung_text(t) for t in (promoted, first, done, ray, plain)] == \
        ["0→1", "→0", "3", "stopped", "-"]
    assert rung_text(Trial("x", 6, {}, {}, {}, state="done", result=paused)) == "0 paused"
    from localrules.store.documents import HistoryEntry

    entries = [HistoryEntry.of(t) for t in (promoted, first, done, ray, plain)]
    line = spent_line(entries, references_of(entries))
    assert line == ("trial-epochs spent: 23; best full-budget objective so far: 0.7000 "
                    "(trial 3, gap closed -); 1 paused at a lower rung (not ranked)")

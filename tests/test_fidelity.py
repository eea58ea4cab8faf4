"""Multi-fidelity searches (``search.fidelity``): rungs, brackets, ASHA's promotions, TPE scored at
a rung, and a search on a synthetic learning-curve objective whose answer is known, through the
real controller, store and worker (the trainer replaced by the curve)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from localrules.search.fidelity import Fidelity, promotions, rung_points
from localrules.search.history import FULL_BUDGET_LEVEL, History, loss_at, rebuild, scoring_level
from localrules.store import DONE, FAILED, QUEUED, RUNNING, HistoryEntry

OPTIMUM = 0.7
SPACE_YAML = """\
name: curve
base: ia-tpe
parameters:
  run.momentum: {uniform: [0.0, 0.98]}
"""


# --- rungs and brackets ----------------------------------------------------------------------
@pytest.mark.parametrize("fidelity, epochs, rungs", [
    (Fidelity(), 10, (10,)),
    (Fidelity("asha"), 10, (1, 3, 9, 10)),
    (Fidelity("asha", min_epochs=2), 10, (2, 6, 10)),
    (Fidelity("asha", reduction_factor=2), 8, (1, 2, 4, 8)),
    (Fidelity("hyperband", min_epochs=5, reduction_factor=3), 45, (5, 15, 45)),
    (Fidelity("asha", min_epochs=9), 10, (9, 10)),
])
def test_rungs_are_min_epochs_times_eta_to_the_k_then_the_budget(fidelity, epochs, rungs):
    assert fidelity.rungs(epochs) == rungs
    fidelity.check_budget(epochs)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"kind": "bohb"}, "fidelity"),
    ({"kind": "asha", "reduction_factor": 1}, "reduction_factor"),
    ({"kind": "asha", "reduction_factor": 101}, "reduction_factor"),
    ({"kind": "asha", "reduction_factor": 2.5}, "reduction_factor"),
    ({"kind": "asha", "reduction_factor": float("nan")}, "reduction_factor"),
    ({"kind": "asha", "min_epochs": 0}, "min_epochs"),
    ({"kind": "asha", "min_epochs": float("inf")}, "min_epochs"),
    ({"kind": "asha", "brackets": 2}, "--brackets is for --fidelity hyperband"),
    ({"kind": "hyperband", "brackets": 0}, "brackets"),
    ({"kind": "none", "min_epochs": 2}, "shape the rungs"),
])
def test_bad_fidelity_settings_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Fidelity(**kwargs)


def test_the_rungs_must_fit_the_budget():
    with pytest.raises(ValueError, match="--min-epochs 10 must be below the budget's 10 epochs"):
        Fidelity("asha", min_epochs=10).check_budget(10)
    with pytest.raises(ValueError, match="at most 3 brackets"):
        Fidelity("hyperband", brackets=4).check_budget(10)
    Fidelity("hyperband", brackets=3).check_budget(10)


def test_hyperband_draws_brackets_in_its_proportions_and_never_again():
    hb = Fidelity("hyperband")  # rungs 1, 3, 9, 27: brackets of 3, 2, 1 halvings
    weights = hb.bracket_weights(27)
    assert weights == pytest.approx([w / sum([27 / 4, 9 / 3, 3 / 2]) for w in
                                     [27 / 4, 9 / 3, 3 / 2]])
    drawn = Counter(hb.start(0, i, 27)["bracket"] for i in range(3000))
    for bracket, weight in enumerate(weights):
        assert drawn[bracket] / 3000 == pytest.approx(weight, abs=0.03)
    assert [hb.start(5, i, 27) for i in range(20)] == [hb.start(5, i, 27) for i in range(20)]
    first = hb.start(0, 1, 27)
    assert first["rung"] == first["bracket"] and first["epochs"] == hb.rungs(27)[first["rung"]]
    assert Fidelity("asha").start(0, 7, 10) == {"bracket": 0, "rung": 0, "epochs": 1}
    assert Fidelity().start(0, 7, 10) is None


# --- ASHA's promotions ---------------------------------------------------------------------
def entry(tid: int, objectives: list[float], rung: int | None = None, state: str = DONE,
          bracket: int = 0, diverged: bool = False, **kw) -> HistoryEntry:
    """A search trial with rung results ``objectives`` (rung ``bracket`` on), paused at its last
    rung unless ``rung`` says where it is now."""
    rungs = (1, 3, 9, 10)
    results = [{"rung": bracket + k, "epochs": rungs[bracket + k], "objective": o}
               for k, o in enumerate(objectives)]
    last = bracket + len(objectives) - 1
    result = None if not results else {
        "objective": objectives[-1], "rung": last, "rungs": results, "diverged": diverged,
        "stopped_early": last < 3 and not diverged}
    at = last if rung is None else rung
    return HistoryEntry(tid, state, {}, result, fidelity={"bracket": bracket, "rung": at,
                                                          "epochs": rungs[at]}, attempt=1, **kw)


ASHA = Fidelity("asha")


def test_the_top_third_of_a_rung_is_promoted():
    rung0 = [entry(i, [o]) for i, o in enumerate([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4])]
    chosen = promotions(rung0, ASHA, 10)
    assert [(e.trial_id, f) for e, f in chosen] == [
        (1, {"bracket": 0, "rung": 1, "epochs": 3}), (3, {"bracket": 0, "rung": 1, "epochs": 3}),
        (5, {"bracket": 0, "rung": 1, "epochs": 3})]


def test_fewer_than_eta_results_promote_nobody_and_a_later_result_can_promote_a_paused_one():
    assert promotions([entry(0, [0.9]), entry(1, [0.5])], ASHA, 10) == []
    later = promotions([entry(0, [0.9]), entry(1, [0.5]), entry(2, [0.1])], ASHA, 10)
    assert [e.trial_id for e, _ in later] == [0]


def test_promoted_trials_still_count_at_their_rung_and_are_not_promoted_twice():
    trials = [entry(0, [0.9, 0.5]), entry(1, [0.8], rung=1, state=RUNNING),
              entry(2, [0.7]), entry(3, [0.1]), entry(4, [0.2]), entry(5, [0.3])]
    # rung 0: six results, top 2 are trials 0 and 1, both already past it
    assert promotions(trials, ASHA, 10) == []
    trials.append(entry(6, [0.75]))  # seven results: still the top 2
    assert promotions(trials, ASHA, 10) == []
    trials += [entry(7, [0.05]), entry(8, [0.06])]  # nine: the top 3 take trial 6 in
    assert [e.trial_id for e, _ in promotions(trials, ASHA, 10)] == [6]


def test_ties_go_to_the_lower_id_and_diverged_failed_or_last_rung_trials_stay():
    tied = [entry(i, [0.5]) for i in range(3)]
    assert [e.trial_id for e, _ in promotions(tied, ASHA, 10)] == [0]
    diverged = [entry(0, [0.1], diverged=True), entry(1, [0.05]), entry(2, [0.02])]
    assert promotions(diverged, ASHA, 10) == []  # the top one diverged: nobody goes on
    failed = [entry(0, [0.9], state=FAILED), entry(1, [0.05]), entry(2, [0.02])]
    assert promotions(failed, ASHA, 10) == []  # its result still ranks; it is not done
    top = [entry(i, [0.9, 0.9, 0.9, o]) for i, o in enumerate([0.9, 0.8, 0.7])]
    assert promotions(top, ASHA, 10) == []  # the budget's epochs: finished, never promoted


def test_brackets_rank_apart_and_references_warm_starts_never_count():
    hb = Fidelity("hyperband")
    b1 = [entry(i, [o], bracket=1) for i, o in enumerate([0.3, 0.2, 0.1])]
    b0 = [entry(10 + i, [o], bracket=0) for i, o in enumerate([0.9, 0.8])]
    assert [e.trial_id for e, _ in promotions(b1 + b0, hb, 10)] == [0]
    ref = HistoryEntry(20, DONE, {}, {"objective": 0.99, "rung": 1}, reference={"rule": "bp"})
    warm = HistoryEntry(21, DONE, {}, {"objective": 0.99})
    assert [e.trial_id for e, _ in promotions([*b1, ref, warm], hb, 10)] == [0]
    assert promotions(b1, Fidelity(), 10) == []


def test_rung_points_read_both_engines():
    assert rung_points({"objective": 0.4, "rung": 2}) == [(2, 0.4)]  # Ray's ASHA
    assert rung_points({"objective": 0.4}) == []
    assert rung_points(entry(0, [0.2, 0.5]).result) == [(0, 0.2), (1, 0.5)]


# --- TPE scored at a rung --------------------------------------------------------------------
def test_the_scoring_level_is_the_highest_rung_enough_trials_reached():
    assert scoring_level({}, 5) == FULL_BUDGET_LEVEL
    assert scoring_level({0: 10, 1: 3, 2: 1}, 5) == 0
    assert scoring_level({0: 10, 1: 3, 2: 1}, 4) == 1
    assert scoring_level({0: 2}, 5) == 0  # too few anywhere: the lowest observed
    assert scoring_level({FULL_BUDGET_LEVEL: 3}, 20) == FULL_BUDGET_LEVEL


def test_a_trial_that_stopped_lower_ranks_below_every_trial_that_reached_the_level():
    reached = loss_at([(0, 0.1), (1, 0.05)], 1)
    stopped_high = loss_at([(0, 0.99)], 1)
    stopped_low = loss_at([(0, 0.5)], 1)
    assert reached < stopped_high < stopped_low
    assert loss_at([(0, 0.2), (1, 0.6), (2, 0.7)], 1) == -0.6  # scored at the level
    assert loss_at([(FULL_BUDGET_LEVEL, 0.8)], 1) == -0.8  # a warm start trained fully


def test_history_scores_at_the_level_and_rebuild_agrees():
    """Until 3 trials reached rung 1 they are scored at rung 0; then at rung 1, every trial
    scored again (incrementally as ``rebuild`` would from scratch)."""
    misc = {"idxs": {"x": [0]}, "vals": {"x": [0.5]}}

    def e(tid, objectives, state=DONE):
        base = entry(tid, objectives, state=state)
        return HistoryEntry(tid, state, {"idxs": {"x": [tid]}, "vals": misc["vals"]},
                            base.result, fidelity=base.fidelity, attempt=1)

    history = History(min_rung_results=3)
    history.apply([e(0, [0.9, 0.4]), e(1, [0.8, 0.6]), e(2, [0.3]), e(3, [0.2])])
    assert history.level == 0
    assert {d["tid"]: d["result"]["loss"] for d in history.trials.trials} == {
        0: -0.9, 1: -0.8, 2: -0.3, 3: -0.2}
    history.apply([e(4, [0.7, 0.1], state=QUEUED)])  # promoted, queued: known at its rungs
    assert history.level == 1
    losses = {d["tid"]: d["result"]["loss"] for d in history.trials.trials}
    assert losses == pytest.approx({0: -0.4, 1: -0.6, 2: 10 - 0.3, 3: 10 - 0.2, 4: -0.1})
    again = rebuild(history.values(), min_rung_results=3)
    assert {d["tid"]: d["result"]["loss"] for d in again.trials} == pytest.approx(losses)


def test_a_plain_search_is_scored_by_its_objectives_as_before():
    plain = [HistoryEntry(i, DONE, {"idxs": {"x": [i]}, "vals": {"x": [0.1]}},
                          {"objective": o}) for i, o in enumerate([0.3, 0.6])]
    history = History.of(plain)
    assert history.level == FULL_BUDGET_LEVEL
    assert [d["result"]["loss"] for d in history.trials.trials] == [-0.3, -0.6]


def test_paused_results_are_never_the_best():
    history = History.of([entry(0, [0.95]), entry(1, [0.5, 0.6, 0.7, 0.8])])
    assert history.best().trial_id == 1
    assert History.of([entry(0, [0.95])]).best() is None


# --- a search on a known learning curve --------------------------------------------------------
def quality(momentum: float) -> float:
    """Final top-1 of a trial: best at ``OPTIMUM``."""
    return 0.95 - (momentum - OPTIMUM) ** 2


def curve_trainer(seen: list):
    """A trainer whose top-1 at epoch e follows a learning curve towards ``quality``; it
    remembers which epochs each call started from (a promoted trial resumes)."""
    def train(config, out_dir, on_epoch=None, should_stop=None, may_write=None,
              until_epoch=None):
        epochs = until_epoch or config.run.epochs
        marker = Path(out_dir) / "epochs"
        start = int(marker.read_text()) if marker.exists() else 0
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(epochs))
        seen.append((out_dir, start, epochs))
        top1 = 0.1 + (quality(config.run.momentum) - 0.1) * (1 - math.exp(-epochs / 2))
        return {"objective": top1, "top1": top1, "epochs": epochs, "diverged": False}

    return train


def run_search(tmp_path, fidelity: str, max_trials: int, seed: int = 0):
    from localrules.search.session import open_search
    from localrules.spaces import default_budget, load_space
    from localrules.store import open_store
    from localrules.worker.loop import Worker

    path = tmp_path / "curve.yaml"
    path.write_text(SPACE_YAML)
    store = open_store(f"sqlite:///{tmp_path}/{fidelity}.db")
    space = load_space(str(path), default_budget("digits"))
    controller = open_search(store, "curve", space, {
        "max_trials": max_trials, "concurrency": 2, "references": [], "seed": seed,
        "fidelity": {"kind": fidelity}, "tpe": {"n_startup_jobs": 8}})
    seen: list = []
    worker = Worker(store, tmp_path / "art", trainer=curve_trainer(seen), poll_seconds=0.01)
    for _ in range(20 * max_trials):
        controller.step()
        status = controller.status()
        if status.finished:
            break
        worker.max_trials = 1
        worker.run()
    return store, controller, status, seen


def test_asha_tpe_finds_the_known_optimum_and_promotions_resume(tmp_path):
    store, controller, status, seen = run_search(tmp_path, "asha", 40)
    trials = store.trials("curve")
    assert status.finished and status.counts["done"] == 40
    best = status.best
    assert not best.result.get("stopped_early") and best.result["epochs"] == 10
    assert abs(best.config["run"]["momentum"] - OPTIMUM) < 0.1
    # TPE learns from the rungs: its suggestions sit nearer the optimum than the random ones
    distance = {s: sorted(abs(t.config["run"]["momentum"] - OPTIMUM) for t in trials
                          if t.misc["startup"] is s) for s in (True, False)}
    assert distance[False][len(distance[False]) // 2] < distance[True][len(distance[True]) // 2]
    # TPE moved up from rung 0 once 8 trials (its startup count) had reached a higher rung
    reached = Counter(t.fidelity["rung"] for t in trials)
    level = controller.history.level
    assert level >= 1 and sum(n for rung, n in reached.items() if rung >= level) >= 8
    # successive halving: most stop at the first rung, fewer go on at each rung
    assert controller.settings.fidelity == Fidelity("asha", min_epochs=2)  # past the warm-up
    at = Counter(t.fidelity["rung"] for t in trials)
    assert at[0] > at[1] > 0 and at[2] >= 1
    # every leg of a promoted trial started where the last one stopped: each epoch once
    legs: dict = {}
    for out_dir, start, epochs in seen:
        legs.setdefault(out_dir, []).append((start, epochs))
    for runs in legs.values():
        assert [s for s, _ in runs] == [0, *[e for _, e in runs[:-1]]]
    for t in trials:
        rungs = [r["rung"] for r in t.result["rungs"]]
        assert rungs == list(range(len(rungs))) and rungs[-1] == t.fidelity["rung"]
        assert t.result["trial_epochs"] == t.fidelity["epochs"]
    # nothing left that the rule would promote; a restarted controller decides the same
    assert promotions(store.history("curve"), controller.settings.fidelity, 10) == []
    assert {t.fidelity["epochs"] for t in trials} <= {2, 6, 10}
    spent = sum(t.result["trial_epochs"] for t in trials)
    assert spent < 40 * 10 / 2


def test_a_restarted_controller_makes_the_same_promotions(tmp_path):
    """Promotions follow from the documents alone: a controller that reads a store where
    results arrived (but nothing was promoted yet) promotes exactly what the first would."""
    from localrules.search.session import open_search

    store, controller, _, _ = run_search(tmp_path, "asha", 12)
    entries = store.history("curve")
    # undo nothing: compute the decisions two independent ways on the same documents
    fresh = History(controller.space, 8)
    fresh.update(store, "curve")
    assert promotions(fresh.values(), controller.settings.fidelity, 10) == promotions(
        entries, controller.settings.fidelity, 10)
    controller.release_lock()
    again = open_search(store, "curve", controller.space)
    assert again.settings.fidelity == Fidelity("asha", min_epochs=2)
    assert again.step() == 0 and again.promote(again.history) == []


@pytest.mark.parametrize("dataset, first", [("digits", 2), ("imagenet", 6), ("cifar10", 4),
                                             ("synthetic", 1)])
def test_the_first_rung_defaults_past_the_budgets_warm_up(dataset, first):
    from localrules.search.fidelity import first_rung_epochs
    from localrules.search.session import resolve_settings
    from localrules.spaces import default_budget

    budget = default_budget(dataset, data_dir="/data" if dataset in ("imagenet", "cifar10")
                            else None)
    assert first_rung_epochs(budget) == first >= budget.warmup_epochs() - 1
    new = resolve_settings(None, {"fidelity": {"kind": "asha"}}, budget=budget)
    assert new.fidelity.min_epochs == first
    given = resolve_settings(None, {"fidelity": {"kind": "asha", "min_epochs": 1}},
                             budget=budget)
    assert given.fidelity.min_epochs == 1
    # a resume keeps what was stored, whatever the default
    stored = {**given.to_dict()}
    assert resolve_settings(stored, {"fidelity": {"kind": "asha"}}, budget=budget
                            ).fidelity.min_epochs == 1


def test_changing_the_fidelity_on_resume_is_refused_and_writes_nothing(tmp_path):
    from localrules.search.session import open_search

    store, controller, _, _ = run_search(tmp_path, "asha", 3)
    controller.release_lock()
    before = store.get_experiment("curve")
    for change in ({"kind": "none"}, {"kind": "asha", "reduction_factor": 2},
                   {"kind": "hyperband"}):
        with pytest.raises(ValueError, match="fidelity"):
            open_search(store, "curve", controller.space, {"fidelity": change})
    assert store.get_experiment("curve") == before
    assert store.lock_state("controller:curve").owner == ""


def test_the_cli_refuses_bad_fidelity_flags_and_writes_nothing(tmp_path, capsys):
    from localrules.cli.main import main

    db = tmp_path / "x.db"
    base = ["search", "--space", "ia", "--experiment", "x", "--db", f"sqlite:///{db}",
            "--artifacts", str(tmp_path / "art")]
    for flags, fragment in [
        (["--fidelity", "asha", "--min-epochs", "10"], "must be below the budget's 10 epochs"),
        (["--fidelity", "asha", "--min-epochs", "50", "--epochs", "20"], "below the budget"),
        (["--fidelity", "asha", "--reduction-factor", "1"], "--reduction-factor"),
        (["--fidelity", "asha", "--reduction-factor", "nan"], "--reduction-factor"),
        (["--fidelity", "asha", "--min-epochs", "1e9"], "--min-epochs"),
        (["--fidelity", "hyperband", "--brackets", "9"], "at most 2 brackets"),
        (["--fidelity", "asha", "--brackets", "2"], "--brackets is for --fidelity hyperband"),
        (["--min-epochs", "2"], "shape the rungs"),
        (["--fidelity", "bohb"], "--fidelity"),
    ]:
        assert main([*base, *flags]) == 2, flags
        assert fragment in capsys.readouterr().err, flags
        assert not db.exists() and not (tmp_path / "art").exists()

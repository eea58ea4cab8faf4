"""Reference runs and warm starts: the gap closed, the reuse key, references beside the search
(never in TPE's history, never counted in max_trials), reuse across experiments on both stores,
a worker that copies or waits instead of training twice, and the published rule queued first.
No TensorFlow: trials are "run" in-process."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from helpers import finish_queued

from localrules import __version__
from localrules.search import Controller, SearchSettings, TpeSettings, open_experiment
from localrules.search.history import rebuild
from localrules.search.references import new_reference_trials, planned, reference_seed
from localrules.spaces import default_budget, load_space
from localrules.store import DONE, FAILED, QUEUED, RUNNING, Trial
from localrules.store.references import (
    MIN_GAP,
    claim,
    finished_run,
    reference_key,
    reference_marker,
    references_of,
)
from localrules.worker.loop import Worker

BUDGET = default_budget("digits", epochs=2, width=4)


def _ref(rule: str, objective: float | None, state: str = DONE, replicate: int = 0,
         trial_id: int = 0) -> Trial:
    return Trial("e", trial_id, {}, {}, {}, state=state,
                 result=None if objective is None else {"objective": objective},
                 reference=reference_marker(rule, replicate, f"k-{rule}-{replicate}"))


# --- the gap closed ----------------------------------------------------------------------------

def test_gap_closed_is_read_against_the_references():
    trials = [_ref("bp", 0.98), _ref("fa", 0.68), _ref("sa", 0.95)]
    refs = references_of(trials, ("bp", "fa", "sa"))
    assert refs.gap == pytest.approx(0.30)
    assert refs.gap_reason() is None
    assert refs.gap_closed(0.68) == pytest.approx(0.0)
    assert refs.gap_closed(0.98) == pytest.approx(1.0)
    assert refs.gap_closed(0.83) == pytest.approx(0.5)
    assert refs.gap_closed(0.99) > 1.0 and refs.gap_closed(0.5) < 0.0  # not clipped
    assert refs.gap_closed(None) is None
    assert refs.levels["sa"].objective == 0.95
    assert "bp 0.9800" in refs.describe() and "gap bp − fa 0.3000" in refs.describe()


def test_replicates_give_mean_and_sem():
    trials = [_ref("bp", v, replicate=i) for i, v in enumerate((0.97, 0.98, 0.99))]
    trials += [_ref("fa", v, replicate=i) for i, v in enumerate((0.60, 0.70))]
    trials += [_ref("fa", None, state=RUNNING, replicate=2)]
    trials += [_ref("bp", None, state=FAILED, replicate=3)]  # neither finished nor pending
    refs = references_of(trials, ("bp", "fa"))
    bp, fa = refs.levels["bp"], refs.levels["fa"]
    assert (bp.objective, bp.n, bp.pending) == (pytest.approx(0.98), 3, 0)
    assert bp.sem == pytest.approx(0.01 / 3 ** 0.5)  # stdev (ddof 1) 0.01 over √3
    assert (fa.objective, fa.n, fa.pending) == (pytest.approx(0.65), 2, 1)
    assert refs.to_dict()["rules"]["fa"] == {"objective": pytest.approx(0.65),
                                             "sem": pytest.approx(0.05), "n": 2, "pending": 1}
    # search trials (no reference field) are not references
    assert references_of([Trial("e", 9, {}, {}, {}, state=DONE, result={"objective": 1.0})],
                         ()).levels == {}


@pytest.mark.parametrize("trials, requested, reason", [
    ([_ref("bp", 0.9)], ("bp", "fa"), "the fa reference has not finished"),
    ([_ref("bp", 0.9), _ref("fa", None, state=QUEUED)], ("bp", "fa"),
     "the fa reference has not finished"),
    ([], ("bp", "fa"), "the bp reference has not finished"),
    ([_ref("bp", 0.9)], ("bp",), "no fa reference in this experiment"),
    ([], (), "no bp reference in this experiment"),
    ([_ref("bp", 0.50), _ref("fa", 0.47)], ("bp", "fa"), f"is below {MIN_GAP}"),
    ([_ref("bp", 0.40), _ref("fa", 0.60)], ("bp", "fa"), "too close"),  # fa above bp
])
def test_no_gap_closed_without_both_references_or_a_gap(trials, requested, reason):
    refs = references_of(trials, requested)
    assert refs.gap_closed(0.9) is None
    assert reason in refs.gap_reason()
    assert reason in refs.to_dict()["gap_reason"]


def test_the_reuse_key_is_the_config_and_the_code_version():
    a = BUDGET.preset_config("bp", seed=1).to_dict()
    b = dict(reversed(list(a.items())))
    assert reference_key(a, "1") == reference_key(b, "1")
    assert reference_key(a, "1") != reference_key(a, "2")
    assert reference_key(a, "1") != reference_key(BUDGET.preset_config("bp", seed=2).to_dict(),
                                                  "1")
    wider = default_budget("digits", epochs=2, width=8).preset_config("bp", seed=1).to_dict()
    assert reference_key(a, "1") != reference_key(wider, "1")


def test_planned_references_follow_the_settings():
    settings = SearchSettings(references=("bp", "fa", "sa"), reference_seeds=2, seed=5)
    plan = planned(BUDGET, settings)
    assert [(p.rule, p.replicate) for p in plan] == [
        ("bp", 0), ("bp", 1), ("fa", 0), ("fa", 1), ("sa", 0), ("sa", 1)]
    bp0 = plan[0]
    assert bp0.config == BUDGET.preset_config("bp", seed=reference_seed(5, 0)).to_dict()
    assert bp0.key == reference_key(bp0.config, __version__)
    # replicates differ by seed, rules share it
    assert plan[0].config["seed"] != plan[1].config["seed"]
    assert plan[0].config["seed"] == plan[2].config["seed"]
    assert planned(BUDGET, SearchSettings(references=())) == []


# --- references beside the search, on both stores ----------------------------------------------

def _open(store, name, space="wm-ad", budget=BUDGET, **settings):
    settings = SearchSettings(**settings)
    experiment = open_experiment(store, name, load_space(space, budget), settings)
    return experiment, settings


def test_references_are_trained_once_and_reused_by_later_experiments(store):
    _, settings = _open(store, "first")
    refs = new_reference_trials(store, "first", BUDGET, settings)
    assert [(t.reference["rule"], t.state) for t in refs] == [("bp", QUEUED), ("fa", QUEUED)]
    store.add_trials(refs)
    assert new_reference_trials(store, "first", BUDGET, settings) == []  # nothing twice
    scores = {"bp": 0.97, "fa": 0.70}
    assert finish_queued(store, "first", lambda t: scores[t.reference["rule"]]) == 2

    # a second experiment under the same budget and seed copies them, finished
    _open(store, "second", space="ia")
    copies = new_reference_trials(store, "second", BUDGET, settings)
    assert [(t.state, t.result["objective"]) for t in copies] == [(DONE, 0.97), (DONE, 0.70)]
    assert copies[0].result["reused_from"] == {"experiment": "first", "trial_id": 0}
    store.add_trials(copies)
    stored = store.trials("second")
    assert [t.reference["rule"] for t in stored] == ["bp", "fa"]
    assert references_of(stored, ("bp", "fa")).gap_closed(0.835) == pytest.approx(0.5)
    # reference_runs finds every run of the key, in both experiments
    key = stored[0].reference["key"]
    assert [(t.experiment, t.trial_id) for t in store.reference_runs(key)] == [
        ("first", 0), ("second", 0)]
    assert finished_run(store, key).experiment == "first"  # the one that trained
    # a copy of a copy still names the run that trained
    _open(store, "third")
    third = new_reference_trials(store, "third", BUDGET, settings)
    assert third[0].result["reused_from"] == {"experiment": "first", "trial_id": 0}

    # another seed (or budget) is another reference: queued, not copied
    _open(store, "fourth", seed=1)
    fresh = new_reference_trials(store, "fourth", BUDGET, SearchSettings(seed=1))
    assert [t.state for t in fresh] == [QUEUED, QUEUED]
    # the history carries the marker (what the controller filters on)
    assert [h.reference["rule"] for h in store.history("second")] == ["bp", "fa"]


def test_a_failed_reference_is_queued_again(store):
    _, settings = _open(store, "e", references=("fa",))
    store.add_trials(new_reference_trials(store, "e", BUDGET, settings))
    trial = store.reserve("w", 60, ["e"])
    store.fail("e", trial.trial_id, trial.attempt, "boom")
    (again,) = new_reference_trials(store, "e", BUDGET, settings)
    assert again.state == QUEUED and again.trial_id != trial.trial_id
    assert again.reference["rule"] == "fa"


def test_malformed_reference_markers_are_refused(store):
    _open(store, "e")
    bad = Trial("e", 0, {}, {}, {}, reference={"rule": "bp", "replicate": -1, "key": "k"})
    with pytest.raises(ValueError, match="'reference' is malformed"):
        store.add_trials([bad])
    with pytest.raises(ValueError, match="'reference' is malformed"):
        Trial.from_dict({**bad.to_dict(), "reference": {"rule": 3}})


def test_the_controller_keeps_references_out_of_tpe_and_max_trials(store):
    experiment, settings = _open(store, "e", max_trials=3, concurrency=5,
                                 tpe=TpeSettings(n_startup_jobs=1))
    space = load_space("wm-ad", BUDGET)
    store.add_trials(new_reference_trials(store, "e", BUDGET, settings))
    controller = Controller(store, experiment, space, settings)
    assert controller.step() == 3  # max_trials search trials; the 2 references are extra
    assert controller.step() == 0
    trials = store.trials("e")
    assert len(trials) == 5 and sum(t.reference is not None for t in trials) == 2
    status = controller.status()
    assert status.created == 3 and not status.finished
    scores = {"bp": 0.99, "fa": 0.5}
    done = 0
    while (t := store.reserve("w", 60, ["e"])) is not None:
        objective = scores[t.reference["rule"]] if t.reference else 0.6 + 0.01 * t.trial_id
        store.complete("e", t.trial_id, t.attempt, {"objective": objective, "diverged": False})
        done += 1
    assert done == 5
    status = controller.status()
    assert status.finished and status.best.reference is None
    assert status.best.objective < 0.99  # bp's 0.99 is a reference, not the best trial
    assert status.references.gap_closed(status.best.objective) is not None
    # TPE's history holds the search trials only
    suggested = controller.suggest(store.history("e"), 1)
    assert suggested[0].reference is None
    history = rebuild([t for t in store.trials("e") if t.reference is None])
    assert len(history.trials) == 3


# --- warm starts -------------------------------------------------------------------------------

@pytest.mark.parametrize("space_name, preset", [("wm", "wm-tpe"), ("wm-ad", "wm-ad-tpe"),
                                                ("wm-ad-ops", "wm-ad-ops-tpe"),
                                                ("ia", "ia-tpe")])
def test_each_paper_search_starts_from_its_published_rule(store, space_name, preset):
    experiment, settings = _open(store, "e", space=space_name, max_trials=3, concurrency=2,
                                 tpe=TpeSettings(n_startup_jobs=2), references=())
    space = load_space(space_name, BUDGET)
    controller = Controller(store, experiment, space, settings)
    controller.step()
    controller.release_lock()
    first, second = store.trials("e")
    assert first.misc["warm_start"] == preset and first.misc["startup"] is False
    assert "warm_start" not in second.misc and second.misc["startup"] is True
    # the warm start is the preset on the budget, exactly
    published = BUDGET.preset_config(preset, seed=first.config["seed"]).to_dict()
    assert first.config == published
    # it is a real trial: TPE's history holds it with its idxs/vals
    history = rebuild(store.trials("e"))
    assert first.trial_id in history.tids
    # a restarted controller never queues it twice
    finish_queued(store, "e")
    again = Controller(store, experiment, space, settings)
    again.step()
    assert sum("warm_start" in t.misc for t in store.trials("e")) == 1


def test_no_warm_start_when_turned_off(store):
    experiment, settings = _open(store, "e", space="ia", max_trials=2, concurrency=2,
                                 warm_start=False)
    Controller(store, experiment, load_space("ia", BUDGET), settings).step()
    assert all("warm_start" not in t.misc for t in store.trials("e"))


def test_warm_start_cannot_change_on_resume(store):
    _open(store, "e", space="ia")
    with pytest.raises(ValueError, match="warm_start=True; this cannot change"):
        _open(store, "e", space="ia", warm_start=False)


# --- a worker never trains a reference twice ---------------------------------------------------

def _trainer(calls: list):
    def train(config, out_dir, on_epoch=None, should_stop=None, may_write=None):
        calls.append(config.rule.kind)
        return {"objective": 0.9, "top1": 0.9, "diverged": False, "interrupted": False}
    return train


def _reference_experiments(store):
    _, settings = _open(store, "a", references=("bp",))
    store.add_trials(new_reference_trials(store, "a", BUDGET, settings))
    _open(store, "b", space="ia", references=("bp",))
    store.add_trials(new_reference_trials(store, "b", BUDGET, settings))
    (a,) = store.trials("a")
    (b,) = store.trials("b")
    assert a.state == b.state == QUEUED and a.reference["key"] == b.reference["key"]
    return a, b


def test_a_worker_copies_a_reference_that_finished_elsewhere(store, tmp_path):
    a, b = _reference_experiments(store)
    calls: list = []
    Worker(store, tmp_path, experiments=["a"], trainer=_trainer(calls), max_trials=1).run()
    assert calls == ["backprop"]
    Worker(store, tmp_path, experiments=["b"], trainer=_trainer(calls), max_trials=1).run()
    assert calls == ["backprop"]  # not trained again
    done = store.get_trial("b", b.trial_id)
    assert done.state == DONE and done.result["objective"] == 0.9
    assert done.result["reused_from"] == {"experiment": "a", "trial_id": a.trial_id}


def test_a_worker_waits_while_another_trains_the_same_reference(store, tmp_path):
    a, b = _reference_experiments(store)
    key = a.reference["key"]
    # another process holds the key: it is training experiment a's copy right now
    running = store.reserve("other", 60, ["a"])
    assert claim(store, key, "other", 60)
    calls: list = []

    def finish_elsewhere():
        time.sleep(1.0)
        store.complete("a", running.trial_id, running.attempt,
                       {"objective": 0.8, "diverged": False})

    thread = threading.Thread(target=finish_elsewhere)
    thread.start()
    worker = Worker(store, tmp_path, experiments=["b"], trainer=_trainer(calls), max_trials=1,
                    poll_seconds=0.1, lease_seconds=5)
    started = time.monotonic()
    worker.run()
    thread.join()
    assert calls == [] and time.monotonic() - started >= 0.9
    done = store.get_trial("b", b.trial_id)
    assert done.state == DONE and done.result["objective"] == 0.8
    assert done.result["reused_from"]["experiment"] == "a"


def test_a_worker_takes_over_a_reference_whose_holder_died(store, tmp_path):
    a, b = _reference_experiments(store)
    assert claim(store, a.reference["key"], "dead", 0.5)  # its lock will expire
    calls: list = []
    Worker(store, tmp_path, experiments=["b"], trainer=_trainer(calls), max_trials=1,
           poll_seconds=0.1).run()
    assert calls == ["backprop"]
    assert store.get_trial("b", b.trial_id).state == DONE
    # the key's lock was released when training ended
    assert claim(store, a.reference["key"], "next", 60)


def test_a_stop_while_waiting_hands_the_reference_back(store, tmp_path):
    a, b = _reference_experiments(store)
    assert claim(store, a.reference["key"], "other", 60)
    flag = {"stop": False}
    worker = Worker(store, tmp_path, experiments=["b"], trainer=_trainer([]), max_trials=1,
                    poll_seconds=0.05, should_stop=lambda: flag["stop"])
    threading.Timer(0.5, lambda: flag.update(stop=True)).start()
    worker.run()
    back = store.get_trial("b", b.trial_id)
    assert back.state == QUEUED and back.result is None
    assert worker.stats.released == [("b", b.trial_id)]


def test_search_trials_are_not_guarded(store, tmp_path):
    experiment, settings = _open(store, "e", max_trials=1, concurrency=1, references=())
    Controller(store, experiment, load_space("wm-ad", BUDGET), settings).step()
    calls: list = []
    Worker(store, tmp_path, experiments=["e"], trainer=_trainer(calls), max_trials=1).run()
    assert calls == ["weight_mirror"]
    assert dataclasses.asdict(store.trials("e")[0])["reference"] is None


def test_the_dataframe_keeps_the_gap_closed_whatever_states_it_shows(store):
    _, settings = _open(store, "e", max_trials=2, concurrency=2)
    experiment = store.get_experiment("e")
    controller = Controller(store, experiment, load_space("wm-ad", BUDGET), settings)
    controller.step()  # the references, then (their workers busy) no search trial yet
    assert [t.reference["rule"] for t in store.trials("e")] == ["bp", "fa"]
    scores = {"bp": 0.9, "fa": 0.5}
    finish_queued(store, "e", lambda t: scores[t.reference["rule"]])
    controller.step()
    finish_queued(store, "e", lambda t: 0.8)
    frame = store.query("e", where="state == done")
    search = frame[frame["reference"].isna()]
    assert len(search) == 2 and list(search["gap_closed"]) == pytest.approx([0.75, 0.75])
    assert store.query("e", where="state == running").empty


def test_joint_optimizer_refuses_alignment_update_noise():
    from localrules.config import config_from_preset

    with pytest.raises(ValueError, match="alignment_variance needs the separate"):
        config_from_preset("wm-tpe", overrides=["run.optimizer=\"joint\"",
                                                "update_noise.alignment_variance=0.1"])

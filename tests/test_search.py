"""The search controller: TPE history from the store, queue filling, seeding, the lock, restarts,
and TPE against random search on a toy objective. No TensorFlow: trials are "run" in-process."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from helpers import finish_queued

from localrules.search import Controller, SearchSettings, TpeSettings, open_experiment
from localrules.search.controller import ControllerLocked
from localrules.search.history import rebuild
from localrules.spaces import default_budget, load_space
from localrules.store import open_store


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/search.db") as s:
        yield s


def _controller(store, name="exp", space_name="wm-ad", budget=None, **settings):
    """A controller over TPE alone: no reference runs (tests/test_references.py has those)."""
    space = load_space(space_name, budget or default_budget("digits"))
    settings = SearchSettings(**{"references": (), **settings})
    experiment = open_experiment(store, name, space, settings)
    return Controller(store, experiment, space, settings)


def toy_objective(params) -> float:
    """Peaked in log(decay) and σ; noise off and simultaneous updates are worse."""
    score = 1.0 - (math.log10(params["decay"]) + 2.0) ** 2 / 100.0
    score -= 0.3 * (params.get("sigma", 0.0) - 0.7) ** 2
    score -= 0.2 * (not params["noise"]) + 0.1 * (not params["alternate"])
    return score


def drain(store, experiment: str, objective=toy_objective, worker="w") -> int:
    """Run every queued trial in order, scored by ``objective`` on its params."""
    return finish_queued(store, experiment, lambda trial: objective(trial.params), worker)


def test_history_rebuilt_from_the_store_equals_the_one_written(store):
    c = _controller(store, max_trials=12, concurrency=12, tpe=TpeSettings(n_startup_jobs=4))
    c.step()
    drain(store, "exp")
    written = store.trials("exp")
    trials = rebuild(written)
    assert trials.tids == [t.trial_id for t in written]
    for doc, t in zip(trials.trials, written, strict=True):
        assert doc["misc"]["idxs"] == t.misc["idxs"]
        assert doc["misc"]["vals"] == t.misc["vals"]
        assert doc["result"]["loss"] == -t.result["objective"]
    # The params each trial stores are what its vals decode to, and its config follows them.
    for t in written:
        assert c.space.params_from_vals(t.misc["vals"]) == t.params
        assert c.space.config(t.params, seed=t.config["seed"]).to_dict() == t.config


def test_queue_is_topped_up_to_concurrency_and_stops_at_max_trials(store):
    c = _controller(store, max_trials=5, concurrency=2)
    assert c.step() == 2 and c.step() == 0
    assert store.counts("exp")["queued"] == 2
    trial = store.reserve("w", 60)
    store.complete("exp", trial.trial_id, trial.attempt, {"objective": 0.5})
    assert c.step() == 1
    drain(store, "exp")
    assert c.step() == 2 and c.step() == 0
    drain(store, "exp")
    assert c.step() == 0
    assert [t.trial_id for t in store.trials("exp")] == [0, 1, 2, 3, 4]
    assert c.status().finished


def test_pending_trials_count_towards_the_startup_trials(store):
    # With 3 startup trials and 3 pending, the 4th suggestion is TPE's, not random: TPE with no
    # finished trials puts every observation above γ, so it differs from the random draw.
    c = _controller(store, max_trials=10, concurrency=4, tpe=TpeSettings(n_startup_jobs=3))
    c.step()
    random_only = _controller(store, name="rand", max_trials=10, concurrency=4,
                              tpe=TpeSettings(n_startup_jobs=100))
    random_only.step()
    a, b = store.trials("exp"), store.trials("rand")
    assert [t.params for t in a[:3]] == [t.params for t in b[:3]]
    assert a[3].params != b[3].params


def test_same_seed_and_completion_order_give_the_same_suggestions(tmp_path):
    runs = []
    for i in range(2):
        with open_store(f"sqlite:///{tmp_path}/s{i}.db") as s:
            c = _controller(s, max_trials=14, concurrency=3, seed=7,
                            tpe=TpeSettings(n_startup_jobs=5))
            while not c.status().finished:
                c.step()
                drain(s, "exp")
            runs.append([t.params for t in s.trials("exp")])
    assert runs[0] == runs[1]
    with open_store(f"sqlite:///{tmp_path}/other.db") as s:
        c = _controller(s, max_trials=3, concurrency=3, seed=8)
        c.step()
        assert [t.params for t in s.trials("exp")] != runs[0][:3]


def test_a_second_controller_is_locked_out_and_a_restarted_one_continues(store):
    first = _controller(store, max_trials=6, concurrency=2)
    first.lock_seconds = 0.5
    first.step()
    # Opening the search takes the lock, before a resume may touch the settings.
    with pytest.raises(ControllerLocked, match="another controller"):
        _controller(store, max_trials=6, concurrency=2)
    # The first controller dies without releasing its lock; once it expires, a new one takes
    # over and continues with fresh ids.
    import time

    time.sleep(0.6)
    drain(store, "exp")
    second = _controller(store, max_trials=6, concurrency=2)
    assert second.step() == 2
    ids = [t.trial_id for t in store.trials("exp")]
    assert ids == sorted(set(ids)) == [0, 1, 2, 3]


def test_expired_leases_are_requeued_by_the_controller(store):
    c = _controller(store, max_trials=2, concurrency=1, max_attempts=2)
    c.step()
    trial = store.reserve("dead-worker", lease_seconds=0.01)
    import time

    time.sleep(0.05)
    c.step()
    assert store.get_trial("exp", trial.trial_id).state == "queued"
    again = store.reserve("w2", lease_seconds=0.01)
    assert again.trial_id == trial.trial_id and again.attempt == 2
    time.sleep(0.05)
    c.step()
    failed = store.get_trial("exp", trial.trial_id)
    assert failed.state == "failed" and "lease expired" in failed.error
    # A failed trial still counts towards max_trials: one more is queued, not two.
    assert store.counts("exp")["queued"] == 1


def test_diverged_trials_are_modelled_at_chance_level(store):
    c = _controller(store, max_trials=3, concurrency=3)
    c.step()
    trial = store.reserve("w", 60)
    store.complete("exp", trial.trial_id, trial.attempt,
                   {"objective": 0.1, "top1": None, "diverged": True, "chance": 0.1})
    history = rebuild(store.trials("exp"))
    doc = next(d for d in history.trials if d["tid"] == trial.trial_id)
    assert doc["result"] == {"status": "ok", "loss": -0.1}


def test_experiment_name_reused_with_another_space_or_budget_is_refused(store):
    _controller(store, "e1", "wm")
    with pytest.raises(ValueError, match="space 'wm', not 'ia'"):
        _controller(store, "e1", "ia")
    with pytest.raises(ValueError, match="epochs 10 → 5"):
        _controller(store, "e1", "wm", budget=default_budget("digits", epochs=5))
    # Resuming with other search settings updates them.
    c = _controller(store, "e1", "wm", max_trials=50)
    assert store.get_experiment("e1").settings["max_trials"] == 50 == c.settings.max_trials


def _best_of(tmp_path, tag: str, seed: int, startup: int, budget: int) -> float:
    with open_store(f"sqlite:///{tmp_path}/{tag}-{seed}.db") as s:
        c = _controller(s, max_trials=budget, concurrency=1, seed=seed,
                        tpe=TpeSettings(n_startup_jobs=startup))
        while not c.status().finished:
            c.step()
            drain(s, "exp")
        return max(t.objective for t in s.trials("exp"))


def test_tpe_beats_random_search_on_a_toy_objective(tmp_path):
    budget, seeds = 30, range(5)
    tpe = [_best_of(tmp_path, "tpe", s, startup=8, budget=budget) for s in seeds]
    rnd = [_best_of(tmp_path, "rnd", s, startup=budget, budget=budget) for s in seeds]
    assert statistics.mean(tpe) > statistics.mean(rnd), (tpe, rnd)
    assert np.sum(np.array(tpe) > np.array(rnd)) >= 3, (tpe, rnd)


def test_the_controller_runs_unchanged_on_every_backend(store_url):
    with open_store(store_url) as s:
        c = _controller(s, max_trials=8, concurrency=3, seed=5, tpe=TpeSettings(n_startup_jobs=3))
        while not c.status().finished:
            c.step()
            drain(s, "exp")
        trials = s.trials("exp")
        assert [t.trial_id for t in trials] == list(range(8))
        assert all(t.state == "done" for t in trials)
        assert c.status().best.objective == max(t.objective for t in trials)
        history = rebuild(s.history("exp"))
        assert history.tids == list(range(8))

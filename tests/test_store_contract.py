"""The TrialStore contract: what every backend must do, written once and run against each.

Every test takes the ``store`` fixture from ``conftest.py``: a fresh, empty store, parametrized
over the backends in ``STORE_BACKENDS`` (today SQLite; a backend joins by adding its name there
and a branch in the ``store_url`` fixture). ``store_url`` names the same database, for tests that
reopen it; several processes share it in the last tests. Backend-specific behaviour (URL forms,
journal mode, indexes) lives in ``test_store_<backend>.py``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
import threading
import time
from typing import Any

import pytest

from localrules.store import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    STATES,
    Experiment,
    ExperimentNotFound,
    LeaseLost,
    LockLost,
    StoreError,
    Trial,
    TrialExists,
    open_store,
)

LEASE = 60.0

# A hyperopt-shaped trial: conditional params (``sigma`` only under ``noise``), hyperopt's
# idxs/vals with empty lists for inactive labels, and every JSON type, bool next to int.
CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "width": 16,
    "rule": {"kind": "information", "weights": {"decay": 1e-11, "amp": 2.5, "null": 0.0},
             "ops": {"center_input": True, "batch_center": False},
             "noise": {"distribution": "gaussian", "stddev": 0.3}},
    "run": {"epochs": 3, "drop_epochs": [1, 2], "alignment_lr": None, "momentum": 0.9,
            "delay_epochs": 0, "alternate": False},
    "data_dir": "/data/σ",
    "empty": {},
    "nothing": [],
}
PARAMS: dict[str, Any] = {"noise": True, "sigma": 0.3, "decay": 1e-11, "delay_epochs": 0,
                          "alternate": False, "batch_size": 256, "amp_decay_ratio": 1e7}
MISC: dict[str, Any] = {
    "tid": 0,
    "cmd": ["domain_attachment", "FMinIter_Domain"],
    "workdir": None,
    "idxs": {"noise": [0], "sigma": [0], "decay": [0], "null_weight": []},
    "vals": {"noise": [1], "sigma": [0.3], "decay": [1e-11], "null_weight": []},
    "nested": [[1, 2.0], [True, None, [1e-300, -0.5, "x"]], []],
}
RESULT: dict[str, Any] = {"objective": 0.25, "top1": 0.75, "diverged": False, "epochs": 3,
                          "history": [{"epoch": 1, "loss": 1.5}, {"epoch": 2, "loss": 1e-11}],
                          "code_version": "0.1.0"}


# --- helpers ------------------------------------------------------------------------------------
def experiment_doc(name: str = "exp", **overrides: Any) -> Experiment:
    fields: dict[str, Any] = {
        "name": name,
        "space_name": "wm",
        "space_source": {"kind": "paper", "name": "wm", "nodes": [["sigma", 1e-10, 1.0]]},
        "fingerprint": "sha256:" + "0" * 64,
        "budget": {"epochs": 3, "dataset": "digits", "width": 16},
        "settings": {"seed": 7, "max_trials": 10, "objective": "top1"},
    }
    return Experiment(**{**fields, **overrides})


def add_trials(store, experiment: str, n: int, created_at: float | None = None,
               **overrides: Any) -> list[Trial]:
    """``n`` queued trials with fresh ids (all with one ``created_at`` if given)."""
    ids = store.allocate_trial_ids(experiment, n)
    trials = [
        Trial(experiment=experiment, trial_id=i, config=CONFIG, params={**PARAMS, "tid": i},
              misc={**MISC, "tid": i}, **({} if created_at is None else {"created_at": created_at}),
              **overrides)
        for i in ids
    ]
    store.add_trials(trials)
    return trials


@pytest.fixture
def exp(store) -> str:
    """An experiment in the store, by name."""
    return store.create_experiment(experiment_doc("exp")).name


def assert_same(got: Any, want: Any, path: str = "$") -> None:
    """Equal, and of the same JSON types all the way down (True is not 1, 1.0 is not 1)."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} {got!r} != {want!r}"
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def one(store, exp: str, trial_id: int) -> Trial:
    trial = store.get_trial(exp, trial_id)
    assert trial is not None
    return trial


# The writes a worker makes, each naming the attempt it holds (its fencing token).
WRITES = {
    "heartbeat": lambda s, e, i, a: s.heartbeat(e, i, a, LEASE),
    "report_progress": lambda s, e, i, a: s.report_progress(e, i, a, {"epoch": 9}),
    "complete": lambda s, e, i, a: s.complete(e, i, a, {"objective": -1.0}),
    "fail": lambda s, e, i, a: s.fail(e, i, a, "stale worker"),
    "release": lambda s, e, i, a: s.release(e, i, a),
}


# --- experiments --------------------------------------------------------------------------------
def test_create_experiment_returns_the_stored_document(store):
    doc = experiment_doc("wm-ad.v2_1")
    stored = store.create_experiment(doc)
    assert stored == doc
    assert store.get_experiment("wm-ad.v2_1") == doc
    assert_same(store.get_experiment("wm-ad.v2_1").to_dict(), doc.to_dict())


def test_create_experiment_again_returns_the_first_unchanged(store):
    first = store.create_experiment(experiment_doc("exp"))
    again = store.create_experiment(experiment_doc(
        "exp", fingerprint="sha256:" + "1" * 64, settings={"seed": 99}, created_at=1.0))
    assert again == first
    assert store.get_experiment("exp") == first
    assert [e.name for e in store.list_experiments()] == ["exp"]


def test_get_and_list_experiments(store):
    assert store.get_experiment("nope") is None
    assert store.list_experiments() == []
    docs = {name: store.create_experiment(experiment_doc(name)) for name in ("b", "a", "c")}
    assert store.get_experiment("a") == docs["a"]
    assert store.get_experiment("nope") is None
    listed = store.list_experiments()
    assert sorted(e.name for e in listed) == ["a", "b", "c"]
    assert all(e == docs[e.name] for e in listed)


def test_update_settings_merges(store, exp):
    before = store.get_experiment(exp)
    updated = store.update_settings(exp, {"max_trials": 20, "tpe": {"n_startup": 5}})
    want = {"seed": 7, "max_trials": 20, "objective": "top1", "tpe": {"n_startup": 5}}
    assert_same(dict(updated.settings), want)
    assert_same(dict(store.get_experiment(exp).settings), want)
    # Nothing else about the experiment changes.
    assert store.get_experiment(exp) == dataclasses.replace(before, settings=want)


@pytest.mark.parametrize("call", [
    lambda s: s.allocate_trial_ids("nope", 1),
    lambda s: s.add_trials([Trial(experiment="nope", trial_id=0, config={}, params={}, misc={})]),
    lambda s: s.update_settings("nope", {"max_trials": 1}),
], ids=["allocate_trial_ids", "add_trials", "update_settings"])
def test_unknown_experiment(store, exp, call):
    with pytest.raises(ExperimentNotFound):
        call(store)
    assert store.get_experiment("nope") is None
    assert store.trials("nope") == []


@pytest.mark.parametrize("name", ["", " ", "a b", "../x", "a/b", "-x", ".x", "_x", "x" * 101,
                                  "ü", "a\n", None, 3])
def test_experiment_rejects_invalid_names(name):
    with pytest.raises(ValueError, match="invalid experiment name"):
        experiment_doc(name)


@pytest.mark.parametrize("name", ["a", "0", "x" * 100, "wm-ad-ops.tpe_2"])
def test_experiment_accepts_valid_names(store, name):
    assert store.create_experiment(experiment_doc(name)).name == name


# --- trial ids and inserts ----------------------------------------------------------------------
def test_allocate_trial_ids_is_monotonic_and_never_reuses(store, exp):
    first = store.allocate_trial_ids(exp, 3)
    assert store.allocate_trial_ids(exp, 0) == []
    second = store.allocate_trial_ids(exp, 5)
    third = store.allocate_trial_ids(exp, 1)
    ids = first + second + third
    assert [len(first), len(second), len(third)] == [3, 5, 1]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_allocate_trial_ids_survives_reopening(store, store_url, exp):
    before = store.allocate_trial_ids(exp, 4)
    store.close()
    with open_store(store_url) as reopened:
        after = reopened.allocate_trial_ids(exp, 2)
    assert min(after) > max(before)


def test_add_trials_with_a_taken_id_inserts_none(store, exp):
    kept = add_trials(store, exp, 2)
    fresh = store.allocate_trial_ids(exp, 2)
    clash = Trial(experiment=exp, trial_id=kept[1].trial_id, config={"other": 1}, params={},
                  misc={})
    batch = [Trial(experiment=exp, trial_id=fresh[0], config={}, params={}, misc={}), clash,
             Trial(experiment=exp, trial_id=fresh[1], config={}, params={}, misc={})]
    with pytest.raises(TrialExists):
        store.add_trials(batch)
    assert store.trials(exp) == kept


def test_add_trials_with_a_repeated_id_in_the_batch_inserts_none(store, exp):
    (i,) = store.allocate_trial_ids(exp, 1)
    twice = Trial(experiment=exp, trial_id=i, config={}, params={}, misc={})
    with pytest.raises(TrialExists):
        store.add_trials([twice, twice])
    assert store.trials(exp) == []


def test_documents_round_trip_exactly(store, exp):
    (trial,) = add_trials(store, exp, 1, created_at=1_700_000_000.123456)
    got = one(store, exp, trial.trial_id)
    assert got == trial
    assert got.state == QUEUED and got.attempt == 0 and got.worker is None
    for name in ("config", "params", "misc"):
        assert_same(getattr(got, name), getattr(trial, name), name)
    assert_same(store.trials(exp)[0].misc, trial.misc)
    reserved = store.reserve("w", LEASE)
    assert_same(reserved.params, trial.params)
    store.report_progress(exp, trial.trial_id, reserved.attempt,
                          {"epoch": 2, "metrics": {"loss": 1e-11, "nan_seen": False}})
    store.complete(exp, trial.trial_id, reserved.attempt, RESULT)
    done = one(store, exp, trial.trial_id)
    assert_same(done.result, RESULT)
    assert_same(done.progress, {"epoch": 2, "metrics": {"loss": 1e-11, "nan_seen": False}})
    assert done.objective == 0.25


# --- reserving ------------------------------------------------------------------------------
def test_reserve_takes_the_oldest_queued_trial(store, exp):
    ids = store.allocate_trial_ids(exp, 4)
    created = {ids[0]: 300.0, ids[1]: 100.0, ids[2]: 200.0, ids[3]: 100.0}
    store.add_trials([Trial(experiment=exp, trial_id=i, config={}, params={}, misc={},
                            created_at=created[i]) for i in reversed(ids)])
    order = []
    while (trial := store.reserve("w", LEASE)) is not None:
        order.append(trial.trial_id)
    assert order == [ids[1], ids[3], ids[2], ids[0]]


def test_reserve_holds_the_trial_with_a_lease(store, exp):
    (queued,) = add_trials(store, exp, 1)
    before = time.time()
    trial = store.reserve("worker-1", 30.0)
    after = time.time()
    assert trial is not None and trial.trial_id == queued.trial_id
    assert trial.state == RUNNING and trial.attempt == 1 and trial.worker == "worker-1"
    assert before + 30.0 - 1 <= trial.lease_expires <= after + 30.0 + 1
    assert before - 1 <= trial.started_at <= after + 1
    assert one(store, exp, queued.trial_id) == trial
    assert store.reserve("worker-2", 30.0) is None


def test_reserve_on_an_empty_queue(store, exp):
    assert store.reserve("w", LEASE) is None
    assert store.reserve("w", LEASE, experiments=[exp]) is None


def test_reserve_respects_the_experiment_filter(store, exp):
    store.create_experiment(experiment_doc("other"))
    (old,) = add_trials(store, exp, 1, created_at=1.0)
    (new,) = add_trials(store, "other", 1, created_at=2.0)
    assert store.reserve("w", LEASE, experiments=[]) is None
    assert store.reserve("w", LEASE, experiments=["missing"]) is None
    got = store.reserve("w", LEASE, experiments=["other"])
    assert (got.experiment, got.trial_id) == ("other", new.trial_id)
    assert store.reserve("w", LEASE, experiments=["other"]) is None
    assert one(store, exp, old.trial_id).state == QUEUED
    got = store.reserve("w", LEASE, experiments=["missing", exp])
    assert (got.experiment, got.trial_id) == (exp, old.trial_id)


def test_finished_trials_are_never_reserved(store, exp):
    a, b, c, d = add_trials(store, exp, 4)
    store.cancel(exp, [a.trial_id])
    for trial, finish in ((b, "complete"), (c, "fail")):
        got = store.reserve("w", LEASE)
        assert got.trial_id == trial.trial_id
        WRITES[finish](store, exp, got.trial_id, got.attempt)
    got = store.reserve("w", LEASE)
    assert got.trial_id == d.trial_id
    assert store.reserve("w", LEASE) is None
    assert [t.state for t in store.trials(exp)] == [CANCELLED, DONE, FAILED, RUNNING]


# --- a worker's writes --------------------------------------------------------------------------
def test_heartbeat_extends_the_lease(store, exp):
    add_trials(store, exp, 1)
    trial = store.reserve("w", 10.0)
    store.heartbeat(exp, trial.trial_id, trial.attempt, 1000.0)
    beaten = one(store, exp, trial.trial_id)
    assert beaten.lease_expires >= trial.lease_expires + 900
    assert beaten.state == RUNNING and beaten.attempt == 1 and beaten.worker == "w"
    assert store.requeue_expired(max_attempts=3, now=time.time() + 500) == []


def test_a_late_heartbeat_still_holds_until_someone_requeues(store, exp):
    add_trials(store, exp, 1)
    trial = store.reserve("w", 0.0)
    store.heartbeat(exp, trial.trial_id, trial.attempt, LEASE)
    assert store.requeue_expired(max_attempts=3) == []
    assert one(store, exp, trial.trial_id).state == RUNNING


def test_report_progress_replaces_the_progress(store, exp):
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    store.report_progress(exp, trial.trial_id, 1, {"epoch": 1, "metrics": {"loss": 2.5}})
    assert_same(one(store, exp, trial.trial_id).progress, {"epoch": 1, "metrics": {"loss": 2.5}})
    store.report_progress(exp, trial.trial_id, 1, {"epoch": 2})
    got = one(store, exp, trial.trial_id)
    assert_same(got.progress, {"epoch": 2})
    assert got.state == RUNNING


def test_complete(store, exp):
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    store.complete(exp, trial.trial_id, trial.attempt, RESULT)
    got = one(store, exp, trial.trial_id)
    assert got.state == DONE and got.attempt == 1
    assert_same(got.result, RESULT)
    assert got.lease_expires is None
    assert got.finished_at is not None and got.finished_at >= got.started_at
    assert got.error is None


def test_documents_must_be_strict_json(store, exp):
    nan = float("nan")
    with pytest.raises(ValueError, match="strict JSON"):
        store.add_trials([Trial(experiment=exp, trial_id=0, config={"x": nan}, params={},
                                misc={})])
    assert store.trials(exp) == []
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    with pytest.raises(ValueError, match="strict JSON"):
        store.complete(exp, trial.trial_id, trial.attempt, {"objective": nan})
    with pytest.raises(ValueError, match="strict JSON"):
        store.report_progress(exp, trial.trial_id, trial.attempt, {"loss": float("inf")})
    got = one(store, exp, trial.trial_id)
    assert got.state == RUNNING and got.result is None and got.progress is None

def test_trials_with_wrong_types_are_refused(store, exp):
    (ok,) = add_trials(store, exp, 1)
    bad = dataclasses.replace(ok, trial_id=ok.trial_id + 1, config="__import__('os')")
    with pytest.raises(ValueError, match="config"):
        store.add_trials([bad])
    assert [t.trial_id for t in store.trials(exp)] == [ok.trial_id]

def test_fail(store, exp):
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    store.fail(exp, trial.trial_id, trial.attempt, "ValueError: width must be >= 1")
    got = one(store, exp, trial.trial_id)
    assert got.state == FAILED and got.error == "ValueError: width must be >= 1"
    assert got.lease_expires is None and got.finished_at is not None and got.result is None


def test_release_requeues_with_the_same_attempt(store, exp):
    add_trials(store, exp, 2)
    trial = store.reserve("w1", LEASE)
    store.release(exp, trial.trial_id, trial.attempt)
    got = one(store, exp, trial.trial_id)
    assert got.state == QUEUED and got.attempt == 1 and got.lease_expires is None
    again = store.reserve("w2", LEASE)
    assert again.trial_id == trial.trial_id  # still the oldest
    assert again.attempt == 2 and again.worker == "w2" and again.state == RUNNING
    store.complete(exp, again.trial_id, again.attempt, RESULT)
    assert one(store, exp, trial.trial_id).state == DONE


# --- fencing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("write", list(WRITES))
def test_a_wrong_attempt_changes_nothing(store, exp, write):
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    store.report_progress(exp, trial.trial_id, 1, {"epoch": 1})
    before = one(store, exp, trial.trial_id)
    for wrong in (0, 2, -1):
        with pytest.raises(LeaseLost):
            WRITES[write](store, exp, trial.trial_id, wrong)
    assert one(store, exp, trial.trial_id) == before


@pytest.mark.parametrize("write", list(WRITES))
def test_writes_to_a_queued_trial_are_refused(store, exp, write):
    (trial,) = add_trials(store, exp, 1)
    with pytest.raises(LeaseLost):
        WRITES[write](store, exp, trial.trial_id, 0)
    assert one(store, exp, trial.trial_id) == trial


@pytest.mark.parametrize("write", list(WRITES))
def test_a_requeued_attempt_is_fenced_off(store, exp, write):
    add_trials(store, exp, 1)
    first = store.reserve("slow", 1.0)
    (requeued,) = store.requeue_expired(max_attempts=3, now=time.time() + 100)
    assert requeued.state == QUEUED
    if write not in ("complete", "fail"):  # a late result is still taken (test below)
        with pytest.raises(LeaseLost):  # requeued, not yet taken again
            WRITES[write](store, exp, first.trial_id, first.attempt)
    second = store.reserve("fast", LEASE)
    assert second.trial_id == first.trial_id and second.attempt == 2
    taken = one(store, exp, first.trial_id)
    with pytest.raises(LeaseLost):
        WRITES[write](store, exp, first.trial_id, first.attempt)
    assert one(store, exp, first.trial_id) == taken
    store.complete(exp, second.trial_id, second.attempt, RESULT)
    got = one(store, exp, first.trial_id)
    assert got.state == DONE and got.worker == "fast"
    assert_same(got.result, RESULT)


@pytest.mark.parametrize("write", list(WRITES))
def test_writes_after_complete_are_refused(store, exp, write):
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    store.complete(exp, trial.trial_id, trial.attempt, RESULT)
    done = one(store, exp, trial.trial_id)
    with pytest.raises(LeaseLost):
        WRITES[write](store, exp, trial.trial_id, trial.attempt)
    assert one(store, exp, trial.trial_id) == done


@pytest.mark.parametrize("write", list(WRITES))
def test_writes_to_a_missing_trial(store, exp, write):
    add_trials(store, exp, 1)
    store.reserve("w", LEASE)
    for experiment, trial_id in ((exp, 10_000), ("nope", 0)):
        with pytest.raises(StoreError) as info:
            WRITES[write](store, experiment, trial_id, 1)
        # Not LeaseLost: nobody took this trial over, it never existed.
        assert not isinstance(info.value, LeaseLost)


# --- expired leases ------------------------------------------------------------------------
def test_requeue_expired(store, exp):
    # a: running on its 2nd attempt, lease expired; b: 1st attempt, expired; c: a live lease;
    # d: done; e: queued. With max_attempts=2 a fails, b goes back to the queue, the rest stay.
    a, b, c, d, e = add_trials(store, exp, 5)
    assert store.reserve("w", 1.0).trial_id == a.trial_id
    (back,) = store.requeue_expired(max_attempts=5, now=time.time() + 100)
    assert back.trial_id == a.trial_id and back.state == QUEUED
    for trial, attempt, lease in ((a, 2, 1.0), (b, 1, 1.0), (c, 1, 1000.0), (d, 1, 1.0)):
        got = store.reserve("w", lease)
        assert (got.trial_id, got.attempt) == (trial.trial_id, attempt)
    store.complete(exp, d.trial_id, 1, RESULT)
    untouched = {t.trial_id: one(store, exp, t.trial_id) for t in (c, d, e)}

    changed = store.requeue_expired(max_attempts=2, now=time.time() + 100)

    by_id = {t.trial_id: t for t in changed}
    assert set(by_id) == {a.trial_id, b.trial_id}
    assert by_id == {i: one(store, exp, i) for i in by_id}  # the trials as they are now
    failed, requeued = by_id[a.trial_id], by_id[b.trial_id]
    assert failed.state == FAILED and failed.attempt == 2
    assert "lease" in failed.error.lower() and failed.finished_at is not None
    assert failed.lease_expires is None
    assert requeued.state == QUEUED and requeued.attempt == 1
    assert requeued.lease_expires is None and requeued.error is None
    assert {i: one(store, exp, i) for i in untouched} == untouched
    assert store.requeue_expired(max_attempts=2, now=time.time() + 100) == []
    # b is reservable again, a is not.
    assert store.reserve("w", LEASE).trial_id == b.trial_id
    assert store.reserve("w", LEASE).trial_id == e.trial_id
    assert store.reserve("w", LEASE) is None


def test_requeue_expired_with_one_attempt_fails_at_once(store, exp):
    add_trials(store, exp, 1)
    store.reserve("w", 1.0)
    (got,) = store.requeue_expired(max_attempts=1, now=time.time() + 10)
    assert got.state == FAILED and "lease" in got.error.lower()
    assert store.reserve("w", LEASE) is None


def test_only_lost_leases_count_towards_max_attempts(store, exp):
    # Two graceful hand-backs (preemption notices), then two lost leases: max_attempts=2 fails
    # the trial at the second lapse, on its fourth attempt.
    (trial,) = add_trials(store, exp, 1)
    for attempt in (1, 2):
        got = store.reserve("w", LEASE)
        assert got.attempt == attempt
        store.release(exp, trial.trial_id, attempt)
    assert one(store, exp, trial.trial_id).lapses == 0
    store.reserve("w", 1.0)
    (back,) = store.requeue_expired(max_attempts=2, now=time.time() + 100)
    assert back.state == QUEUED and back.lapses == 1 and back.attempt == 3
    store.reserve("w", 1.0)
    (failed,) = store.requeue_expired(max_attempts=2, now=time.time() + 100)
    assert failed.state == FAILED and failed.lapses == 2 and failed.attempt == 4
    assert "expired 2 times" in failed.error

@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_a_result_arriving_after_requeue_is_taken_until_someone_reserves(store, exp, finish):
    a, b = add_trials(store, exp, 2)
    late = store.reserve("w1", 1.0)
    assert late.trial_id == a.trial_id
    store.requeue_expired(max_attempts=3, now=time.time() + 100)
    # Nobody holds it: the late result of that attempt is still good work.
    WRITES[finish](store, exp, late.trial_id, late.attempt)
    got = one(store, exp, late.trial_id)
    assert got.state == (DONE if finish == "complete" else FAILED) and got.lapses == 1
    # Once another attempt holds a trial, the old one's results are refused.
    stale = store.reserve("w1", 1.0)
    store.requeue_expired(max_attempts=3, now=time.time() + 100)
    fresh = store.reserve("w2", LEASE)
    assert (stale.trial_id, fresh.trial_id, fresh.attempt) == (b.trial_id, b.trial_id, 2)
    with pytest.raises(LeaseLost):
        WRITES[finish](store, exp, stale.trial_id, stale.attempt)
    # Heartbeats and progress from a requeued attempt are always refused.
    assert one(store, exp, b.trial_id).state == RUNNING

def test_requeue_expired_uses_the_current_time_by_default(store, exp):
    add_trials(store, exp, 2)
    expired = store.reserve("w", 0.0)
    live = store.reserve("w", LEASE)
    time.sleep(0.05)
    (got,) = store.requeue_expired(max_attempts=3)
    assert got.trial_id == expired.trial_id and got.state == QUEUED
    assert one(store, exp, live.trial_id).state == RUNNING


def test_a_running_trial_without_a_lease_is_never_requeued_or_reserved(store, exp):
    """How the Ray engine stores its trials: running, attempt 1, no lease (Ray owns them)."""
    (trial,) = add_trials(store, exp, 1, state=RUNNING, attempt=1, worker="ray:abc")
    assert store.requeue_expired(max_attempts=1, now=1e12) == []
    assert store.reserve("w", LEASE) is None
    store.report_progress(exp, trial.trial_id, 1, {"epoch": 1})
    store.complete(exp, trial.trial_id, 1, {"objective": 0.5})
    assert one(store, exp, trial.trial_id).state == DONE


# --- cancelling ---------------------------------------------------------------------------
def test_cancel_all(store, exp):
    store.create_experiment(experiment_doc("other"))
    done, failed, running, queued = add_trials(store, exp, 4)
    (elsewhere,) = add_trials(store, "other", 1)
    for trial, finish in ((done, "complete"), (failed, "fail")):
        got = store.reserve("w", LEASE, experiments=[exp])
        assert got.trial_id == trial.trial_id
        WRITES[finish](store, exp, got.trial_id, got.attempt)
    holder = store.reserve("w", LEASE, experiments=[exp])
    assert holder.trial_id == running.trial_id
    assert store.cancel(exp) == 2
    states = {t.trial_id: t.state for t in store.trials(exp)}
    assert states == {queued.trial_id: CANCELLED, running.trial_id: CANCELLED,
                      done.trial_id: DONE, failed.trial_id: FAILED}
    assert one(store, "other", elsewhere.trial_id).state == QUEUED
    assert store.cancel(exp) == 0
    assert store.reserve("w", LEASE, experiments=[exp]) is None
    # The worker of a cancelled running trial finds its lease gone.
    for write in ("heartbeat", "complete"):
        with pytest.raises(LeaseLost):
            WRITES[write](store, exp, holder.trial_id, holder.attempt)
    assert one(store, exp, holder.trial_id).state == CANCELLED
    assert one(store, exp, holder.trial_id).result is None


def test_cancel_given_ids(store, exp):
    a, b, c, d = add_trials(store, exp, 4)
    running = store.reserve("w", LEASE)
    assert running.trial_id == a.trial_id
    assert store.cancel(exp, [a.trial_id, c.trial_id, 12_345]) == 2
    assert [t.state for t in store.trials(exp)] == [CANCELLED, QUEUED, CANCELLED, QUEUED]
    assert store.cancel(exp, iter([b.trial_id])) == 1
    assert store.cancel(exp, []) == 0
    assert store.reserve("w", LEASE).trial_id == d.trial_id
    with pytest.raises(LeaseLost):
        store.complete(exp, a.trial_id, running.attempt, RESULT)


# --- queries ------------------------------------------------------------------------------------
def test_counts_has_every_state(store, exp):
    assert store.counts(exp) == dict.fromkeys(STATES, 0)
    add_trials(store, exp, 6)
    for finish in ("complete", "fail", "heartbeat"):
        trial = store.reserve("w", LEASE)
        WRITES[finish](store, exp, trial.trial_id, trial.attempt)
    store.cancel(exp, [store.trials(exp, [QUEUED])[0].trial_id])
    assert store.counts(exp) == {QUEUED: 2, RUNNING: 1, DONE: 1, FAILED: 1, CANCELLED: 1}


def test_trials_filters_and_orders_by_id(store, exp):
    store.create_experiment(experiment_doc("other"))
    add_trials(store, "other", 1)
    # Ids 2, 10 and 1 -- numeric order, whatever order and times they were added in.
    made = [Trial(experiment=exp, trial_id=i, config={}, params={"i": i}, misc={},
                  created_at=1000.0 - i) for i in (2, 10, 1)]
    store.add_trials(made)
    assert [t.trial_id for t in store.trials(exp)] == [1, 2, 10]
    first = store.reserve("w", LEASE, experiments=[exp])
    assert first.trial_id == 10  # the oldest
    assert [t.trial_id for t in store.trials(exp, [RUNNING])] == [10]
    assert [t.trial_id for t in store.trials(exp, states=[QUEUED])] == [1, 2]
    assert [t.trial_id for t in store.trials(exp, (QUEUED, RUNNING))] == [1, 2, 10]
    assert store.trials(exp, [DONE]) == []
    assert store.trials(exp, []) == []
    assert store.trials("nope") == []
    assert store.get_trial(exp, 3) is None



def test_history_is_the_projection_of_the_trials(store, exp):
    store.create_experiment(experiment_doc("other"))
    add_trials(store, "other", 1)
    add_trials(store, exp, 3)
    t = store.reserve("w", LEASE, experiments=[exp])
    store.complete(exp, t.trial_id, t.attempt, {"objective": 0.25, "diverged": False})
    store.cancel(exp, [2])
    history = store.history(exp)
    assert [(h.trial_id, h.state, h.result) for h in history] == [
        (0, DONE, {"objective": 0.25, "diverged": False}), (1, QUEUED, None), (2, CANCELLED, None)]
    for h, trial in zip(history, store.trials(exp), strict=True):
        assert_same(h.misc, trial.misc)
    assert store.history("nope") == []

# --- promotion (multi-fidelity) -----------------------------------------------------------------
RUNG_0 = {"bracket": 0, "rung": 0, "epochs": 1}
RUNG_1 = {"bracket": 0, "rung": 1, "epochs": 3}
PAUSED = {"objective": 0.5, "epochs": 1, "rung": 0, "stopped_early": True,
          "rungs": [{"rung": 0, "epochs": 1, "objective": 0.5}]}


def paused(store, exp: str) -> Trial:
    """A trial of a multi-fidelity search that ran to rung 0 and paused there."""
    add_trials(store, exp, 1, fidelity=RUNG_0)
    t = store.reserve("w", LEASE, [exp])
    store.complete(exp, t.trial_id, t.attempt, PAUSED)
    return one(store, exp, t.trial_id)


def test_fidelity_round_trips_and_is_in_the_history(store, exp):
    trial = paused(store, exp)
    assert_same(dict(trial.fidelity), RUNG_0)
    (entry,) = store.history(exp)
    assert_same(dict(entry.fidelity), RUNG_0)
    assert entry.attempt == trial.attempt == 1


def test_promote_requeues_a_paused_trial_at_the_next_rung(store, exp):
    trial = paused(store, exp)
    _, cursor = store.changes(exp, 0)
    assert store.promote(exp, trial.trial_id, trial.attempt, RUNG_1) is True
    again = one(store, exp, trial.trial_id)
    assert (again.state, again.attempt, again.lapses) == (QUEUED, 1, 0)  # not a lapse
    assert_same(dict(again.fidelity), RUNG_1)
    assert_same(dict(again.result), PAUSED)  # the rung results stay
    assert again.worker is None and again.lease_expires is None and again.finished_at is None
    (entry,) = store.changes(exp, cursor)[0]
    assert entry.state == QUEUED and entry.fidelity == RUNG_1
    taken = store.reserve("w2", LEASE, [exp])
    assert (taken.trial_id, taken.attempt, taken.fidelity) == (trial.trial_id, 2, RUNG_1)


def test_a_promotion_is_made_at_most_once(store, exp):
    """Fenced by the attempt the decision read, and by the rung it paused at: a decision made
    twice (a restarted controller, a stale read) promotes once."""
    trial = paused(store, exp)
    assert store.promote(exp, trial.trial_id, trial.attempt, RUNG_1)
    assert not store.promote(exp, trial.trial_id, trial.attempt, RUNG_1)  # queued now
    taken = store.reserve("w", LEASE, [exp])
    store.complete(exp, taken.trial_id, taken.attempt, {**PAUSED, "rung": 1})
    assert not store.promote(exp, trial.trial_id, trial.attempt, RUNG_1)  # an old attempt
    assert not store.promote(exp, trial.trial_id, taken.attempt, RUNG_1)  # not at rung 0
    assert one(store, exp, trial.trial_id).state == DONE


@pytest.mark.parametrize("state", [QUEUED, RUNNING, FAILED, CANCELLED])
def test_only_a_done_trial_is_promoted(store, exp, state):
    add_trials(store, exp, 1, fidelity=RUNG_0)
    if state != QUEUED:
        t = store.reserve("w", LEASE, [exp])
        if state == FAILED:
            store.fail(exp, t.trial_id, t.attempt, "boom")
        elif state == CANCELLED:
            store.cancel(exp, [t.trial_id])
    trial = one(store, exp, 0)
    assert not store.promote(exp, 0, trial.attempt, RUNG_1)
    assert one(store, exp, 0).state == state


@pytest.mark.parametrize("fidelity", [{"bracket": 0, "rung": 1}, {"bracket": 0, "rung": 1,
                                      "epochs": 0}, {"bracket": -1, "rung": 1, "epochs": 3},
                                      {"bracket": 0, "rung": True, "epochs": 3},
                                      {**RUNG_1, "extra": 1}])
def test_a_malformed_fidelity_is_refused(store, exp, fidelity):
    trial = paused(store, exp)
    with pytest.raises(ValueError, match="fidelity"):
        store.promote(exp, trial.trial_id, trial.attempt, fidelity)
    with pytest.raises(ValueError, match="fidelity"):
        add_trials(store, exp, 1, fidelity=fidelity)
    assert one(store, exp, trial.trial_id).state == DONE


def test_promote_is_fenced_by_the_controller_lock(store, exp):
    trial = paused(store, exp)
    mine = store.take_lock("controller:exp", "a", LEASE)
    store.release_lock("controller:exp", "a")
    store.take_lock("controller:exp", "b", LEASE)
    with pytest.raises(LockLost):
        store.promote(exp, trial.trial_id, trial.attempt, RUNG_1, fence=mine)
    assert one(store, exp, trial.trial_id).state == DONE
    held = store.take_lock("controller:exp", "b", LEASE)
    assert store.promote(exp, trial.trial_id, trial.attempt, RUNG_1, fence=held)


# --- changes since a cursor ----------------------------------------------------------------
# Every write to a trial, whoever makes it, and the call that makes it happen in the test.
CHANGES = {
    **{name: lambda s, e, t, write=write: write(s, e, t.trial_id, t.attempt)
       for name, write in WRITES.items()},
    "reserve": lambda s, e, t: s.reserve("w2", LEASE, [e]),
    "requeue_expired": lambda s, e, t: s.requeue_expired(3, now=time.time() + 2 * LEASE),
    "cancel": lambda s, e, t: s.cancel(e, [t.trial_id]),
    "add_trials": lambda s, e, t: add_trials(s, e, 1),
}


def test_changes_from_zero_are_the_history(store, exp):
    assert store.changes(exp, 0)[0] == []
    add_trials(store, exp, 3)
    t = store.reserve("w", LEASE, [exp])
    store.complete(exp, t.trial_id, t.attempt, {"objective": 0.5})
    entries, cursor = store.changes(exp, 0)
    assert entries == store.history(exp) and [e.trial_id for e in entries] == [0, 1, 2]
    assert cursor >= max(e.seq for e in entries) > 0
    assert store.changes(exp, cursor)[0] == []  # nothing written since
    assert store.changes("nope", 0)[0] == []


@pytest.mark.parametrize("write", list(CHANGES))
def test_every_write_to_a_trial_is_a_change(store, exp, write):
    """Each write path numbers the trial it writes above the cursor; the other trials and
    experiments stay out."""
    store.create_experiment(experiment_doc("other"))
    add_trials(store, "other", 1)
    trial, _ = add_trials(store, exp, 2)
    held = store.reserve("w", LEASE, [exp])
    assert held.trial_id == trial.trial_id
    before, cursor = store.changes(exp, 0)
    add_trials(store, "other", 1)  # another experiment's writes are not this one's changes
    CHANGES[write](store, exp, held)
    entries, after = store.changes(exp, cursor)
    want = {"reserve": [1], "add_trials": [2]}.get(write, [trial.trial_id])
    assert [e.trial_id for e in entries] == want
    old = {e.trial_id: e.seq for e in before}
    assert all(e.seq > old.get(e.trial_id, 0) and e.seq <= after for e in entries)
    assert after > cursor
    assert entries == [e for e in store.history(exp) if e.trial_id in want]
    assert store.changes(exp, after)[0] == []


def test_a_refused_write_is_no_change(store, exp):
    add_trials(store, exp, 1)
    trial = store.reserve("w", LEASE)
    _, cursor = store.changes(exp, 0)
    with pytest.raises(LeaseLost):
        store.complete(exp, trial.trial_id, trial.attempt + 1, RESULT)
    assert store.cancel(exp, [99]) == 0
    assert store.changes(exp, cursor)[0] == []


@pytest.mark.parametrize("cursor", [-1, 1.5, "3", True, None])
def test_a_malformed_cursor_is_refused(store, exp, cursor):
    with pytest.raises(ValueError, match="cursor"):
        store.changes(exp, cursor)


# --- the controller lock ------------------------------------------------------------------
def test_lock(store):
    assert store.acquire_lock("exp/suggest", "A", LEASE) is True
    assert store.acquire_lock("exp/suggest", "B", LEASE) is False
    assert store.acquire_lock("other/suggest", "B", LEASE) is True  # locks are per name
    assert store.acquire_lock("exp/suggest", "A", 0.2) is True  # renew (and shorten)
    assert store.acquire_lock("exp/suggest", "B", LEASE) is False
    time.sleep(0.4)
    assert store.acquire_lock("exp/suggest", "B", LEASE) is True  # A's lease ran out
    assert store.acquire_lock("exp/suggest", "A", LEASE) is False
    store.release_lock("exp/suggest", "A")  # not A's: nothing happens
    assert store.acquire_lock("exp/suggest", "A", LEASE) is False
    store.release_lock("exp/suggest", "B")
    assert store.acquire_lock("exp/suggest", "A", LEASE) is True
    store.release_lock("never-taken", "A")


# --- one store object, two threads ----------------------------------------------------------
def test_a_heartbeat_thread_shares_the_store(store, exp):
    add_trials(store, exp, 41)
    held = store.reserve("w", LEASE)
    stop, errors, beats = threading.Event(), [], [0]

    def beat() -> None:
        while not stop.is_set():
            try:
                store.heartbeat(exp, held.trial_id, held.attempt, LEASE)
                beats[0] += 1
            except Exception as err:  # the test fails on any error
                errors.append(err)
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        done = 0
        while (trial := store.reserve("w", LEASE)) is not None:
            store.report_progress(exp, trial.trial_id, trial.attempt, {"epoch": 1})
            store.complete(exp, trial.trial_id, trial.attempt, {**RESULT, "tid": trial.trial_id})
            done += 1
    finally:
        stop.set()
        thread.join(10)
    assert errors == [] and beats[0] > 0 and done == 40
    assert store.counts(exp)[DONE] == 40
    assert one(store, exp, held.trial_id).state == RUNNING
    assert all(t.result["tid"] == t.trial_id for t in store.trials(exp, [DONE]))


# --- as a table ---------------------------------------------------------------------------------
def test_a_read_only_store_reads_everything_and_writes_nothing(store, store_url, exp):
    add_trials(store, exp, 2)
    reserved = store.reserve("w", LEASE, [exp])
    store.complete(exp, reserved.trial_id, reserved.attempt, RESULT)
    with open_store(store_url, read_only=True) as reader:
        assert reader.identity == store.identity
        assert reader.get_experiment(exp) == store.get_experiment(exp)
        assert [e.name for e in reader.list_experiments()] == [exp]
        assert reader.trials(exp) == store.trials(exp)
        assert reader.history(exp) == store.history(exp)
        assert reader.counts(exp) == store.counts(exp)
        for write in (lambda: reader.add_trials([]), lambda: reader.cancel(exp),
                      lambda: reader.reserve("w", LEASE, [exp]),
                      lambda: reader.acquire_lock("x", "me", 1.0),
                      lambda: reader.create_experiment(experiment_doc("other"))):
            with pytest.raises(StoreError, match="read-only"):
                write()
    assert store.get_experiment("other") is None and store.counts(exp)["queued"] == 1


def test_query_frame(store, exp):
    pd = pytest.importorskip("pandas")
    ids = store.allocate_trial_ids(exp, 3)
    store.add_trials([
        Trial(experiment=exp, trial_id=ids[0], config={}, params={"noise": True, "sigma": 0.3},
              misc={}, created_at=1_700_000_000.0),
        Trial(experiment=exp, trial_id=ids[1], config={}, params={"noise": False}, misc={},
              created_at=1_700_000_001.0),
        Trial(experiment=exp, trial_id=ids[2], config={}, params={"noise": True, "sigma": 0.7},
              misc={}, created_at=1_700_000_002.0),
    ])
    trial = store.reserve("w", LEASE)
    store.complete(exp, trial.trial_id, trial.attempt, RESULT)

    frame = store.query(exp)
    assert len(frame) == 3 and list(frame["trial_id"]) == ids
    assert list(frame["state"]) == [DONE, QUEUED, QUEUED]
    assert list(frame["params.noise"]) == [True, False, True]
    sigma = list(frame["params.sigma"])
    assert sigma[0] == 0.3 and sigma[2] == 0.7 and pd.isna(sigma[1])  # inactive: missing
    objective = list(frame["result.objective"])
    assert objective[0] == 0.25 and pd.isna(objective[1]) and pd.isna(objective[2])
    assert "result.history" not in frame.columns  # lists stay out of the table
    for column in ("created_at", "started_at", "updated_at", "finished_at"):
        assert isinstance(frame[column].dtype, pd.DatetimeTZDtype), column
        assert str(frame[column].dtype.tz) == "UTC", column
    assert frame["created_at"][1] == pd.Timestamp(1_700_000_001, unit="s", tz="UTC")
    assert frame["finished_at"][0] >= frame["started_at"][0]
    assert pd.isna(frame["finished_at"][1])

    done = store.query(exp, where="state == done")
    assert list(done["trial_id"]) == [ids[0]]


def test_query_frame_of_an_empty_experiment(store, exp):
    pytest.importorskip("pandas")
    from localrules.store.frame import BASE_COLUMNS

    frame = store.query(exp)
    assert frame.empty and len(frame) == 0
    assert set(BASE_COLUMNS) <= set(frame.columns)


# --- several processes on one store --------------------------------------------------------
def _drain(url: str, worker: str, name: str, barrier, results) -> None:
    """A worker process: reserve → complete until the queue is empty."""
    done: list[tuple[int, int]] = []
    errors: list[str] = []
    try:
        with open_store(url) as store:
            barrier.wait(60)
            while (trial := store.reserve(worker, 60.0, [name])) is not None:
                store.complete(name, trial.trial_id, trial.attempt,
                               {"objective": float(trial.trial_id), "worker": worker})
                done.append((trial.trial_id, trial.attempt))
                # A trial takes time; without it one process can drain the queue before the
                # others are even scheduled on a busy 2-core machine.
                time.sleep(0.005)
    except Exception as err:  # reported to the test, which fails on any
        errors.append(f"{worker}: {err!r}")
    finally:
        results.put((worker, done, errors))


def _create_and_fill(url: str, worker: str, name: str, barrier, results) -> None:
    """A process that opens a store nobody has created yet, at the same moment as the others."""
    creator, ids, errors = None, [], []
    try:
        barrier.wait(60)
        with open_store(url) as store:
            creator = store.create_experiment(
                experiment_doc(name, settings={"creator": worker})).settings["creator"]
            for _ in range(5):
                batch = store.allocate_trial_ids(name, 5)
                store.add_trials([Trial(experiment=name, trial_id=i, config={},
                                        params={"worker": worker}, misc={}) for i in batch])
                ids += batch
    except Exception as err:
        errors.append(f"{worker}: {err!r}")
    finally:
        results.put((worker, creator, ids, errors))


def _in_processes(target, url: str, name: str, n: int = 4) -> list[tuple]:
    """Run ``target(url, worker, name, barrier, results)`` in ``n`` spawned processes that start
    their work together; their reports, in order of arrival."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, f"w{i}", name, barrier, results))
             for i in range(n)]
    for proc in procs:
        proc.start()
    try:
        reports = [results.get(timeout=90) for _ in procs]
    except queue.Empty:
        pytest.fail("a worker process never reported (crashed or hung)")
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * n
    return reports


def _churn(url: str, worker: str, name: str, barrier, results) -> None:
    """A worker process writing as fast as it can: reserve, heartbeats, progress, then complete,
    fail or hand back (by trial id), until the queue is empty."""
    done: list[int] = []
    errors: list[str] = []
    try:
        with open_store(url) as store:
            barrier.wait(60)
            while (trial := store.reserve(worker, 60.0, [name])) is not None:
                i, attempt = trial.trial_id, trial.attempt
                for epoch in range(3):
                    store.heartbeat(name, i, attempt, 60.0)
                    store.report_progress(name, i, attempt, {"epoch": epoch})
                if i % 5 == 0 and attempt == 1:
                    store.release(name, i, attempt)
                    continue
                if i % 7 == 0:
                    store.fail(name, i, attempt, f"{worker} failed it")
                else:
                    store.complete(name, i, attempt, {"objective": float(i), "worker": worker})
                done.append(i)
    except Exception as err:
        errors.append(f"{worker}: {err!r}")
    finally:
        results.put((worker, done, errors))


@pytest.mark.slow  # processes racing on a real server: long evidence (.ci/run runs it)
def test_a_reader_of_changes_misses_nothing_written_concurrently(store_url):
    """Three processes write 40 trials about 500 times while this one reads changes after
    changes, keeping only what they return: it ends with every trial as stored."""
    import threading

    with open_store(url := store_url) as store:
        store.create_experiment(experiment_doc("cc"))
        add_trials(store, "cc", 40)
        seen: dict[int, tuple] = {}
        reads, cursor, stop = [0], 0, threading.Event()

        def read() -> None:
            nonlocal cursor
            entries, cursor = store.changes("cc", cursor)
            seen.update({e.trial_id: (e.state, e.result) for e in entries})
            reads[0] += 1

        def poll() -> None:
            while not stop.is_set():
                read()

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            reports = _in_processes(_churn, url, "cc", n=3)
        finally:
            stop.set()
            thread.join(60)
        mid = dict(seen)
        read()
        final = {e.trial_id: (e.state, e.result) for e in store.history("cc")}
    assert [errors for *_, errors in reports] == [[]] * 3
    assert sorted(i for _, done, _ in reports for i in done) == list(range(40))
    assert {state for state, _ in final.values()} == {DONE, FAILED}
    assert reads[0] >= 10, "the reader never overlapped the writers"
    # What the reader had seen before its last read is what the store held after the writers
    # finished: the last read, after every write had landed, added nothing (no change missed).
    assert mid == final
    assert seen == final


@pytest.mark.slow  # processes racing on a real server: long evidence (.ci/run runs it)
def test_four_processes_share_one_queue(store_url):
    url = store_url
    with open_store(url) as store:
        store.create_experiment(experiment_doc("mp"))
        ids = [t.trial_id for t in add_trials(store, "mp", 120)]
        reports = _in_processes(_drain, url, "mp")
        trials = store.trials("mp")
    assert [errors for _, _, errors in reports] == [[]] * 4
    completed = [trial_id for _, done, _ in reports for trial_id, _ in done]
    assert sorted(completed) == ids  # every trial once, by exactly one worker
    assert {attempt for _, done, _ in reports for _, attempt in done} == {1}
    assert sum(1 for _, done, _ in reports if done) >= 2, "no concurrency happened"
    assert all(t.state == DONE and t.attempt == 1 for t in trials)
    by_worker = {worker: {i for i, _ in done} for worker, done, _ in reports}
    for t in trials:
        assert t.worker == t.result["worker"]
        assert t.trial_id in by_worker[t.worker]


def test_four_processes_create_one_store_together(store_url):
    url = store_url
    reports = _in_processes(_create_and_fill, url, "fresh")
    assert [errors for *_, errors in reports] == [[]] * 4
    creators = {creator for _, creator, _, _ in reports}
    assert len(creators) == 1 and creators <= {f"w{i}" for i in range(4)}  # first writer wins
    all_ids = [i for _, _, ids, _ in reports for i in ids]
    assert len(all_ids) == 100 and len(set(all_ids)) == 100
    with open_store(url) as store:
        trials = store.trials("fresh")
        assert store.get_experiment("fresh").settings["creator"] in creators
    assert [t.trial_id for t in trials] == sorted(all_ids)
    by_worker = {worker: set(ids) for worker, _, ids, _ in reports}
    assert all(t.trial_id in by_worker[t.params["worker"]] for t in trials)

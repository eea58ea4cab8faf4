"""The worker loop: validation before running, failures, lost leases, preemption, and real
training (a diverged trial, a killed worker whose trial is resumed from its checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import queue_trials

from localrules.cli.main import main
from localrules.config import config_from_preset
from localrules.results import TrialResult
from localrules.runs import RunDirectory, trial_dir
from localrules.store import LeaseLost, open_store
from localrules.worker import Worker
from localrules.worker.local import LocalWorkerSpec, start_local_workers

TINY = ["width=4", "run.epochs=2", "run.batch_size=128", "run.warmup_epochs=0", "eval_every=1"]


def tiny_config(*overrides: str) -> dict:
    return config_from_preset("bp", overrides=[*TINY, *overrides]).to_dict()


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/w.db"


class FakeTrainer:
    """Stands in for train_trial: records calls, reports epochs, returns or raises."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def __call__(self, config, out_dir, on_epoch=None, should_stop=None, may_write=None):
        self.calls.append(out_dir)
        outcome = self.outcomes.pop(0)
        if callable(outcome):
            outcome = outcome(on_epoch)
        if isinstance(outcome, Exception):
            raise outcome
        for epoch in range(1, config.run.epochs + 1):
            on_epoch({"epoch": epoch, "train_loss": 1.0 / epoch})
        return outcome


def test_invalid_or_hostile_configs_are_failed_without_running(db, tmp_path):
    bad_model = tiny_config()
    bad_model["model"] = "resnet9000"
    hostile = tiny_config()
    hostile["run"]["epochs"] = "__import__('os').system('touch /tmp/pwned')"
    extra = tiny_config()
    extra["code"] = "print('hi')"
    with open_store(db) as store:
        queue_trials(store, [bad_model, hostile, extra])
        fake = FakeTrainer([])
        Worker(store, tmp_path / "art", idle_exit=0, trainer=fake).run()
        assert fake.calls == []
        trials = store.trials("exp")
    assert [t.state for t in trials] == ["failed"] * 3
    assert "resnet9000" in trials[0].error and "invalid trial config" in trials[0].error
    assert "epochs" in trials[1].error
    assert "'code'" in trials[2].error


def test_a_failing_trial_is_recorded_and_the_loop_goes_on(db, tmp_path):
    with open_store(db) as store:
        queue_trials(store, [tiny_config(), tiny_config()])
        fake = FakeTrainer([RuntimeError("out of memory"), {"objective": 0.9, "top1": 0.9}])
        stats = Worker(store, tmp_path / "art", idle_exit=0, trainer=fake).run()
        first, second = store.trials("exp")
    assert first.state == "failed" and "RuntimeError: out of memory" in first.error
    assert second.state == "done" and second.result["objective"] == 0.9
    assert second.progress["epoch"] == 2 and second.progress["metrics"]["train_loss"] == 0.5
    assert stats.failed == [("exp", 0)] and stats.completed == [("exp", 1)]
    assert fake.calls == [trial_dir(str(tmp_path / "art"), t) for t in (first, second)]


def test_a_lost_lease_abandons_the_trial_without_writing(db, tmp_path):
    with open_store(db) as store:
        queue_trials(store, [tiny_config()])

        def cancelled_meanwhile(on_epoch):
            store.cancel("exp")
            return {"objective": 0.9}

        stats = Worker(store, tmp_path, idle_exit=0,
                       trainer=FakeTrainer([cancelled_meanwhile])).run()
        trial = store.get_trial("exp", 0)
    assert stats.abandoned == [("exp", 0)] and stats.completed == []
    assert trial.state == "cancelled" and trial.result is None


def test_heartbeat_keeps_a_long_trial_alive(db, tmp_path):
    with open_store(db) as store:
        queue_trials(store, [tiny_config()])

        def slow(on_epoch):
            time.sleep(1.0)  # four leases long
            assert store.requeue_expired(max_attempts=3) == []
            return {"objective": 0.5}

        Worker(store, tmp_path, idle_exit=0, lease_seconds=0.25,
               trainer=FakeTrainer([slow])).run()
        assert store.get_trial("exp", 0).state == "done"


def test_an_interrupted_trial_goes_back_to_the_queue_and_the_worker_stops(db, tmp_path):
    with open_store(db) as store:
        queue_trials(store, [tiny_config(), tiny_config()])
        stats = Worker(store, tmp_path, idle_exit=0,
                       trainer=FakeTrainer([{"objective": None, "interrupted": True}])).run()
        first, second = store.trials("exp")
    assert stats.released == [("exp", 0)]
    assert first.state == "queued" and first.attempt == 1 and second.state == "queued"


@pytest.mark.slow  # long evidence: `python -m pytest -m slow` (.ci/run) runs it
def test_a_diverging_trial_is_done_with_diverged_and_chance_objective(db, tmp_path):
    with open_store(db) as store:
        queue_trials(store, [tiny_config("run.task_lr=1e12", "run.epochs=1")])
        Worker(store, tmp_path / "art", idle_exit=0).run()
        trial = store.get_trial("exp", 0)
    assert trial.state == "done", trial.error
    assert trial.result["diverged"] is True
    assert trial.result["objective"] == pytest.approx(0.1)  # digits: 10 classes
    # the one result type's document, which the Ray engine writes too (plus its own fields);
    # no rung fields outside a multi-fidelity search
    assert set(trial.result) == ({f.name for f in dataclasses.fields(TrialResult)}
                                 - set(TrialResult.OPTIONAL_FIELDS) | {"trial_epochs"})
    assert trial.result["trial_epochs"] == trial.result["epochs"]


def test_a_trial_directory_holding_another_run_is_not_overwritten(db, tmp_path):
    """The one resume policy (``RunDirectory.resumes``): a worker resumes its trial's own run
    and refuses one of another config, failing the trial instead of starting over on it."""
    with open_store(db) as store:
        queue_trials(store, [tiny_config()])
        other = RunDirectory(trial_dir(tmp_path / "art", store.get_trial("exp", 0)))
        other.write_config(config_from_preset("fa"))
        written = Path(other.config).read_text()
        stats = Worker(store, tmp_path / "art", idle_exit=0).run()
        trial = store.get_trial("exp", 0)
    assert stats.failed == [("exp", 0)] and trial.state == "failed"
    assert "holds a run of another config" in trial.error
    assert Path(other.config).read_text() == written and os.listdir(other.path) == ["config.json"]


@pytest.mark.slow
def test_a_killed_worker_trial_is_requeued_resumed_and_finished_once(store_url, tmp_path, caplog,
                                                                    capsys, wait_for_epoch):
    db, artifacts = store_url, str(tmp_path / "art")  # on every store backend
    with open_store(db) as store:  # fa: a rule with backward weights for the weights report
        queue_trials(store, [config_from_preset("fa", overrides=[*TINY, "run.epochs=6",
                                                       "run.batch_size=32"]).to_dict()])
    spec = LocalWorkerSpec(url=db, artifacts=artifacts, experiments=("exp",), lease_seconds=3.0)
    (proc,) = start_local_workers(spec, 1)
    try:
        wait_for_epoch(db, "exp", 0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    with open_store(db) as store:
        proc.join()
        assert store.get_trial("exp", 0).state == "running"
    # The weights report reads a running trial through the run directory its progress names.
    assert main(["report", "weights", "--experiment", "exp", "--trial", "0", "--db", db,
                 "--out", str(tmp_path / "mid")]) == 0
    assert (tmp_path / "mid" / "weight_metrics.png").is_file()
    assert "validation points" in capsys.readouterr().out
    with open_store(db) as store:
        time.sleep(3.5)
        (requeued,) = store.requeue_expired(max_attempts=3)
        assert requeued.state == "queued"
        with caplog.at_level(logging.INFO, logger="localrules.worker.trial_runner"):
            stats = Worker(store, artifacts, idle_exit=0).run()
        trial = store.get_trial("exp", 0)
        # The killed attempt cannot write any more.
        with pytest.raises(LeaseLost):
            store.complete("exp", 0, 1, {"objective": 0.0})
        with pytest.raises(LeaseLost):
            store.report_progress("exp", 0, 1, {"epoch": 99})
        assert store.get_trial("exp", 0).result == trial.result
    assert stats.completed == [("exp", 0)]
    assert trial.state == "done" and trial.attempt == 2
    assert trial.result["epochs"] == 6 and trial.progress["epoch"] == 6
    assert trial.result["run_dir"] == trial.progress["run_dir"] == f"{artifacts}/exp/trial-00000"
    assert main(["report", "weights", "--experiment", "exp", "--trial", "0", "--db", db,
                 "--format", "json", "--out", str(tmp_path / "end")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["epoch"] for r in rows} == set(range(7))  # initialisation and 6 validations
    assert main(["report", "weights", "--experiment", "exp", "--trial", "9", "--db", db,
                 "--out", str(tmp_path / "none")]) == 2
    assert "has no trial 9; trial ids: 0–0" in capsys.readouterr().err
    assert any("resumed from the checkpoint" in r.getMessage() for r in caplog.records)


def _trainer(tmp_path, *overrides):
    from localrules.config import TrialConfig
    from localrules.train.trainer import Trainer

    return Trainer(TrialConfig.from_dict(tiny_config(*overrides)), tmp_path / "run")


def test_a_stop_on_an_epochs_last_step_records_that_epoch_first(tmp_path):
    trainer = _trainer(tmp_path, "run.epochs=1")
    last = trainer.plan.total_steps
    result = trainer.fit(should_stop=lambda: int(trainer.step) >= last)
    # The only epoch ended as the stop came: it is recorded and the run is complete.
    assert not result.interrupted and result.epochs == 1 and result.top1 is not None


def test_a_stop_between_epochs_keeps_the_finished_epoch(tmp_path):
    trainer = _trainer(tmp_path, "run.epochs=2")
    first_end = trainer.plan.epoch_end(0)
    records = []
    result = trainer.fit(on_epoch=records.append,
                         should_stop=lambda: int(trainer.step) >= first_end)
    assert result.interrupted and [r["epoch"] for r in records] == [1]
    assert int(trainer.step) == first_end and trainer.checkpoints.latest


def test_refused_writes_abandon_the_run_without_touching_its_files(tmp_path):
    from localrules.train.trainer import RunAbandoned

    trainer = _trainer(tmp_path, "run.epochs=1")
    with pytest.raises(RunAbandoned):
        trainer.fit(may_write=lambda: False)
    assert trainer.checkpoints.latest is None
    history = tmp_path / "run" / "history.jsonl"
    assert not history.exists() or history.read_text() == ""


def test_the_worker_keeps_its_record_through_a_real_loop(db, tmp_path):
    """Started, a reservation and a final write per trial (done, failed, lease lost), beats
    while training, stopped: what the dashboard reads of a worker."""
    import socket

    with open_store(db) as store:
        queue_trials(store, [tiny_config(), tiny_config(), tiny_config()])
        seen = []

        def slow(on_epoch):
            time.sleep(0.6)  # a few heartbeats (lease 0.4 s: one every 0.1 s)
            seen.append(store.workers()[0])
            return {"objective": 0.5}

        def cancelled_meanwhile(on_epoch):
            store.cancel("exp", [2])
            return {"objective": 0.9}

        fake = FakeTrainer([slow, RuntimeError("out of memory"), cancelled_meanwhile])
        Worker(store, tmp_path, idle_exit=0, lease_seconds=0.4, worker_id="w-test",
               trainer=fake).run()
        (record,) = store.workers()
        trials = store.trials("exp")
    (training,) = seen
    assert training.status == "training" and training.trial["trial_id"] == 0
    assert training.last_seen > training.events[-1]["at"] + 0.3  # beats, not only events
    assert training.trial["lease_expires"] > training.last_seen
    assert (record.worker, record.host, record.pid, record.status, record.trial) == (
        "w-test", socket.gethostname(), os.getpid(), "stopped", None)
    assert [(e["kind"], e["trial_id"]) for e in record.events] == [
        ("started", None), ("reserved", 0), ("completed", 0), ("reserved", 1), ("failed", 1),
        ("reserved", 2), ("lease lost", 2), ("stopped", None)]
    assert "out of memory" in record.events[4]["detail"]
    assert record.counts == {"completed": 1, "failed": 1, "released": 0, "lapsed": 0}
    assert [[(e["outcome"], e["worker"]) for e in t.attempts] for t in trials] == [
        [("done", "w-test")], [("failed", "w-test")], [("cancelled", "w-test")]]
    # the fake's two epochs; none before the failure; none after the cancel (fenced off)
    assert [sorted(t.curve) for t in trials] == [["1", "2"], [], []]

"""A worker's lease is renewed from the moment it reserves a trial: validating the config and
importing the trainer (TensorFlow) can take longer than a short lease on a slow host, and a lease
lost then would send the trial to a second worker."""

from __future__ import annotations

import time

from helpers import queue_trials, tiny_configs

import localrules.worker.loop as loop
from localrules.store import open_store
from localrules.worker import Worker


def test_the_heartbeat_starts_before_validation(tmp_path, monkeypatch):
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        queue_trials(store, tiny_configs(1))
        checked = []
        real = loop.validate_config

        def slow_validation(config):
            time.sleep(1.0)  # four leases long: a slow host importing the model registry
            checked.append(store.requeue_expired(max_attempts=3))  # what a controller does
            return real(config)

        def train(config, out_dir, **_):
            return {"objective": 0.5, "top1": 0.5, "diverged": False, "epochs": 1}

        monkeypatch.setattr(loop, "validate_config", slow_validation)
        stats = Worker(store, tmp_path / "art", idle_exit=0, lease_seconds=0.25,
                       trainer=train).run()
        trial = store.get_trial("exp", 0)
    assert checked == [[]]  # the lease was alive throughout the validation
    assert stats.completed == [("exp", 0)] and stats.abandoned == []
    assert trial.state == "done" and trial.attempt == 1 and trial.lapses == 0

"""Workers across database trouble: final writes wait in a local spool while the database is away
and are delivered, fenced, when it returns; a real MongoDB wire-protocol server is stopped and
restarted under a running worker and nothing is lost or done twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from fuzzing import JSON_VALUES, nesting_bomb_json
from helpers import RestartableMongoDB, queue_trials, tiny_configs
from hypothesis import given
from hypothesis import strategies as st

from localrules.store import LeaseLost, StoreError, Trial, open_store
from localrules.worker import Worker
from localrules.worker.spool import Spool


class Flaky:
    """A store whose ``complete`` fails (database away) the first ``n`` times."""

    def __init__(self, store, n: int) -> None:
        self.store, self.n = store, n

    def __getattr__(self, name):
        return getattr(self.store, name)

    def complete(self, *args):
        if self.n > 0:
            self.n -= 1
            raise StoreError("connection refused")
        return self.store.complete(*args)


def fake_train(config, out_dir, on_epoch=None, **_):
    return {"objective": 0.7, "top1": 0.7, "diverged": False, "epochs": config.run.epochs}


def test_a_result_spooled_while_the_database_is_away_is_delivered_once(tmp_path):
    spool = Spool(tmp_path / "spool")
    with open_store(f"sqlite:///{tmp_path}/s.db") as real:
        queue_trials(real, tiny_configs(1, 1))
        store = Flaky(real, n=1)
        Worker(store, tmp_path / "art", idle_exit=0, trainer=fake_train, spool=spool).run()
        trials = real.trials("exp")
    assert [t.state for t in trials] == ["done", "done"]
    assert all(t.result["objective"] == 0.7 and t.attempt == 1 for t in trials)
    assert spool.pending() == []


def test_a_spooled_write_whose_lease_passed_on_is_dropped(tmp_path):
    spool = Spool(tmp_path / "spool")
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        queue_trials(store, tiny_configs(1))
        stale = store.reserve("w1", 1.0)
        spool.add(store, "complete", stale, {"objective": 0.1})
        store.requeue_expired(max_attempts=3, now=time.time() + 10)
        fresh = store.reserve("w2", 60.0)
        store.complete("exp", 0, fresh.attempt, {"objective": 0.9})
        assert spool.flush(store) == 0 and spool.pending() == []
        assert store.get_trial("exp", 0).result == {"objective": 0.9}
        with pytest.raises(LeaseLost):
            store.complete("exp", 0, stale.attempt, {"objective": 0.1})


def test_spooling_only_final_writes(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        queue_trials(store, tiny_configs(1))
        trial = store.reserve("w", 60)
        with pytest.raises(ValueError, match="cannot spool 'heartbeat'"):
            Spool(tmp_path / "spool").add(store, "heartbeat", trial)


@pytest.mark.slow  # a killed or signalled process, or a second strategy: evidence, minutes
def test_the_database_stops_and_restarts_under_a_running_worker(tmp_path, wait_for_epoch):
    with RestartableMongoDB(str(tmp_path / "db"), "serverSelectionTimeoutMS=1000") as server:
        url = server.url
        with open_store(url) as store:
            queue_trials(store, tiny_configs(2, 1))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "localrules.cli.main", "worker", "--db", url, "--lease", "60",
             "--idle-exit", "2", "--poll", "0.2", "--spool", str(tmp_path / "spool"),
             "--artifacts", str(tmp_path / "art")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for_epoch(url, "exp", 0)
            server.stop()  # trial 0 finishes while the database is away
            time.sleep(8)
            server.start()
            _, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        assert proc.returncode == 0, err[-3000:]
        with open_store(url) as store:
            trials = store.trials("exp")
    assert [t.state for t in trials] == ["done", "done"], err[-3000:]
    assert [t.attempt for t in trials] == [1, 1]
    assert trials[0].result["epochs"] == 2 and trials[1].result["epochs"] == 1
    assert "spooled" in err and "delivered the spooled complete" in err


def test_a_spool_delivers_only_to_its_own_store_and_survives_bad_entries(tmp_path):
    spool = Spool(tmp_path / "spool")
    with open_store(f"sqlite:///{tmp_path}/a.db") as a, \
            open_store(f"sqlite:///{tmp_path}/b.db") as b:
        queue_trials(a, tiny_configs(1))
        queue_trials(b, tiny_configs(1))
        ta, tb = a.reserve("w", 60), b.reserve("w", 60)
        spool.add(a, "complete", ta, {"objective": 0.25})
        spool.add(b, "complete", tb, {"objective": 0.75})
        (tmp_path / "spool" / f"{a.identity[:12]}-zz-broken.json").write_text("{not json")
        # b's flush delivers b's entry only; a's (and the broken one under a's prefix) wait.
        assert spool.flush(b) == 1 and len(spool.pending(a)) == 2
        assert spool.flush(a) == 1 and spool.pending() == []
        assert list((tmp_path / "spool").glob("*.bad"))  # the broken entry, set aside
        assert a.get_trial("exp", 0).result == {"objective": 0.25}
        assert b.get_trial("exp", 0).result == {"objective": 0.75}
        # An entry for a trial the store does not hold is dropped, not retried forever.
        ghost = Trial("exp", 99, {}, {}, {}, attempt=1)
        spool.add(a, "complete", ghost, {"objective": 0.5})
        assert spool.flush(a) == 0 and spool.pending() == []


@pytest.mark.fuzz
@given(content=st.one_of(
    st.builds(json.dumps, JSON_VALUES),
    st.builds(lambda v: json.dumps({"store": "S", "operation": "complete", "experiment": "exp",
                                    "trial_id": 99, "attempt": 1, "args": v}), JSON_VALUES),
    st.just(nesting_bomb_json()), st.binary(max_size=64).map(lambda b: b.decode("latin-1"))))
def test_a_damaged_spool_entry_is_set_aside_and_never_stops_the_flush(tmp_path_factory, content):
    """Whatever a spool file holds (power cut mid-write, a hostile hand), the flush sets it aside
    and delivers the good entry beside it."""
    tmp_path = tmp_path_factory.mktemp("spool")
    spool = Spool(tmp_path / "spool")
    with open_store(f"sqlite:///{tmp_path}/a.db") as store:
        queue_trials(store, tiny_configs(1))
        trial = store.reserve("w", 60)
        good = spool.add(store, "complete", trial, {"objective": 0.25})
        bad = tmp_path / "spool" / f"{store.identity[:12]}-bad.json"
        bad.write_text(content.replace("S", store.identity, 1))
        os.utime(bad, (good.stat().st_mtime - 1,) * 2)  # the damaged one first
        assert spool.flush(store) == 1
        assert spool.pending() == []
        assert store.get_trial("exp", 0).result == {"objective": 0.25}

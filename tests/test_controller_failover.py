"""The controller is no single point of failure: it rides out a database outage, is restarted at
once after a crash on the same host (a dead local holder's lock is taken over), and a controller
that lost its lock is fenced out of every write. Real processes and real databases (SQLite files,
a SecantusDB server), no mocks of the store. No TensorFlow."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import RestartableMongoDB, free_port

import localrules
from localrules.search import Controller, SearchSettings, open_experiment, open_search
from localrules.search.controller import ControllerFenced, ControllerLocked
from localrules.spaces import default_budget, load_space
from localrules.store import (
    LockLost,
    StoreError,
    StoreUnavailable,
    Trial,
    open_store,
)
from localrules.store.holder import Holder, is_dead, process_start, this_process
from localrules.store.sqlite import SQLiteStore

SPACE = load_space("wm-ad", default_budget("digits", width=4, epochs=1))
SETTINGS = {"max_trials": 4, "concurrency": 2, "references": []}
ROOT = str(Path(localrules.__file__).resolve().parents[1])


def _controller(store, name="exp", lock_seconds=60.0, **settings) -> Controller:
    chosen = SearchSettings.from_dict({**SETTINGS, **settings})
    experiment = open_experiment(store, name, SPACE, chosen)
    return Controller(store, experiment, SPACE, chosen, lock_seconds=lock_seconds)


# --- who holds the lock -------------------------------------------------------------------------
def test_a_holder_is_dead_only_when_its_process_certainly_is():
    me = this_process("controller")
    assert Holder.parse(me.owner()) == me and me.start is not None
    assert not is_dead(me.owner())  # this very process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = Holder("controller", me.host, me.boot, me.ns, child.pid,
                       process_start(child.pid), "x")
        assert not is_dead(alive.owner())
        # The same pid with another start time: the pid was reused by another process.
        reused = Holder("controller", me.host, me.boot, me.ns, child.pid, alive.start - 1, "y")
        assert is_dead(reused.owner())
        # Elsewhere (another host, another boot or pid namespace) nothing can be told: alive.
        for other in ({"host": me.host + "-other"}, {"boot": "another-boot"},
                      {"ns": "pid:[1]"}):
            fields = {**reused.__dict__, **other}
            assert not is_dead(Holder(**fields).owner())
    finally:
        child.kill()
        child.wait()
    assert is_dead(alive.owner())  # killed and reaped: gone
    # Owners this module did not write (an older localrules's, a worker's, garbage): alive.
    for owner in (f"controller:{me.host}:{child.pid}:abcd1234", "w1", "", "[1]", "{}",
                  '{"pid": true}', "null"):
        assert not is_dead(owner)


def test_a_pid_reused_by_a_live_process_does_not_keep_the_lock(tmp_path):
    """A holder record naming this test's own pid with another start time (as after a crash in a
    container, where the new controller gets the dead one's pid) is taken over at once."""
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        c = _controller(store)
        me = c.holder
        ghost = Holder("controller", me.host, me.boot, me.ns, me.pid, (me.start or 0) + 7, "z")
        taken = store.take_lock(c.lock_name, ghost.owner(), 60.0)
        assert taken.held_by(ghost.owner())
        state = c.acquire_lock()
        assert state.held_by(c.owner) and state.generation == taken.generation + 1
        # A second controller restarted at the same moment finds the first one alive.
        with pytest.raises(ControllerLocked, match=f"pid {me.pid} on"):
            _controller(store).acquire_lock()
        assert store.lock_state(c.lock_name) == state


# --- a killed controller is restarted at once ----------------------------------------------------
HOLD = """
import sys, time
from localrules.search import open_search
from localrules.spaces import default_budget, load_space
from localrules.store import open_store

store = open_store(sys.argv[1])
space = load_space("wm-ad", default_budget("digits", width=4, epochs=1))
c = open_search(store, "exp", space, {"max_trials": 4, "concurrency": 2, "references": []})
c.step()
print(c.fence.generation, flush=True)
time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_a_killed_controller_is_restarted_at_once_on_the_same_host(store_url, caplog):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, store_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read()[-3000:]
        with open_store(store_url) as store:
            # While it runs, a second controller is refused, naming the holder.
            with pytest.raises(ControllerLocked, match=f"pid {proc.pid} on"):
                open_search(store, "exp", SPACE, SETTINGS)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            started = time.monotonic()
            with caplog.at_level(logging.WARNING):
                c = open_search(store, "exp", SPACE, SETTINGS)  # no 60 s wait
            assert time.monotonic() - started < 10
            assert c.fence.generation == int(line) + 1
            assert "no longer runs; taking it over" in caplog.text
            assert c.step() == 0  # the queue was full: nothing lost, nothing twice
            assert [t.trial_id for t in store.trials("exp")] == [0, 1]
            c.release_lock()
    finally:
        proc.kill()
        proc.wait()


# --- fencing -------------------------------------------------------------------------------------
def test_a_fenced_controller_cannot_requeue_queue_or_change_settings(store_url):
    with open_store(store_url) as store:
        first = _controller(store, lock_seconds=0.3)
        assert first.step() == 2
        stale = first.fence
        running = store.reserve("w", 0.01, ["exp"])  # its lease expires at once
        time.sleep(0.4)  # the first controller's lock expires too (it is paused, say)
        second = open_search(store, "exp", SPACE, SETTINGS)
        assert second.fence.generation == stale.generation + 1
        new = Trial("exp", store.allocate_trial_ids("exp", 1)[0], {}, {}, {"idxs": {}, "vals": {}})
        with pytest.raises(LockLost):
            store.requeue_expired(3, fence=stale)
        with pytest.raises(LockLost):
            store.add_trials([new], fence=stale)
        with pytest.raises(LockLost):
            store.update_settings("exp", {"max_trials": 99}, fence=stale)
        # Nothing was written: the trial is still running, none was added, settings unchanged.
        assert store.get_trial("exp", running.trial_id).state == "running"
        assert [t.trial_id for t in store.trials("exp")] == [0, 1]
        assert store.get_experiment("exp").settings["max_trials"] == 4
        # The paused controller wakes up: its next round is refused, and says why.
        with pytest.raises(ControllerFenced, match=r"lost experiment 'exp'.s lock"):
            first.step()
        with pytest.raises(ControllerFenced):  # also if the other one has let go meanwhile
            second.release_lock()
            first.step()
        assert [t.trial_id for t in store.trials("exp")] == [0, 1]
        # The holder's own fence passes.
        third = open_search(store, "exp", SPACE, SETTINGS)
        assert [t.trial_id for t in third.store.requeue_expired(3, fence=third.fence)] == [
            running.trial_id]
        third.release_lock()


def test_a_controller_fenced_mid_round_stops_with_a_database_error(tmp_path):
    """The lock moves between the controller's renewal and its write: the write is refused in
    its own transaction (SQLite), and the round ends in ControllerFenced, not a retry."""
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        c = _controller(store)
        c.acquire_lock()
        store.take_lock(c.lock_name, "intruder", 60.0, replacing=c.owner)
        original = c.acquire_lock
        c.acquire_lock = lambda: c.fence  # the renewal happened just before the lock moved
        with pytest.raises(ControllerFenced, match="lost"):
            c.step()
        c.acquire_lock = original
        assert store.trials("exp") == []
        assert isinstance(ControllerFenced("x"), StoreError)  # the CLI: database error, exit 1
        assert not isinstance(ControllerFenced("x"), (ValueError, StoreUnavailable))


# --- outages -------------------------------------------------------------------------------------
def _worker(url: str, stop: threading.Event, seconds: float = 0.5) -> None:
    """Runs every queued trial, ``seconds`` each, riding out store errors as workers do."""
    with open_store(url) as store:
        while not stop.is_set():
            try:
                trial = store.reserve("w", 60, ["exp"])
                if trial is None:
                    time.sleep(0.05)
                    continue
            except StoreError:
                time.sleep(0.1)
                continue
            time.sleep(seconds)
            while not stop.is_set():  # the result is delivered once the database is back
                try:
                    store.complete("exp", trial.trial_id, trial.attempt,
                                   {"objective": 0.5, "diverged": False})
                    break
                except StoreError:
                    time.sleep(0.1)


def _block(path: str, after: float, seconds: float) -> threading.Thread:
    """A thread (not started) in which another connection holds the database's write lock from
    ``after`` for ``seconds``."""
    def hold() -> None:
        time.sleep(after)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    return threading.Thread(target=hold, daemon=True)


def _run_beside_a_worker(controller: Controller, url: str, caplog,
                         *threads: threading.Thread):
    """``controller.run`` with a worker thread on ``url`` and ``threads`` (the outage) running;
    its status and the experiment's trials once all have stopped."""
    stop = threading.Event()
    worker = threading.Thread(target=_worker, args=(url, stop), daemon=True)
    for thread in (*threads, worker):
        thread.start()
    try:
        with caplog.at_level(logging.WARNING):
            status = controller.run(poll_seconds=0.1)
    finally:
        stop.set()
        for thread in (worker, *threads):
            thread.join(60)
    return status, controller.store.trials("exp")


def test_the_controller_rides_out_a_locked_database_and_resumes(tmp_path, caplog):
    path = str(tmp_path / "s.db")
    with SQLiteStore(path, busy_timeout=0.2) as store:  # a short wait: the round fails
        c = _controller(store, max_trials=4, concurrency=1)
        status, trials = _run_beside_a_worker(c, f"sqlite:///{path}", caplog,
                                              _block(path, after=0.3, seconds=3.0))
    assert status.finished and status.done == 4
    assert "the database is away" in caplog.text and "the database is back" in caplog.text
    assert [t.trial_id for t in trials] == [0, 1, 2, 3]
    assert all(t.state == "done" and t.attempt == 1 for t in trials)


def test_an_outage_longer_than_the_bound_ends_the_run_with_a_database_error(tmp_path):
    path = str(tmp_path / "s.db")
    with SQLiteStore(path, busy_timeout=0.1) as store:
        c = _controller(store, max_trials=4, concurrency=1)
        c.outage_seconds = 1.0
        blocker = _block(path, after=0.0, seconds=4.0)
        blocker.start()
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"unreachable for .* gives up"):
            c.run(poll_seconds=0.1)
        assert time.monotonic() - started < 3.5
        blocker.join(30)
        assert c.fence is None  # the lock was let go (or left to expire)


def test_the_controller_rides_out_a_mongodb_restart(tmp_path, caplog):
    server = RestartableMongoDB(str(tmp_path / "db"))

    def restart() -> None:
        time.sleep(1.0)
        server.stop()
        time.sleep(3.0)
        server.start()

    with server, open_store(server.url) as store:
        c = _controller(store, max_trials=4, concurrency=1)
        status, trials = _run_beside_a_worker(c, server.url, caplog,
                                              threading.Thread(target=restart, daemon=True))
    assert status.finished and status.done == 4
    assert "the database is away" in caplog.text
    assert [t.trial_id for t in trials] == [0, 1, 2, 3]
    assert all(t.state == "done" for t in trials)


# --- the command line ----------------------------------------------------------------------------
def test_a_search_whose_lock_is_taken_over_exits_1_without_a_traceback(tmp_path):
    """``localrules search`` (queue only) loses its lock to another controller: it stops with a
    database error, exit status 1, and writes nothing more."""
    url = f"sqlite:///{tmp_path}/s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "localrules.cli.main", "search", "--space", "wm-ad",
         "--experiment", "exp", "--db", url, "--workers", "0", "--max-trials", "4",
         "--references", "none", "--width", "4", "--epochs", "1", "--poll", "0.2",
         "--artifacts", str(tmp_path / "art")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "s.db").exists():
            time.sleep(0.2)
        with open_store(url) as store:
            while time.monotonic() < deadline and (
                    (state := store.lock_state("controller:exp")) is None or not state.owner
                    or len(store.trials("exp")) < 4):  # its first round is done
                time.sleep(0.2)
            assert state is not None and state.owner, proc.stderr.read()[-2000:]
            store.take_lock("controller:exp", "intruder", 60.0, replacing=state.owner)
            _, err = proc.communicate(timeout=60)
            queued = [t.trial_id for t in store.trials("exp")]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err[-3000:]
    assert "database error" in err and "lost experiment 'exp'" in err
    assert "Traceback" not in err
    assert queued == [0, 1, 2, 3]  # the queue it filled; nothing after the lock moved


def test_mongodb_withdraws_trials_inserted_as_the_lock_passed(mongodb_database_url):
    """MongoDB has no transaction to hold the fence check and the insert together: when the
    lock passes on between them (here, injected at the insert's numbering step), the check made
    after the insert finds it and cancels the trials no worker has taken, and the next
    controller's history does not count them."""
    from localrules.store.mongo import MongoStore

    class LockPassesMidInsert(MongoStore):
        def _stamp(self, token):
            super()._stamp(token)
            state = self.lock_state("controller:exp")
            if state is not None and state.owner != "intruder":
                self.take_lock("controller:exp", "intruder", 60.0, replacing=state.owner)

    with LockPassesMidInsert(mongodb_database_url) as store:
        c = _controller(store)
        fence = c.acquire_lock()
        ids = store.allocate_trial_ids("exp", 2)
        new = [Trial("exp", i, {}, {}, {"idxs": {}, "vals": {}}) for i in ids]
        with pytest.raises(LockLost, match="intruder"):
            store.add_trials(new, fence=fence)
        assert [t.state for t in store.trials("exp")] == ["cancelled", "cancelled"]
        assert "queued by a controller that had lost its lock" in store.trials("exp")[0].error
        from localrules.search.history import History

        history = History()
        history.update(store, "exp")
        assert history.created == 0 and history.pending == 0


def test_a_database_that_is_away_is_store_unavailable_and_a_refusal_is_not(tmp_path):
    """What the controller retries (StoreUnavailable) and what it does not."""
    path = str(tmp_path / "s.db")
    with SQLiteStore(path, busy_timeout=0.1) as store:
        open_experiment(store, "exp", SPACE, SETTINGS)
        blocker = _block(path, after=0.0, seconds=1.0)
        blocker.start()
        time.sleep(0.3)
        with pytest.raises(StoreUnavailable, match="locked"):
            store.requeue_expired(3)
        blocker.join(10)
        store.requeue_expired(3)  # back
    with pytest.raises(StoreUnavailable):  # nobody listens there
        open_store(f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=200")
    with open_store(f"sqlite:///{path}", read_only=True) as reader:
        with pytest.raises(StoreError, match="read-only") as refused:
            reader.requeue_expired(3)
        assert not isinstance(refused.value, StoreUnavailable)

"""What the live dashboard reads, on every backend (the ``store`` fixture runs each test against
SQLite and a real MongoDB wire server): a trial's learning curve (``curve``, bounded, one entry
per kept epoch), its attempts log (``attempts``), and the workers record (``workers``), plus a
real worker loop filling the record."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from helpers import queue_trials, tiny_configs

from localrules.store import LeaseLost, Trial, open_store
from localrules.store.attempts import ERROR_LIMIT, MAX_LOGGED_ATTEMPTS
from localrules.store.curve import MAX_CURVE_POINTS, kept_epoch
from localrules.store.documents import progress_document
from localrules.store.workers import (
    MAX_EVENTS,
    WorkerFacts,
    WorkerRecord,
    held_trial,
    worker_event,
)
from localrules.validation import EPOCHS

LATER = 10_000.0
"""Seconds past now: every lease has expired by then."""


def queued(store, n: int = 1) -> list[int]:
    return queue_trials(store, tiny_configs(*[3] * n))


def progress(epoch: int, epochs: int, loss: float = 1.0, layers: bool = False) -> dict:
    """The progress document a worker writes for one epoch's record."""
    record: dict[str, Any] = {"epoch": epoch, "train_loss": loss, "diverged": False}
    if layers:
        record["layers"] = {"conv1": {"weight_angle_deg": 80.0 + epoch, "norm_ratio": 0.5,
                                      "alignment_loss": 2.0}}
    return progress_document(record, epochs, "/runs/x")


def outcomes(trial: Trial) -> list[tuple[int, str, str | None]]:
    return [(e["attempt"], e["outcome"], e["worker"]) for e in trial.attempts]


# --- the curve ----------------------------------------------------------------------------------
def test_the_curve_holds_every_kept_epoch_of_a_run_and_overwrites_a_rerun_epoch(store):
    (i,) = queued(store)
    first = store.reserve("w1", 60)
    for epoch in (1, 2):
        store.report_progress("exp", i, first.attempt, progress(epoch, 3, loss=10.0 + epoch,
                                                                  layers=epoch == 2))
    trial = store.get_trial("exp", i)
    assert trial.progress["epoch"] == 2 and trial.progress["layers"] == {
        "conv1": {"weight_angle_deg": 82.0, "norm_ratio": 0.5}}
    assert sorted(trial.curve) == ["1", "2"]
    one, two = trial.curve_points()
    assert (one["epoch"], one["attempt"], one["metrics"]["train_loss"], one["layers"]) == (
        1, 1, 11.0, {})
    assert two["layers"] == {"conv1": {"weight_angle_deg": 82.0, "norm_ratio": 0.5}}
    assert one["at"] <= two["at"] <= time.time()
    store.release("exp", i, first.attempt)
    second = store.reserve("w2", 60)  # resumes from its epoch-1 checkpoint: epoch 2 again
    for epoch in (2, 3):
        store.report_progress("exp", i, second.attempt, progress(epoch, 3, loss=20.0 + epoch))
    trial = store.get_trial("exp", i)
    assert [(p["epoch"], p["attempt"], p["metrics"]["train_loss"])
            for p in trial.curve_points()] == [(1, 1, 11.0), (2, 2, 22.0), (3, 2, 23.0)]
    assert trial.curve["2"]["layers"] == {}  # the re-run's record, whole
    with pytest.raises(LeaseLost):  # the first attempt's write is fenced off, curve and all
        store.report_progress("exp", i, first.attempt, progress(3, 3, loss=99.0))
    assert store.get_trial("exp", i).curve == trial.curve
    assert store.get_trial("exp", i).progress["metrics"]["train_loss"] == 23.0


def test_a_long_run_keeps_every_stride_th_epoch_and_the_last(store):
    (i,) = queued(store)
    attempt = store.reserve("w", 60).attempt
    for epoch in (*range(1, 13), *range(994, 1001)):  # 1000 epochs: stride 5
        store.report_progress("exp", i, attempt, progress(epoch, 1000))
    curve = store.get_trial("exp", i).curve_points()
    assert [p["epoch"] for p in curve] == [5, 10, 995, 1000]
    assert store.get_trial("exp", i).progress["epoch"] == 1000


def test_progress_without_an_epoch_number_leaves_the_curve_alone(store):
    (i,) = queued(store)
    attempt = store.reserve("w", 60).attempt
    store.report_progress("exp", i, attempt, {"epoch": None, "metrics": {}})
    store.report_progress("exp", i, attempt, {"epoch": 2})  # no run length: kept (≤ 200)
    store.report_progress("exp", i, attempt, {"epoch": 201})
    assert sorted(store.get_trial("exp", i).curve) == ["2"]


def test_the_curve_is_bounded_for_every_run_length():
    """The bound holds by construction: for every run length validation allows, at most
    MAX_CURVE_POINTS epochs are kept, and the last always is."""
    longest = int(EPOCHS.maximum)
    lengths = {*range(1, 601), *range(601, longest, 97), *range(longest - 50, longest + 1)}
    for epochs in sorted(lengths):
        kept = [e for e in range(1, epochs + 1) if kept_epoch(e, epochs)]
        assert len(kept) <= MAX_CURVE_POINTS and kept[-1] == epochs, epochs
    assert not kept_epoch(0, 10) and not kept_epoch(11, 10)


# --- the attempts log ---------------------------------------------------------------------------
def test_the_attempts_log_follows_release_lapse_and_completion(store):
    (i,) = queued(store)
    a1 = store.reserve("w1", 60)
    assert outcomes(store.get_trial("exp", i)) == [(1, "running", "w1")]
    store.release("exp", i, a1.attempt)
    a2 = store.reserve("w2", 60)
    store.requeue_expired(max_attempts=3, now=time.time() + LATER)
    a3 = store.reserve("w3", 60)
    store.complete("exp", i, a3.attempt, {"objective": 0.5})
    trial = store.get_trial("exp", i)
    assert outcomes(trial) == [(1, "released", "w1"), (2, "lapsed", "w2"), (3, "done", "w3")]
    assert (a1.attempt, a2.attempt, trial.attempt, trial.lapses) == (1, 2, 3, 1)
    for entry in trial.attempts:
        assert entry["started_at"] <= entry["ended_at"] and entry["error"] is None
        assert "late" not in entry


def test_a_failure_a_lapse_into_failure_and_a_cancel_close_their_attempt(store):
    a, b, c = queued(store, 3)
    ta = store.reserve("w", 60)
    store.fail("exp", a, ta.attempt, "x" * 2000)
    (entry,) = store.get_trial("exp", a).attempts
    assert entry["outcome"] == "failed" and entry["error"] == "x" * ERROR_LIMIT
    assert store.get_trial("exp", a).error == "x" * 2000  # the trial keeps it all
    store.reserve("w", 60)
    store.requeue_expired(max_attempts=1, now=time.time() + LATER)  # failed, not requeued
    (entry,) = store.get_trial("exp", b).attempts
    assert entry["outcome"] == "lapsed" and "lease expired" in entry["error"]
    tc = store.reserve("w", 60)
    assert store.cancel("exp") == 1
    assert outcomes(store.get_trial("exp", c)) == [(tc.attempt, "cancelled", "w")]


def test_cancel_leaves_a_queued_trials_closed_entries_alone(store):
    (i,) = queued(store)
    store.release("exp", i, store.reserve("w", 60).attempt)
    store.cancel("exp", [i])
    assert outcomes(store.get_trial("exp", i)) == [(1, "released", "w")]


def test_a_result_delivered_after_a_lapse_turns_the_lapsed_entry_done(store):
    (i,) = queued(store)
    held = store.reserve("w", 60)
    store.requeue_expired(max_attempts=3, now=time.time() + LATER)
    store.complete("exp", i, held.attempt, {"objective": 0.5})  # nobody reserved it since
    trial = store.get_trial("exp", i)
    (entry,) = trial.attempts
    assert (trial.state, trial.lapses, entry["outcome"], entry["late"]) == ("done", 1, "done",
                                                                             True)


def test_the_attempts_log_keeps_the_latest_fifty(store):
    (i,) = queued(store)
    for _ in range(MAX_LOGGED_ATTEMPTS + 5):
        store.release("exp", i, store.reserve("w", 60).attempt)
    log = store.get_trial("exp", i).attempts
    assert len(log) == MAX_LOGGED_ATTEMPTS
    assert [e["attempt"] for e in log] == list(range(6, MAX_LOGGED_ATTEMPTS + 6))
    assert {e["outcome"] for e in log} == {"released"}


def test_a_trial_from_before_curves_and_logs_reads_empty_and_gets_them(store_url):
    """A schema-4 trial document (no curve, no log; a SQLite file without the columns) reads
    with empty ones, and the next writes fill them in."""
    with open_store(store_url) as store:
        queued(store, 2)
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            db.execute("ALTER TABLE trials DROP COLUMN curve")
            db.execute("ALTER TABLE trials DROP COLUMN attempts")
            db.execute("DROP TABLE workers")
            db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    else:
        import pymongo

        client = pymongo.MongoClient(store_url)
        try:
            client.get_default_database()["trials"].update_many(
                {}, {"$unset": {"curve": "", "attempts": ""}})
        finally:
            client.close()
    with open_store(store_url, read_only=True) as reader:
        assert [(t.curve, t.attempts) for t in reader.trials("exp")] == [({}, [])] * 2
    with open_store(store_url) as store:
        held = store.reserve("w", 60)
        store.report_progress("exp", held.trial_id, held.attempt, progress(1, 3))
        store.complete("exp", held.trial_id, held.attempt, {"objective": 0.5})
        trial = store.get_trial("exp", held.trial_id)
        assert outcomes(trial) == [(1, "done", "w")] and list(trial.curve) == ["1"]
        assert store.get_trial("exp", 1).attempts == []


# --- the workers record -------------------------------------------------------------------------
def test_a_worker_record_is_upserted_with_its_events_and_counts(store):
    facts = WorkerFacts("host-a", 123, 1000.0, ["exp"], "9.9")
    store.record_worker("w1", "idle", event=worker_event("started"), facts=facts)
    store.record_worker("w1", "training", held_trial("exp", 0, 1, 2000.0),
                        worker_event("reserved", "exp", 0, 1))
    store.record_worker("w1", "idle", event=worker_event("completed", "exp", 0, 1, "0.9"))
    (record,) = store.workers()
    assert isinstance(record, WorkerRecord)
    assert (record.worker, record.host, record.pid, record.started_at, record.experiments,
            record.code_version) == ("w1", "host-a", 123, 1000.0, ["exp"], "9.9")
    assert record.status == "idle" and record.trial is None
    assert [e["kind"] for e in record.events] == ["started", "reserved", "completed"]
    assert record.events[2] == {"at": record.events[2]["at"], "kind": "completed",
                                "experiment": "exp", "trial_id": 0, "attempt": 1,
                                "detail": "0.9"}
    assert record.counts == {"completed": 1, "failed": 0, "released": 0, "lapsed": 0}
    assert record.last_seen >= record.events[-1]["at"]
    store.record_worker("w1", "training", held_trial("exp", 1, 1, 3000.0))  # a beat
    (record,) = store.workers()
    assert record.trial == {"experiment": "exp", "trial_id": 1, "attempt": 1,
                            "lease_expires": 3000.0}
    assert record.host == "host-a" and len(record.events) == 3  # facts kept, nothing logged


def test_a_record_keeps_the_latest_events_and_workers_come_most_recent_first(store):
    store.record_worker("old", "idle")  # no facts yet: a record all the same
    for n in range(MAX_EVENTS + 5):
        store.record_worker("busy", "idle",
                            event=worker_event("failed", "exp", n, 1, "e" * 900))
    busy, old = store.workers()
    assert (busy.worker, old.worker) == ("busy", "old")
    assert old.host is None and old.events == [] and old.counts["failed"] == 0
    assert len(busy.events) == MAX_EVENTS and busy.counts["failed"] == MAX_EVENTS + 5
    assert [e["trial_id"] for e in busy.events] == list(range(5, MAX_EVENTS + 5))
    assert len(busy.events[0]["detail"]) == 500
    store.record_worker("old", "stopped", event=worker_event("stopped"))
    assert [r.worker for r in store.workers()] == ["old", "busy"]


def test_a_record_write_refuses_bad_input(store):
    with pytest.raises(ValueError, match="status"):
        store.record_worker("w", "asleep")
    with pytest.raises(ValueError, match="event"):
        store.record_worker("w", "idle", event={"kind": "exploded", "at": 1.0})
    with pytest.raises(ValueError, match="worker id"):
        store.record_worker("", "idle")
    assert store.workers() == []


def test_requeue_expired_marks_the_record_of_the_worker_that_lapsed(store):
    queued(store, 2)
    store.record_worker("w1", "training", event=worker_event("started"))
    held = store.reserve("w1", 60)
    store.reserve("ghost", 60)  # a worker with no record: none is made for it
    store.requeue_expired(max_attempts=3, now=time.time() + LATER)
    (record,) = store.workers()
    assert record.worker == "w1" and record.status == "training"  # its own word stands
    assert record.counts["lapsed"] == 1
    event = record.events[-1]
    assert (event["kind"], event["experiment"], event["trial_id"], event["attempt"]) == (
        "lease lost", "exp", held.trial_id, held.attempt)


def test_a_read_only_store_without_a_workers_table_has_no_workers(store_url):
    """A store from before workers were recorded, opened by a reader: [] and nothing made."""
    with open_store(store_url) as store:
        queued(store)
    if store_url.startswith("sqlite"):
        path = store_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE workers")
        for version in ("5", "4"):  # this version's store, and an older one read from a copy
            with sqlite3.connect(path) as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
            with open_store(store_url, read_only=True) as reader:
                assert reader.workers() == [] and len(reader.trials("exp")) == 1
            with sqlite3.connect(path) as db:
                assert db.execute("SELECT name FROM sqlite_master WHERE name = 'workers'"
                                  ).fetchall() == []
    else:
        import pymongo

        client = pymongo.MongoClient(store_url)
        try:
            database = client.get_default_database()
            database.drop_collection("workers")
            with open_store(store_url, read_only=True) as reader:
                assert reader.workers() == [] and len(reader.trials("exp")) == 1
            assert "workers" not in database.list_collection_names()
        finally:
            client.close()


# --- malformed documents ------------------------------------------------------------------------
GOOD_ENTRY = {"epoch": 2, "at": 1.5, "attempt": 1, "metrics": {"loss": None}, "layers": {}}
GOOD_ATTEMPT = {"attempt": 1, "worker": "w", "started_at": 1.0, "ended_at": None,
                "outcome": "running", "error": None}


@pytest.mark.parametrize(("field", "value"), [
    ("curve", []),
    ("curve", {"2": "not an entry"}),
    ("curve", {"3": GOOD_ENTRY}),  # keyed by another epoch
    ("curve", {"2": {**GOOD_ENTRY, "attempt": True}}),
    ("curve", {"2": {**GOOD_ENTRY, "metrics": [1]}}),
    ("curve", {"2": {**GOOD_ENTRY, "layers": "conv"}}),
    ("attempts", {}),
    ("attempts", [7]),
    ("attempts", [{**GOOD_ATTEMPT, "outcome": "exploded"}]),
    ("attempts", [{**GOOD_ATTEMPT, "attempt": "1"}]),
    ("attempts", [{**GOOD_ATTEMPT, "ended_at": "soon"}]),
    ("attempts", [{**GOOD_ATTEMPT, "error": 3}]),
])
def test_a_malformed_curve_or_attempts_log_is_a_malformed_document(field, value):
    good = Trial("exp", 0, {}, {}, {}, curve={"2": GOOD_ENTRY}, attempts=[GOOD_ATTEMPT])
    assert Trial.from_dict(good.to_dict()) == good
    with pytest.raises(ValueError, match=field):
        Trial.from_dict({**good.to_dict(), field: value})


def test_a_malformed_worker_record_is_skipped_with_a_warning(store_url, caplog):
    with open_store(store_url) as store:
        store.record_worker("good", "idle")
        store.record_worker("bad", "idle")
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE workers SET doc = json_set(doc, '$.status', 'asleep') "
                       "WHERE worker = 'bad'")
    else:
        import pymongo

        client = pymongo.MongoClient(store_url)
        try:
            client.get_default_database()["workers"].update_one(
                {"_id": "bad"}, {"$set": {"status": "asleep"}})
        finally:
            client.close()
    with open_store(store_url, read_only=True) as reader:
        assert [r.worker for r in reader.workers()] == ["good"]
    assert any("worker record 'bad'" in r.getMessage() and "status" in r.getMessage()
               for r in caplog.records)

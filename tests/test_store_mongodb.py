"""What only the MongoDB store has: URLs, indexes, schema versions on every document, credentials
kept out of messages, an unreachable server, hostile documents. The contract every backend shares
(several processes on one store included) is ``test_store_contract.py``. Runs against SecantusDB
(a MongoDB wire-protocol server) or the mongod named by LOCALRULES_TEST_MONGODB_URI."""

from __future__ import annotations

import time

import pymongo
import pytest
from helpers import free_port

from localrules.store import Experiment, StoreError, Trial, open_store
from localrules.store.documents import SCHEMA_VERSION
from localrules.store.mongo import MongoStore


def _client(url: str) -> pymongo.MongoClient:
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)


def _fill(store, name: str, n: int) -> list[int]:
    store.create_experiment(Experiment(name, "wm", {"paper": "wm"}, "f", {}))
    ids = store.allocate_trial_ids(name, n)
    store.add_trials([Trial(name, i, {"i": i}, {"i": i}, {"idxs": {}, "vals": {}})
                      for i in ids])
    return ids


def test_the_url_names_the_database(mongodb_database_url):
    db = mongodb_database_url.rsplit("/", 1)[1]
    with open_store(mongodb_database_url) as store:
        _fill(store, "e", 1)
    client = _client(mongodb_database_url)
    try:
        assert client[db]["trials"].count_documents({}) == 1
        assert client[db]["experiments"].find_one({"_id": "e"})["next_trial_id"] == 1
    finally:
        client.close()


def test_indexes_and_schema_version_on_every_document(mongodb_database_url):
    db = mongodb_database_url.rsplit("/", 1)[1]
    with open_store(mongodb_database_url) as store:
        _fill(store, "e", 2)
        store.acquire_lock("controller:e", "me", 60)
    client = _client(mongodb_database_url)
    try:
        indexes = client[db]["trials"].index_information()
        assert indexes["experiment_trial_id"]["unique"] is True
        assert indexes["experiment_trial_id"]["key"] == [("experiment", 1), ("trial_id", 1)]
        assert indexes["queue"]["key"][0] == ("state", 1)
        assert indexes["lease"]["key"] == [("state", 1), ("lease_expires", 1)]
        for collection in ("experiments", "trials", "locks"):
            docs = list(client[db][collection].find())
            assert docs and all(d["schema_version"] == SCHEMA_VERSION for d in docs), collection
        assert client[db]["meta"].find_one({"_id": "schema"})["version"] == SCHEMA_VERSION
    finally:
        client.close()


def test_a_newer_schema_is_refused(mongodb_database_url):
    db = mongodb_database_url.rsplit("/", 1)[1]
    client = _client(mongodb_database_url)
    try:
        client[db]["meta"].insert_one({"_id": "schema", "version": SCHEMA_VERSION + 98})
    finally:
        client.close()
    with pytest.raises(StoreError, match="upgrade localrules"):
        open_store(mongodb_database_url)


def test_documents_from_before_change_numbers_come_once_until_written(mongodb_database_url):
    """Trials a schema-2 store holds (no seq) come with the first changes, then only once
    written again; the store is marked schema 3 and the changes query uses its index."""
    db = mongodb_database_url.rsplit("/", 1)[1]
    with open_store(mongodb_database_url) as store:
        _fill(store, "e", 0)
    client = _client(mongodb_database_url)
    try:
        client[db]["meta"].update_one({"_id": "schema"}, {"$set": {"version": 2}})
        client[db]["meta"].delete_one({"_id": "seq"})
        client[db]["trials"].insert_many([
            {"_id": f"e:{i}", "experiment": "e", "trial_id": i, "state": "queued", "attempt": 0,
             "lapses": 0, "config": {}, "params": {}, "misc": {"idxs": {}, "vals": {}},
             "created_at": float(i), "schema_version": 2} for i in range(3)])
        client[db]["experiments"].update_one({"_id": "e"}, {"$set": {"next_trial_id": 3}})
        with open_store(mongodb_database_url) as store:
            entries, cursor = store.changes("e", 0)
            assert [(e.trial_id, e.seq) for e in entries] == [(0, 0), (1, 0), (2, 0)]
            assert store.changes("e", cursor)[0] == []
            trial = store.reserve("w", 60.0)
            (entry,) = store.changes("e", cursor)[0]
            assert entry.trial_id == trial.trial_id and entry.seq > 0
        assert client[db]["meta"].find_one({"_id": "schema"})["version"] == SCHEMA_VERSION == 5
        assert client[db]["trials"].count_documents({"seq_pending": {"$exists": True}}) == 0
        assert client[db]["trials"].index_information()["changes"]["key"] == [
            ("experiment", 1), ("seq", 1)]
    finally:
        client.close()


def test_a_write_cut_short_is_returned_until_written_again(mongodb_database_url):
    """A writer that died after its write and before its stamp leaves the trial marked: every
    changes returns it (never lost), until a later write numbers it."""
    db = mongodb_database_url.rsplit("/", 1)[1]
    with open_store(mongodb_database_url) as store:
        _fill(store, "e", 2)
        _, cursor = store.changes("e", 0)
        client = _client(mongodb_database_url)
        try:  # what the first of a write's three steps leaves
            client[db]["trials"].update_one({"_id": "e:1"}, {"$set": {
                "state": "cancelled", "seq_pending": "a-dead-writer"}})
        finally:
            client.close()
        for _ in range(2):
            entries, cursor = store.changes("e", cursor)
            assert [(e.trial_id, e.state) for e in entries] == [(1, "cancelled")]
        assert store.get_trial("e", 1).state == "cancelled"  # the mark is not part of the trial
        store.reserve("w", 60.0)  # trial 0: numbered; trial 1 keeps its mark
        assert [e.trial_id for e in store.changes("e", cursor)[0]] == [0, 1]


def test_an_unreachable_server_is_a_store_error_without_the_password():
    url = f"mongodb://alice:s3cr3t-pw@127.0.0.1:{free_port()}/lr?authSource=admin"
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        MongoStore(url, timeout_seconds=0.5)
    assert time.monotonic() - started < 30
    assert "s3cr3t-pw" not in str(err.value) and "alice:***@" in str(err.value)


@pytest.mark.parametrize("url", ["mongodb://", "mongodb://h:notaport/db",
                                 "mongodb://u:pw-xyz@h:99999/db"])
def test_malformed_urls_are_bad_input_without_the_password(url):
    with pytest.raises(ValueError) as err:
        open_store(url)
    assert "pw-xyz" not in str(err.value)


def test_hostile_trial_documents_are_failed_and_never_run(mongodb_database_url, tmp_path):
    from localrules.config import config_from_preset
    from localrules.worker import Worker

    db = mongodb_database_url.rsplit("/", 1)[1]
    good = config_from_preset("bp", overrides=["width=4", "run.epochs=1"]).to_dict()
    with open_store(mongodb_database_url) as store:
        _fill(store, "e", 0)
        store.allocate_trial_ids("e", 5)
    base = {"experiment": "e", "state": "queued", "attempt": 0, "lapses": 0, "params": {},
            "misc": {"idxs": {}, "vals": {}}, "created_at": 1.0, "schema_version": 1}
    hostile = [
        {**base, "_id": "e:0", "trial_id": 0, "config": "__import__('os').system('touch x')"},
        {**base, "_id": "e:1", "trial_id": 1, "config": {**good, "run": {"epochs": "9; rm"}}},
        {**base, "_id": "e:2", "trial_id": 2, "config": {**good, "code": "print(1)"}},
        {**base, "_id": "e:3", "trial_id": 3, "config": good, "__reduce__": "os.system"},
        {**{k: v for k, v in base.items() if k != "misc"}, "_id": "e:4", "trial_id": 4,
         "config": good},
    ]
    client = _client(mongodb_database_url)
    try:
        client[db]["trials"].insert_many(hostile)
    finally:
        client.close()
    calls = []

    def never(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a hostile trial was run")

    with open_store(mongodb_database_url) as store:
        Worker(store, tmp_path, idle_exit=0, trainer=never).run()
        client = _client(mongodb_database_url)
        try:
            docs = {d["trial_id"]: d for d in client[db]["trials"].find()}
        finally:
            client.close()
        history = store.history("e")
    assert calls == []
    assert all(d["state"] == "failed" for d in docs.values()), docs
    assert "wrong type" in docs[0]["error"]
    assert "epochs" in docs[1]["error"] and "invalid trial config" in docs[1]["error"]
    assert "'code'" in docs[2]["error"]
    assert "__reduce__" in docs[3]["error"] and "misc" in docs[4]["error"]
    from localrules.search.history import rebuild

    assert rebuild(history).trials == []  # the controller's history survives them


def test_a_read_only_open_of_an_empty_database_creates_nothing(mongodb_database_url):
    from localrules.store import open_store

    with pytest.raises(ValueError, match="no localrules store in"):
        open_store(mongodb_database_url, read_only=True)
    client = _client(mongodb_database_url)
    try:
        name = client.get_default_database().name
        assert client[name].list_collection_names() == []
    finally:
        client.close()

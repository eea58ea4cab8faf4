"""Documents that crash their reader: hostile trial documents written straight into the database
(behind the store's back, as an unlucky operator or a buggy old version would) are failed by a
reservation or skipped, with a warning naming them, by every read path; every other trial is
read, run and suggested from as usual. Both backends, plus property-based (``fuzz``) tests."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fuzzing import (
    HUGE_INTS,
    JSON_LEAVES,
    JSON_VALUES,
    NON_FINITE,
    NOT_JSON_TEXT,
    bson_oddities,
    mutated_mapping,
    nested,
    nesting_bomb_json,
)
from helpers import finish_queued, queue_trials, tiny_configs
from hypothesis import given, settings
from hypothesis import strategies as st

from localrules.cli.main import main
from localrules.search import Controller, SearchSettings, TpeSettings, open_experiment
from localrules.search.history import rebuild
from localrules.spaces import default_budget, load_space
from localrules.store import DONE, FAILED, QUEUED, STATES, MalformedDocument, open_store
from localrules.store.decode import decode_trial, read_each
from localrules.store.documents import MAX_DEPTH, check_json, strict_json
from localrules.worker import Worker

JSON_COLUMNS = ("config", "params", "misc", "progress", "result", "reference", "curve",
                "attempts")


# --- planting documents behind the store's back -----------------------------------------------
def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


@contextmanager
def _mongo_trials(url: str):
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        yield client.get_default_database()["trials"]
    finally:
        client.close()


def plant(url: str, experiment: str, trial_id: int, field: str, value: Any,
          text: str | None = None) -> None:
    """Set one field of a stored trial directly in the database: ``value`` (as JSON text in a
    SQLite JSON column), or the raw column ``text`` (SQLite; ignored by MongoDB)."""
    if _is_sqlite(url):
        if text is None:
            text = json.dumps(value) if field in JSON_COLUMNS else value
        db = sqlite3.connect(url[len("sqlite:///"):])
        try:
            db.execute(f"UPDATE trials SET {field} = ? WHERE experiment = ? AND trial_id = ?",
                       (text, experiment, trial_id))
            db.commit()
        finally:
            db.close()
    else:
        with _mongo_trials(url) as trials:
            trials.update_one({"_id": f"{experiment}:{trial_id}"}, {"$set": {field: value}})


def raw_states(url: str, experiment: str) -> dict[Any, Any]:
    """trial_id → state as the database holds it (whatever the documents look like)."""
    if _is_sqlite(url):
        db = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return dict(db.execute("SELECT trial_id, state FROM trials WHERE experiment = ?",
                                   (experiment,)).fetchall())
        finally:
            db.close()
    with _mongo_trials(url) as trials:
        return {d["_id"]: d.get("state") for d in trials.find({"experiment": experiment})}


def bomb(url: str) -> tuple[Any, str | None]:
    """A nesting bomb as each backend can hold it: 100,000 deep as SQLite text (``json.loads``
    raises RecursionError), 500 deep as BSON (past what the driver encodes it cannot go)."""
    if _is_sqlite(url):
        return None, nesting_bomb_json(100_000)
    return nested(500, container="dict"), None


class FakeTrainer:
    """Stands in for train_trial: records the configs it is given, returns a result."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, config, out_dir, on_epoch=None, should_stop=None, may_write=None):
        self.calls.append(config)
        return {"objective": 0.5, "top1": 0.5, "diverged": False}


def _warned(caplog, *words: str) -> bool:
    return any(r.levelno >= logging.WARNING and all(w in r.getMessage() for w in words)
               for r in caplog.records)


# --- checks on their own -----------------------------------------------------------------------
def test_check_json_refuses_bombs_and_non_json_values_without_recursing():
    check_json(nested(MAX_DEPTH - 1))
    for value in (nested(MAX_DEPTH + 1), nested(200_000), nested(50_000, container="dict")):
        with pytest.raises(ValueError, match="nested more than"):
            check_json(value)
    for value in (float("nan"), {"a": [float("inf")]}, object(), {"a": b"x"}, {(1,): 2}):
        with pytest.raises(ValueError):
            check_json(value)
    with pytest.raises(ValueError, match="nested more than"):
        strict_json({"progress": nested(100_000)})  # a write is refused, never a RecursionError


@pytest.mark.parametrize("text", [nesting_bomb_json(100_000), "{not json", "[]",
                                  '{"objective": NaN}', '{"a": ' + '[' * 70 + ']' * 70 + "}"])
def test_a_trial_that_cannot_be_decoded_is_one_malformed_document(text):
    row = {"experiment": "exp", "trial_id": 3, "config": text, "params": "{}",
           "misc": '{"idxs": {}, "vals": {}}'}
    with pytest.raises(MalformedDocument) as info:
        decode_trial(row, JSON_COLUMNS)
    assert info.value.what == "trial 3 of 'exp'" and "malformed document" in str(info.value)


def test_read_each_skips_what_any_exception_stops_with_a_warning(caplog):
    def decode(raw):
        if raw == 1:
            raise MalformedDocument("trial 1 of 'exp'", "RecursionError: too deep")
        return raw

    assert read_each([0, 1, 2], decode, "sqlite:///x.db") == [0, 2]
    assert _warned(caplog, "trial 1 of 'exp'", "skipped", "RecursionError")


# --- the worker: a reserved trial that cannot be read or validated fails, alone ----------------
def test_a_nesting_bomb_config_is_failed_and_the_worker_runs_the_next(store, store_url, tmp_path,
                                                                     caplog):
    """The issue's crash loop: the bomb's RecursionError escaped the reservation, which rolled
    back, so the trial stayed queued and killed every worker that started."""
    ids = queue_trials(store, tiny_configs(1, 1))
    value, text = bomb(store_url)
    plant(store_url, "exp", ids[0], "config", value, text)
    fake = FakeTrainer()
    stats = Worker(store, tmp_path, idle_exit=0, trainer=fake).run()
    assert stats.completed == [("exp", ids[1])] and len(fake.calls) == 1
    assert raw_states(store_url, "exp")[ids[0] if _is_sqlite(store_url) else "exp:0"] == FAILED
    assert [t.trial_id for t in store.trials("exp")] == [ids[1]]  # the bomb: skipped, warned
    assert _warned(caplog, f"trial {ids[0]} of 'exp'", "failed, never run")
    assert store.reserve("w2", 60) is None  # nothing left to crash the next worker


def test_a_config_with_a_list_where_a_mapping_belongs_is_failed_alone(store, store_url, tmp_path):
    ids = queue_trials(store, tiny_configs(1, 1, 1))
    plant(store_url, "exp", ids[0], "config", ["a", "list"])
    plant(store_url, "exp", ids[1], "config", {**tiny_configs(1)[0], "run": [1, 2]})
    fake = FakeTrainer()
    stats = Worker(store, tmp_path, idle_exit=0, trainer=fake).run()
    assert stats.completed == [("exp", ids[2])] and len(fake.calls) == 1
    assert raw_states(store_url, "exp")[ids[0] if _is_sqlite(store_url) else "exp:0"] == FAILED
    failed = store.get_trial("exp", ids[1])
    assert failed.state == FAILED and failed.error.startswith("invalid trial config")


def test_any_exception_validating_a_config_fails_that_trial_and_the_loop_goes_on(
        store, tmp_path, monkeypatch):
    from localrules.worker import loop

    real = loop.validate_config
    raised = iter([RecursionError("maximum recursion depth exceeded"), TypeError("unhashable")])

    def validate(data):
        error = next(raised, None)
        if error is not None:
            raise error
        return real(data)

    monkeypatch.setattr(loop, "validate_config", validate)
    ids = queue_trials(store, tiny_configs(1, 1, 1))
    stats = Worker(store, tmp_path, idle_exit=0, trainer=FakeTrainer()).run()
    assert stats.failed == [("exp", ids[0]), ("exp", ids[1])]
    assert stats.completed == [("exp", ids[2])]
    first, second, _ = store.trials("exp")
    assert "RecursionError" in first.error and "TypeError: unhashable" in second.error
    assert first.state == second.state == FAILED  # recorded, not rolled back


# --- readers: a malformed document is skipped with a warning naming it ----------------------------
def _non_json(url: str) -> tuple[Any, str | None]:
    """A value JSON cannot hold: broken text in SQLite, an ObjectId in MongoDB."""
    if _is_sqlite(url):
        return None, "{not json"
    import bson

    return {"objective": 0.5, "oid": bson.ObjectId("0123456789ab0123456789ab")}, None


def test_trials_and_history_skip_a_non_json_row_with_a_warning(store, store_url, caplog):
    ids = queue_trials(store, tiny_configs(1, 1, 1))
    finish_queued(store, "exp")
    value, text = _non_json(store_url)
    plant(store_url, "exp", ids[1], "result", value, text)
    assert [t.trial_id for t in store.trials("exp")] == [ids[0], ids[2]]
    assert _warned(caplog, f"trial {ids[1]} of 'exp'", "skipped")
    assert store.get_trial("exp", ids[1]) is None and store.get_trial("exp", ids[0]) is not None
    assert [e.trial_id for e in store.history("exp")] == [ids[0], ids[2]]
    assert len(store.query("exp")) == 2


@pytest.mark.parametrize("form", ["table", "json", "csv"])
def test_the_trials_command_prints_the_others_and_warns(store, store_url, capsys, caplog, form):
    """The issue's examples: a failed, non-JSON row (SQLite) and a non-JSON BSON value
    (MongoDB) made ``localrules trials`` and ``trials --format json`` unusable."""
    ids = queue_trials(store, tiny_configs(1, 1, 1))
    finish_queued(store, "exp")
    value, text = _non_json(store_url)
    plant(store_url, "exp", ids[1], "state", FAILED)
    plant(store_url, "exp", ids[1], "result", value, text)
    if not _is_sqlite(store_url):  # and BSON's other values JSON has no form for
        import datetime

        plant(store_url, "exp", ids[2], "config", {"when": datetime.datetime(2020, 1, 1)})
    code = main(["trials", "--experiment", "exp", "--db", store_url, "--format", form])
    out = capsys.readouterr().out
    assert code == 0
    assert _warned(caplog, f"trial {ids[1]} of 'exp'", "skipped")
    if form == "json":
        shown = [t["trial_id"] for t in json.loads(out)]
        assert shown == ([ids[0], ids[2]] if _is_sqlite(store_url) else [ids[0]])
    else:
        assert str(ids[0]) in out


def test_experiments_and_search_resume_survive_a_non_json_row(tmp_path, capsys):
    """The SQLite example: a failed trial's non-JSON result stopped the search's resume."""
    url = f"sqlite:///{tmp_path}/s.db"
    with open_store(url) as store:
        controller = _controller(store, max_trials=6, concurrency=3)
        controller.step()
        controller.release_lock()  # stopped; resumed below
        finish_queued(store, "exp")
        plant(url, "exp", 1, "state", FAILED)
        plant(url, "exp", 1, "result", None, "{not json")
        again = _controller(store, max_trials=6, concurrency=3)
        assert again.step() == 3  # the resumed search suggests
        assert again.history.counts[DONE] == 2
    assert main(["experiments", "--db", url, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["counts"]["done"] == 2 and row["counts"]["queued"] == 3


# --- TPE's history: a trial hyperopt could not read is left out, the controller suggests -------
def _controller(store, **options) -> Controller:
    space = load_space("wm-ad", default_budget("digits"))
    settings = SearchSettings(**{"references": (), "tpe": TpeSettings(n_startup_jobs=2),
                                 **options})
    return Controller(store, open_experiment(store, "exp", space, settings), space, settings)


def test_a_done_trial_whose_misc_names_another_trial_is_left_out(store, store_url, caplog):
    """The issue's example: hyperopt's bare AssertionError stopped the controller."""
    controller = _controller(store, max_trials=12, concurrency=3)
    controller.step()
    controller.release_lock()  # stopped; restarted below
    finish_queued(store, "exp")
    misc = store.get_trial("exp", 1).misc
    wrong = {**misc, "idxs": {k: [0] if v else [] for k, v in misc["idxs"].items()}}
    plant(store_url, "exp", 1, "misc", wrong)
    fresh = _controller(store, max_trials=12, concurrency=3)
    assert fresh.step() == 3
    assert _warned(caplog, "trial 1 left out of TPE's history", "not 1")
    assert fresh.history.trials.tids == [0, 2, 3, 4, 5]
    assert fresh.history.counts[DONE] == 3  # still a trial: counted, not modelled


@pytest.mark.parametrize("vals", [
    {"decay": ["x"]},            # not a number
    {"noise": [7]},              # a choice index out of range
    {"noise": [-1]},             # … that Python would wrap round
    {"decay": [1e300]},          # out of the parameter's range
    "drop",                      # a label missing (hyperopt: KeyError)
])
def test_vals_that_do_not_fit_the_space_are_left_out(tmp_path, vals, caplog):
    url = f"sqlite:///{tmp_path}/s.db"
    with open_store(url) as store:
        controller = _controller(store, max_trials=12, concurrency=3)
        controller.step()
        controller.release_lock()
        finish_queued(store, "exp")
        misc = json.loads(json.dumps(store.get_trial("exp", 2).misc))
        if vals == "drop":
            label = next(iter(misc["vals"]))
            del misc["vals"][label], misc["idxs"][label]
        else:
            misc["vals"].update(vals)
            misc["idxs"].update({k: [2] for k in vals})
        plant(url, "exp", 2, "misc", misc)
        fresh = _controller(store, max_trials=12, concurrency=3)
        assert fresh.step() == 3
        assert 2 not in fresh.history.trials.tids
        assert _warned(caplog, "trial 2 left out of TPE's history")


# --- small tampered fields -----------------------------------------------------------------
def test_requeue_survives_a_tampered_lapse_count(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    with open_store(url) as store:
        queue_trials(store, tiny_configs(1))
        store.reserve("w", 60)
        plant(url, "exp", 0, "lapses", "many")
        (trial,) = store.requeue_expired(3, now=1e12)
        assert trial.state == QUEUED and trial.lapses == 1


def test_counts_leave_out_a_state_that_is_no_state(mongodb_database_url):
    with open_store(mongodb_database_url) as store:
        queue_trials(store, tiny_configs(1, 1))
        plant(mongodb_database_url, "exp", 0, "state", ["running"])
        assert store.counts("exp") == {**dict.fromkeys(STATES, 0), QUEUED: 1}
        assert [t.trial_id for t in store.trials("exp")] == [1]


def test_timestamps_no_calendar_holds_are_shown_as_numbers(store, store_url, capsys):
    ids = queue_trials(store, tiny_configs(1))
    plant(store_url, "exp", ids[0], "created_at", 1e300)
    assert main(["trials", "--experiment", "exp", "--db", store_url, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["created_at"] == "1e+300"
    assert main(["trials", "--experiment", "exp", "--db", store_url, "--format", "csv"]) == 0
    assert store.query("exp")["created_at"].isna().all()


# --- property-based: any mutation of stored trial documents, both stores ------------------------
TRIAL_FIELDS = (*JSON_COLUMNS, "state", "attempt", "lapses", "created_at", "lease_expires",
                "schema_version", "worker", "error", "code_version", "started_at")


def _hostile(data, url: str, field: str, original: Any) -> tuple[Any, str | None]:
    """A hostile value for ``field`` (``original``: its value now) as (value, SQLite text)."""
    sqlite = _is_sqlite(url)
    if field in JSON_COLUMNS:
        choices = [JSON_VALUES, st.integers(0, 300).map(nested)]
        if isinstance(original, dict) and original:
            choices.append(mutated_mapping(original))
        if sqlite:
            text = data.draw(st.one_of(NOT_JSON_TEXT, st.one_of(choices).map(json.dumps)))
            return None, text
        return data.draw(st.one_of(*choices, NON_FINITE, bson_oddities())), None
    if field == "state" and sqlite:  # SQLite's CHECK keeps the state one of these
        return data.draw(st.sampled_from(STATES)), None
    value = data.draw(st.one_of(st.sampled_from(STATES), JSON_LEAVES, NON_FINITE, HUGE_INTS,
                                *([] if sqlite else [bson_oddities()])))
    return value, None


def _plant_or_skip(url: str, trial_id: int, field: str, value: Any, text: str | None) -> bool:
    """Plant it if the database can hold it at all (SQLite refuses NULL in NOT NULL columns
    and integers past 64 bits; BSON those too)."""
    import bson.errors
    import pymongo.errors

    try:
        plant(url, "exp", trial_id, field, value, text)
    except (sqlite3.Error, OverflowError, pymongo.errors.PyMongoError, bson.errors.BSONError):
        return False
    return True


def _four_trials(store) -> None:
    """Four trials of a search, as a controller makes them: two done, two queued."""
    first = _controller(store, max_trials=30, concurrency=4)
    first.step()
    first.release_lock()
    for _ in range(2):
        t = store.reserve("w", 60)
        store.complete("exp", t.trial_id, t.attempt, {"objective": 0.1 * t.trial_id})


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite store holding ``_four_trials``, copied by each example (TPE's first suggestions
    once, not thirty times)."""
    path = tmp_path_factory.mktemp("template") / "four.db"
    with open_store(f"sqlite:///{path}") as store:
        _four_trials(store)
    return path


def _adversarial_pass(url: str, data) -> None:
    """Four trials (two done, two queued) made by a controller; hostile values planted in some
    of them; then every reader, a fresh controller's round and workers draining the queue."""
    from localrules.cli.trials_cmd import trial_json, trials_table
    from localrules.store.references import references_of

    with open_store(url) as store:
        if not store.list_experiments():  # (a SQLite example starts from a copied one)
            _four_trials(store)
        space = load_space("wm-ad", default_budget("digits"))
        before = {t.trial_id: t for t in store.trials("exp")}
        mutations = data.draw(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(
            TRIAL_FIELDS)), min_size=1, max_size=3, unique=True), label="mutations")
        touched: dict[int, set[str]] = {}
        for trial_id, field in mutations:
            value, text = _hostile(data, url, field, before[trial_id].to_dict()[field])
            if _plant_or_skip(url, trial_id, field, value, text):
                touched.setdefault(trial_id, set()).add(field)
        intact = {i: t for i, t in before.items() if i not in touched}

        # Readers: nothing escapes; the untouched trials read as they were, once each.
        listed = store.trials("exp")
        ids = [t.trial_id for t in listed]
        assert len(ids) == len(set(ids)) and set(ids) <= set(before)
        assert all(t == intact[t.trial_id] for t in listed if t.trial_id in intact)
        assert set(intact) <= set(ids)
        store.counts("exp")
        references = references_of(listed)
        json.dumps([trial_json(t, references) for t in listed])
        trials_table(listed, references)
        store.query("exp")
        history = store.history("exp")
        assert {e.trial_id for e in history} >= set(intact)
        rebuild(history, space)

        # A fresh controller's history: it goes on suggesting.
        again = _controller(store, max_trials=30, concurrency=5)
        added = again.step()
        assert added > 0
        again.release_lock()
        assert set(intact) <= set(again.history.entries)

        # Workers: each queued trial handed out at most once, hostile ones failed, never run.
        handed: list[int] = []
        for _ in range(40):
            t = store.reserve("w", 60)
            if t is None:
                break
            handed.append(t.trial_id)
            store.complete("exp", t.trial_id, t.attempt, {"objective": 0.5})
        else:
            raise AssertionError("the queue never emptied")
        assert len(handed) == len(set(handed))
        assert {i for i, t in intact.items() if t.state == QUEUED} <= set(handed)
        states = raw_states(url, "exp")
        for key, state in states.items():
            trial_id = key if _is_sqlite(url) else int(key.split(":")[1])
            if state == QUEUED:  # only a document a newer worker may understand waits
                assert "schema_version" in touched.get(trial_id, ()), (trial_id, touched)
        assert len(states) == len(before) + added  # none lost, none made twice


@pytest.mark.fuzz
@given(data=st.data())
def test_hostile_trial_documents_on_sqlite_are_failed_or_skipped(sqlite_template, data):
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(sqlite_template, f"{tmp}/fuzz.db")
        _adversarial_pass(f"sqlite:///{tmp}/fuzz.db", data)


@pytest.mark.fuzz
@settings(max_examples=10)  # SecantusDB: tens of ms an operation
@given(data=st.data())
def test_hostile_trial_documents_on_mongodb_are_failed_or_skipped(mongodb_server_uri, data):
    import pymongo
    from conftest import mongodb_url

    name = f"lrfuzz_{uuid.uuid4().hex[:12]}"
    try:
        _adversarial_pass(mongodb_url(mongodb_server_uri, name), data)
    finally:
        client = pymongo.MongoClient(mongodb_server_uri, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(name)
        finally:
            client.close()

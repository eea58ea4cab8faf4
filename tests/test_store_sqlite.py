"""The SQLite store beyond the contract: URL forms, WAL, schema versions, upgrades, throughput.

The contract every backend shares is ``test_store_contract.py``. Here: what only a SQLite file has.
The multi-process tests use the spawn start method (as on macOS and Windows, and safe next to
threads); their workers are the module-level functions below.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from localrules.store import DONE, Experiment, StoreError, Trial, open_store
from localrules.store.documents import SCHEMA_VERSION
from localrules.store.urls import redact


def experiment(name: str = "exp", **settings: Any) -> Experiment:
    return Experiment(name=name, space_name="wm", space_source={"kind": "paper", "name": "wm"},
                      fingerprint="f", budget={"epochs": 1}, settings=settings)


def fill(store, name: str, n: int) -> list[int]:
    store.create_experiment(experiment(name))
    ids = store.allocate_trial_ids(name, n)
    store.add_trials([Trial(experiment=name, trial_id=i, config={"i": i}, params={"x": i / n},
                            misc={}) for i in ids])
    return ids


def url_of(path: Path) -> str:
    return "sqlite:///" + str(path)


# --- URLs ---------------------------------------------------------------------------------------
def test_relative_url_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for url, path in (("sqlite:///rel.db", "rel.db"), ("sqlite:///sub/rel.db", "sub/rel.db")):
        with open_store(url) as store:
            assert store.url == url
            store.create_experiment(experiment("here"))
        assert (tmp_path / path).is_file()
        with open_store(url_of(tmp_path / path)) as store:
            assert store.get_experiment("here") is not None


def test_absolute_url_has_four_slashes(tmp_path, monkeypatch):
    path = tmp_path / "abs.db"
    url = url_of(path)
    assert url.startswith("sqlite:////")
    with open_store(url) as store:
        assert store.url == url
        store.create_experiment(experiment("there"))
    assert path.is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with open_store(url) as store:
        assert store.get_experiment("there") is not None
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_stores_are_private(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store(url) as one, open_store(url) as two:
        fill(one, "mem", 2)
        trial = one.reserve("w", 60.0)
        one.complete("mem", trial.trial_id, trial.attempt, {"objective": 1.0})
        assert one.counts("mem")[DONE] == 1
        assert two.get_experiment("mem") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["sqlite:/x.db", "sqlite:x.db", "sqlite:///", "sqlite:/"])
def test_malformed_sqlite_urls(url):
    with pytest.raises(ValueError, match="malformed SQLite URL") as info:
        open_store(url)
    assert "sqlite:////absolute/path.db" in str(info.value)


@pytest.mark.parametrize("url", [
    "postgres://u:secret@h/db",
    "postgresql+psycopg://user:secret@h:5432/db?sslmode=require",
    "postgres://u:secret@[h/db",  # not even parseable: still no password in the message
])
def test_unknown_schemes_list_the_valid_ones_without_the_password(url):
    with pytest.raises(ValueError, match="unknown database URL scheme") as info:
        open_store(url)
    message = str(info.value)
    assert "secret" not in message
    for scheme in ("sqlite://", "mongodb://", "mongodb+srv://"):
        assert scheme in message


@pytest.mark.parametrize("url", ["", "localrules.db", None])
def test_not_a_url(url):
    with pytest.raises(ValueError, match=r"malformed database URL .*sqlite:///PATH\.db"):
        open_store(url)


def test_redact():
    assert redact("mongodb://u:secret@h:27017/db") == "mongodb://u:***@h:27017/db"
    assert redact("mongodb+srv://u:se%2Fcret@cluster/db") == "mongodb+srv://u:***@cluster/db"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert "secret" not in redact("mongodb://u:secret@[h/db")


def test_missing_parent_directory(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(ValueError, match="does not exist") as info:
        open_store(url_of(missing / "x.db"))
    # The directory itself, not just the file path it begins.
    assert re.search(re.escape(str(missing)) + r"(?![/\\\w])", str(info.value)), info.value
    assert not missing.exists()


def test_not_a_database_file(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a SQLite database\n" * 200)
    with pytest.raises(ValueError, match="cannot open the SQLite store"):
        open_store(url_of(path))


# --- the file -----------------------------------------------------------------------------------
def test_journal_mode_is_wal(tmp_path):
    path = tmp_path / "wal.db"
    with open_store(url_of(path)):
        pass
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    with open_store(url_of(path)) as store:
        store.create_experiment(experiment("kept"))
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StoreError, match="upgrade") as info:
        open_store(url_of(path))
    assert "99" in str(info.value)
    db = sqlite3.connect(path)
    try:  # the file is left as it was
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            "99",)
        assert db.execute("SELECT name FROM experiments").fetchall() == [("kept",)]
    finally:
        db.close()


def test_reopening_keeps_everything(tmp_path):
    url = url_of(tmp_path / "keep.db")
    with open_store(url) as store:
        fill(store, "exp", 3)
        trial = store.reserve("w", 60.0)
        store.complete("exp", trial.trial_id, trial.attempt, {"objective": 0.5})
        before = store.trials("exp")
    with open_store(url) as store:
        assert store.trials("exp") == before
        assert store.reserve("w", 60.0).attempt == 1


def test_reserve_and_complete_throughput(tmp_path):
    n = 300
    with open_store(url_of(tmp_path / "fast.db")) as store:
        fill(store, "fast", n)
        start = time.perf_counter()
        while (trial := store.reserve("w", 60.0)) is not None:
            store.complete("fast", trial.trial_id, trial.attempt, {"objective": 0.0})
        rate = n / (time.perf_counter() - start)
        assert store.counts("fast")[DONE] == n
    assert rate >= 100, f"only {rate:.0f} reserve+complete per second"


def test_a_store_from_before_lapses_were_counted_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with open_store(f"sqlite:///{path}") as store:
        store.create_experiment(experiment("exp"))
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE trials DROP COLUMN lapses")
    db.commit()
    db.close()
    with open_store(f"sqlite:///{path}") as store:
        ids = store.allocate_trial_ids("exp", 1)
        store.add_trials([Trial(experiment="exp", trial_id=ids[0], config={}, params={},
                                misc={})])
        assert store.reserve("w", 60.0).lapses == 0


def test_a_store_from_before_reference_runs_is_upgraded(tmp_path):
    """A schema-1 store (no reference columns) opens, gains them, and keeps its old trials."""
    import sqlite3

    path = tmp_path / "v1.db"
    with open_store(f"sqlite:///{path}") as store:
        store.create_experiment(experiment("exp"))
        store.add_trials([Trial(experiment="exp", trial_id=0, config={}, params={}, misc={},
                                schema_version=1)])
    db = sqlite3.connect(path)
    db.execute("DROP INDEX trials_reference")
    db.execute("DROP INDEX trials_reference_runs")  # made since: it names the column
    db.execute("ALTER TABLE trials DROP COLUMN reference")
    db.execute("ALTER TABLE trials DROP COLUMN reference_key")
    db.commit()
    db.close()
    with open_store(f"sqlite:///{path}") as store:
        (old,) = store.trials("exp")
        assert old.reference is None and old.schema_version == 1
        marker = {"rule": "bp", "replicate": 0, "key": "k1"}
        store.add_trials([Trial(experiment="exp", trial_id=1, config={}, params={}, misc={},
                                reference=marker)])
        assert [t.trial_id for t in store.reference_runs("k1")] == [1]
        assert [h.reference for h in store.history("exp")] == [None, marker]


def _schema_2(path: Path) -> None:
    """Turn a store back into schema 2: no change numbers."""
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP INDEX trials_changes")
        db.execute("ALTER TABLE trials DROP COLUMN seq")
        db.execute("DROP TABLE sequence")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.close()


def test_a_reader_reads_an_older_store_without_upgrading_the_file(tmp_path):
    import hashlib

    path = tmp_path / "v2.db"
    with open_store(url_of(path)) as store:
        fill(store, "exp", 3)
    _schema_2(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_store(url_of(path), read_only=True) as reader:
        assert [t.trial_id for t in reader.trials("exp")] == [0, 1, 2]
        assert [(e.trial_id, e.seq) for e in reader.history("exp")] == [(0, 0), (1, 0), (2, 0)]
        with pytest.raises(StoreError, match="read-only"):
            reader.cancel("exp")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_store_from_before_change_numbers_is_upgraded(tmp_path):
    """A schema-2 store (no seq column, no counter) opens, is marked with this schema (an
    older localrules would write unnumbered), and its old trials come with the first changes only,
    until they are written again."""
    path = tmp_path / "v2.db"
    with open_store(url_of(path)) as store:
        fill(store, "exp", 3)
    _schema_2(path)
    with open_store(url_of(path)) as store:
        entries, cursor = store.changes("exp", 0)
        assert [(e.trial_id, e.seq) for e in entries] == [(0, 0), (1, 0), (2, 0)]
        assert store.changes("exp", cursor)[0] == []
        trial = store.reserve("w", 60.0)
        (entry,) = store.changes("exp", cursor)[0]
        assert entry.trial_id == trial.trial_id and entry.seq > 0 and entry.state == "running"
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),) == ("5",)
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT trial_id FROM trials WHERE experiment = 'exp' AND "
            "seq > 5"))
        assert "trials_changes" in plan, plan
    finally:
        db.close()


@pytest.mark.parametrize(("url", "password"), [
    ("mongodb://u:p/ss@h/db", "p/ss"), ("mongodb://u:p#s?s@h:1/db?x=1", "p#s?s"),
    ("postgres://u:se@cret@h/db", "se@cret"), ("see mongodb://u:pw1@h/db: refused", "pw1")])
def test_redact_hides_passwords_whatever_they_hold(url, password):
    from localrules.store.urls import redact

    shown = redact(url)
    assert password not in shown and "u:***@h" in shown


def test_a_read_only_open_changes_no_byte_and_refuses_other_files(tmp_path):
    import hashlib

    path = tmp_path / "s.db"
    with open_store(url_of(path)) as store:
        fill(store, "e", 3)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_store(url_of(path), read_only=True) as reader:
        assert len(reader.trials("e")) == 3
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    size = other.stat().st_size
    with pytest.raises(ValueError, match="is not a localrules store"):
        open_store(url_of(other), read_only=True)
    assert other.stat().st_size == size
    with pytest.raises(ValueError, match="no database at"):
        open_store(url_of(tmp_path / "missing.db"), read_only=True)
    assert not (tmp_path / "missing.db").exists()


def _plans(store, monkeypatch, **query: Any) -> list[tuple[str, str]]:
    """(SQL, its query plan) of every read ``store.select`` makes."""
    seen: list[tuple[str, str]] = []
    read = store._read

    def traced(sql: str, args: Any = ()) -> Any:
        plan = " ".join(r[-1] for r in store._db.execute("EXPLAIN QUERY PLAN " + sql, args))
        seen.append((sql, plan))
        return read(sql, args)

    monkeypatch.setattr(store, "_read", traced)
    store.select("exp", **query)
    monkeypatch.undo()
    return seen


def test_queries_read_the_indexes_made_for_them(tmp_path, monkeypatch):
    """A top-N by a score reads the expression index of its sort terms (the JSON path inline:
    SQLite matches an index expression by its text), the references come from the partial
    index of reference runs, and the other reads of one experiment keep the primary key (the
    sort indexes are partial, so the planner never walks a whole experiment through them)."""
    path = tmp_path / "q.db"
    with open_store(url_of(path)) as store:
        store.create_experiment(experiment("exp"))
        store.add_trials([Trial(experiment="exp", trial_id=i, config={}, params={"x": i % 7},
                                misc={}, state=DONE,
                                result={"objective": (i * 37 % 101) / 101, "top1": i / 200})
                          for i in range(200)])
        for score, index in (("objective", "trials_by_objective"), ("top1", "trials_by_top1")):
            seen = _plans(store, monkeypatch, sort=score, limit=5)
            sorted_reads = [plan for sql, plan in seen if "ORDER BY CASE" in sql]
            assert sorted_reads and all(index in plan for plan in sorted_reads), seen
            best = store.select("exp", sort=score, limit=5).trials
            expected = sorted(store.trials("exp"), key=lambda t: (-t.result[score], t.trial_id))
            assert [t.trial_id for t in best] == [t.trial_id for t in expected[:5]]
        seen = _plans(store, monkeypatch, where="params.x == 3 and result.top1 > 0.5")
        (references,) = [plan for sql, plan in seen if "reference IS NOT NULL" in sql]
        assert "trials_reference_runs" in references
        assert not any("trials_by_" in plan for _, plan in seen), seen

"""The SQLite trial store: the embedded default, safe for several processes on one machine.

WAL journal (readers never block the writer), ``BEGIN IMMEDIATE`` for every read-modify-write
(one writer at a time across processes, so a reservation is atomic) and a busy timeout so that
contending processes wait instead of failing. Queryable fields are columns with indexes; the rest
of a document (config, params, misc, progress, result) is JSON text. One connection per store
object, shared by its threads (a worker's heartbeat thread) under a lock.

Every write to a trial stamps its ``seq`` column with the next value of the store's counter
(table ``sequence``) in the same transaction, so changes land in the order of their numbers and
``changes`` reads them from the (experiment, seq) index with the highest number read as cursor.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localrules.store import attempts as attempts_log
from localrules.store.attempts import appended, closed, opened
from localrules.store.base import (
    ExperimentNotFound,
    LeaseLost,
    LockLost,
    LockState,
    StoreError,
    StoreUnavailable,
    TrialExists,
    TrialNotFound,
    TrialStore,
    check_cursor,
)
from localrules.store.curve import curve_entry
from localrules.store.decode import (
    MalformedDocument,
    decode_entry,
    decode_experiment,
    decode_trial,
    decode_worker,
    loads,
    read_each,
)
from localrules.store.documents import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SCHEMA_VERSION,
    STATES,
    Experiment,
    HistoryEntry,
    Trial,
    check_fidelity,
    requeue_outcome,
    strict_json,
)
from localrules.store.documents import now as clock
from localrules.store.workers import (
    WorkerFacts,
    WorkerRecord,
    checked_write,
    lapse_event,
    logged,
    updated,
)

log = logging.getLogger(__name__)

_JSON_FIELDS = ("config", "params", "misc", "progress", "result", "reference", "fidelity",
                "curve", "attempts")
_TRIAL_COLUMNS = (
    "experiment", "trial_id", "state", "attempt", "lapses", "worker", "lease_expires", "config",
    "params", "misc", "progress", "result", "error", "code_version", "created_at", "started_at",
    "updated_at", "finished_at", "reference", "schema_version", "fidelity", "curve", "attempts",
)
_ADDED_COLUMNS = {"lapses": "INTEGER NOT NULL DEFAULT 0", "reference": "TEXT",
                  "reference_key": "TEXT", "seq": "INTEGER NOT NULL DEFAULT 0",
                  "fidelity": "TEXT", "curve": "TEXT NOT NULL DEFAULT '{}'",
                  "attempts": "TEXT NOT NULL DEFAULT '[]'"}
"""Columns added after the first release: a store created before gets them when opened (its
trials get ``seq`` 0: read by a reader's first ``changes``, numbered at their next write)."""
_HISTORY_COLUMNS = ("trial_id", "state", "misc", "result", "reference", "seq", "fidelity",
                    "attempt")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    next_trial_id INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS trials (
    experiment TEXT NOT NULL REFERENCES experiments(name),
    trial_id INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
    attempt INTEGER NOT NULL DEFAULT 0,
    lapses INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_expires REAL,
    config TEXT NOT NULL,
    params TEXT NOT NULL,
    misc TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    code_version TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    updated_at REAL,
    finished_at REAL,
    reference TEXT,
    reference_key TEXT,
    schema_version INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    fidelity TEXT,
    curve TEXT NOT NULL DEFAULT '{{}}',
    attempts TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (experiment, trial_id)
);
CREATE INDEX IF NOT EXISTS trials_queue ON trials (state, created_at, trial_id);
CREATE INDEX IF NOT EXISTS trials_lease ON trials (state, lease_expires);
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lock_generations (name TEXT PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sequence (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY,
    last_seen REAL NOT NULL,
    doc TEXT NOT NULL
);
"""


class SQLiteStore(TrialStore):
    """A trial store in one SQLite file (``:memory:`` for a private, single-process store)."""

    def __init__(self, path: str, url: str | None = None, busy_timeout: float = 60.0,
                 read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.url = url or f"sqlite:///{path}"
        self.read_only = read_only
        if path != ":memory:":
            path = str(Path(path).expanduser())
            parent = Path(path).resolve().parent
            if not parent.is_dir():
                raise ValueError(f"cannot open the SQLite store {path!r}: directory "
                                 f"{str(parent)!r} does not exist")
        if read_only:
            self._open_read_only(path, busy_timeout)
            return
        try:
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
            self._refuse_foreign(path)  # before the journal mode changes anything
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write() as db:
                self._create_or_upgrade(db)
                (self.identity,) = db.execute(
                    "SELECT value FROM meta WHERE key='identity'").fetchone()
        except _Newer as newer:
            self._db.close()
            raise StoreError(f"{self.url} has schema version {newer}; this localrules "
                             f"understands up to {SCHEMA_VERSION}: upgrade localrules") from None
        except sqlite3.OperationalError as err:  # locked, I/O: the database, not the input
            raise StoreError(f"cannot open the SQLite store {path!r}: {err}") from None
        except sqlite3.DatabaseError as err:  # not a database
            raise ValueError(f"cannot open the SQLite store {path!r}: {err}") from None

    def _refuse_foreign(self, path: str) -> dict[str, str]:
        """The store's ``meta`` table ({} for a database with no tables, e.g. an empty file);
        ValueError, the connection closed, for a database holding anything else (a file of
        another program is never given localrules tables or a new journal mode)."""
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return {}
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) \
            if "meta" in tables else {}
        if not {"meta", "experiments", "trials"} <= tables or "identity" not in meta:
            self._db.close()
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise ValueError(f"{path!r} is not a localrules store (it holds the tables "
                             f"{shown}); give a new file or a localrules database")
        return meta

    @staticmethod
    def _create_or_upgrade(db: sqlite3.Connection) -> None:
        """Create the tables, or bring an older store's up to this schema version (inside a
        write transaction); _Newer for a store of a newer version."""
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise _Newer(row[0])  # rolled back: the file is left as it was
        columns = {r[1] for r in db.execute("PRAGMA table_info(trials)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in columns:
                db.execute(f"ALTER TABLE trials ADD COLUMN {column} {kind}")
        db.execute("CREATE INDEX IF NOT EXISTS trials_reference ON trials "
                   "(reference_key)")
        db.execute("CREATE INDEX IF NOT EXISTS trials_changes ON trials "
                   "(experiment, seq)")
        from localrules.store.query.to_sql import SORT_INDEXES, SORTED_ROWS, sort_terms

        # A query's reference runs (in trial order, so the planner prefers it to the primary
        # key) and a top-N by a score read from indexes (store.query)
        db.execute("CREATE INDEX IF NOT EXISTS trials_reference_runs ON trials "
                   "(experiment, trial_id) WHERE reference IS NOT NULL")
        for name, field in SORT_INDEXES.items():
            db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON trials "
                       f"(experiment, {', '.join(sort_terms(field))}) WHERE {SORTED_ROWS}")
        # Marked with this version (an older localrules would write unnumbered).
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))
        # From 1: a cursor (the counter as read) is never 0, which reads everything.
        db.execute("INSERT OR IGNORE INTO sequence VALUES ('trials', 1)")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)",
                   (uuid.uuid4().hex,))

    def _open_read_only(self, path: str, busy_timeout: float) -> None:
        """For readers: SQLite's read-only mode, so nothing in the store is created, migrated or
        written (SQLite may still create its ``-wal``/``-shm`` side files to read a WAL
        database). A store of an older schema version is read from a copy in memory brought up
        to this one: the file stays as it is, and the copy is a snapshot of the moment it was
        opened. A file that is not a localrules store is refused."""
        try:
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            if not Path(path + "-wal").exists():
                # Nothing is being written: look at the file as it is, without the side files a
                # WAL database's reader creates, so another program's file gets none.
                self._db = sqlite3.connect(uri + "&immutable=1", uri=True)
                self._refuse_foreign(path)
                self._db.close()
            self._db = sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                                       isolation_level=None, check_same_thread=False)
            meta = self._refuse_foreign(path)
            if not meta:
                self._db.close()
                raise ValueError(f"{path!r} is not a localrules store (it is empty): nothing "
                                 "to read; run a search first or give the right database URL")
            version = int(meta.get("schema_version", 0))
            if version > SCHEMA_VERSION:
                self._db.close()
                raise StoreError(f"{self.url} has schema version {version}; this localrules "
                                 f"understands up to {SCHEMA_VERSION}: upgrade localrules")
            if version < SCHEMA_VERSION:
                log.info("%s has schema version %d: reading a copy upgraded in memory",
                         self.url, version)
                memory = sqlite3.connect(":memory:", isolation_level=None,
                                         check_same_thread=False)
                self._db.backup(memory)
                self._db.close()
                self._db = memory
                self.snapshot = True
                with self._transaction("BEGIN IMMEDIATE") as db:
                    self._create_or_upgrade(db)
        except sqlite3.OperationalError as err:  # locked, unreadable: the database, not the input
            raise StoreError(f"cannot open the SQLite store {path!r}: {err}") from None
        except sqlite3.DatabaseError as err:  # not a database
            raise ValueError(f"cannot open the SQLite store {path!r}: {err}") from None
        self.identity = meta["identity"]

    # --- plumbing -----------------------------------------------------------------------------
    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One read-modify-write transaction, serialised across processes."""
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        return self._transaction("BEGIN IMMEDIATE")

    def _snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Reads that see one state of the database (WAL: never blocked by a writer)."""
        return self._transaction("BEGIN")

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """A transaction (``begin`` is its BEGIN statement) on the shared connection. A
        database that stays locked or fails (sqlite3.OperationalError) is a StoreError."""
        with self._lock:
            try:
                self._db.execute(begin)
                yield self._db
            except BaseException as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(err, sqlite3.OperationalError):
                    raise _store_error(self.url, err) from err
                raise
            else:
                self._db.execute("COMMIT")

    @staticmethod
    def _seq(db: sqlite3.Connection) -> int:
        """The next change number, taken inside the caller's write transaction (so it lands
        with the write, after every smaller number)."""
        (value,) = db.execute("UPDATE sequence SET value = value + 1 WHERE name = 'trials' "
                              "RETURNING value").fetchone()
        return value

    @staticmethod
    def _check_fence(db: sqlite3.Connection, fence: LockState | None) -> None:
        """Inside the caller's write transaction: LockLost unless the fence's lock still has
        its owner and generation (so the write and the check are one atomic step)."""
        if fence is None:
            return
        row = db.execute("SELECT l.owner, g.generation FROM locks l JOIN lock_generations g "
                         "ON g.name = l.name WHERE l.name = ?", (fence.name,)).fetchone()
        if row is None or row[0] != fence.owner or row[1] != fence.generation:
            held = "nobody" if row is None or not row[0] else f"{row[0]} (generation {row[1]})"
            raise LockLost(f"lock {fence.name!r} is no longer held by {fence.owner} "
                           f"(generation {fence.generation}); it is held by {held}")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as err:
                raise _store_error(self.url, err) from err

    @staticmethod
    def _trial(row: Sequence[Any]) -> Trial:
        """The trial of a row; MalformedDocument (naming it) for anything wrong with it."""
        return decode_trial(dict(zip(_TRIAL_COLUMNS, row, strict=True)), _JSON_FIELDS)

    def _select(self, where: str, args: Sequence[Any] = (), tail: str = "") -> list[Trial]:
        """The trials of the rows selected, malformed ones skipped with a warning."""
        sql = f"SELECT {', '.join(_TRIAL_COLUMNS)} FROM trials WHERE {where} {tail}"
        return read_each(self._read(sql, args), self._trial, self.url)

    def _fenced(self, experiment: str, trial_id: int, attempt: int,
                sets: Mapping[str, Any], late: bool = False,
                edit: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None) -> None:
        """Update a running trial only if ``attempt`` still holds it (with ``late``, also a
        trial requeued from that attempt and not reserved since); else LeaseLost. ``edit``
        gives more columns (JSON values) from the held trial's ``curve`` and ``attempts``
        (their text), read in the same transaction."""
        states = (RUNNING, QUEUED) if late else (RUNNING, RUNNING)
        held = ("experiment = ? AND trial_id = ? AND state IN (?, ?) AND attempt = ? AND "
                "attempt >= 1")
        with self._write() as db:
            if edit is not None:
                row = db.execute(f"SELECT curve, attempts FROM trials WHERE {held}",
                                 (experiment, trial_id, *states, attempt)).fetchone()
                if row is not None:
                    more = edit({"curve": row[0], "attempts": row[1]})
                    sets = {**sets, **{k: text for k, v in more.items()
                                       if (text := _log_text(v)) is not None}}
            assignments = ", ".join(f"{k} = ?" for k in sets)
            cur = db.execute(
                f"UPDATE trials SET {assignments}, updated_at = ?, seq = ? WHERE {held}",
                (*sets.values(), clock(), self._seq(db), experiment, trial_id, *states, attempt),
            )
            if cur.rowcount == 1:
                return
            row = db.execute("SELECT state, attempt FROM trials WHERE experiment = ? AND "
                             "trial_id = ?", (experiment, trial_id)).fetchone()
        if row is None:
            raise TrialNotFound(f"no trial {trial_id} in experiment {experiment!r}")
        raise LeaseLost(f"trial {trial_id} of {experiment!r} is no longer held by attempt "
                        f"{attempt} (state {row[0]}, attempt {row[1]})")

    # --- experiments --------------------------------------------------------------------------
    def create_experiment(self, experiment: Experiment) -> Experiment:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO experiments (name, doc) VALUES (?, ?)",
                       (experiment.name, strict_json(experiment.to_dict())))
            (doc,) = db.execute("SELECT doc FROM experiments WHERE name = ?",
                                (experiment.name,)).fetchone()
        return decode_experiment(doc, text=True)

    def get_experiment(self, name: str) -> Experiment | None:
        rows = self._read("SELECT doc FROM experiments WHERE name = ?", (name,))
        return decode_experiment(rows[0][0], text=True) if rows else None

    def list_experiments(self) -> list[Experiment]:
        rows = self._read("SELECT doc FROM experiments ORDER BY name")
        return read_each((r[0] for r in rows), lambda doc: decode_experiment(doc, text=True),
                         self.url)

    def update_settings(self, name: str, settings: Mapping[str, Any],
                        fence: LockState | None = None) -> Experiment:
        with self._write() as db:
            self._check_fence(db, fence)
            row = db.execute("SELECT doc FROM experiments WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ExperimentNotFound(f"no experiment {name!r} in {self.url}")
            doc = decode_experiment(row[0], text=True).to_dict()  # MalformedDocument if not
            doc["settings"] = {**doc.get("settings", {}), **settings}
            db.execute("UPDATE experiments SET doc = ? WHERE name = ?", (strict_json(doc), name))
        return Experiment.from_dict(doc)

    # --- creating trials ----------------------------------------------------------------------
    def allocate_trial_ids(self, experiment: str, n: int) -> list[int]:
        if n < 0:
            raise ValueError(f"cannot allocate {n} trial ids")
        with self._write() as db:
            row = db.execute("SELECT next_trial_id FROM experiments WHERE name = ?",
                             (experiment,)).fetchone()
            if row is None:
                raise ExperimentNotFound(f"no experiment {experiment!r} in {self.url}")
            db.execute("UPDATE experiments SET next_trial_id = ? WHERE name = ?",
                       (row[0] + n, experiment))
        return list(range(row[0], row[0] + n))

    def add_trials(self, trials: Sequence[Trial], fence: LockState | None = None) -> None:
        for t in trials:
            Trial.from_dict(t.to_dict())  # the checks a stored document will face
        rows = []
        for t in trials:
            data = t.to_dict()
            for name in _JSON_FIELDS:
                if data[name] is not None:
                    data[name] = strict_json(data[name])
            key = None if t.reference is None else t.reference["key"]
            rows.append((*(data[c] for c in _TRIAL_COLUMNS), key))
        columns = (*_TRIAL_COLUMNS, "reference_key", "seq")
        marks = ", ".join("?" for _ in columns)
        try:
            with self._write() as db:
                self._check_fence(db, fence)
                seq = self._seq(db)
                db.executemany(f"INSERT INTO trials ({', '.join(columns)}) "
                               f"VALUES ({marks})", [(*row, seq) for row in rows])
        except sqlite3.IntegrityError as err:
            if "FOREIGN KEY" in str(err):
                missing = sorted({t.experiment for t in trials} - {
                    e.name for e in self.list_experiments()})
                raise ExperimentNotFound(f"no experiment {', '.join(missing)} in {self.url}"
                                         ) from None
            if "UNIQUE" in str(err):
                raise TrialExists(f"a trial id is already taken: {err}") from None
            raise ValueError(f"invalid trial document: {err}") from None

    # --- the worker's side --------------------------------------------------------------------
    def reserve(
        self, worker: str, lease_seconds: float, experiments: Sequence[str] | None = None
    ) -> Trial | None:
        # Documents of a newer schema wait for a newer worker (a rolling upgrade).
        where, args = "state = ? AND schema_version <= ?", [QUEUED, SCHEMA_VERSION]
        if experiments is not None:
            if not experiments:
                return None
            where += f" AND experiment IN ({', '.join('?' for _ in experiments)})"
            args += list(experiments)
        columns = ", ".join(_TRIAL_COLUMNS)
        with self._write() as db:
            t = clock()  # after the wait for the write lock
            while True:
                row = db.execute(f"SELECT experiment, trial_id FROM trials WHERE {where} "
                                 "ORDER BY created_at, trial_id LIMIT 1", args).fetchone()
                if row is None:
                    return None
                db.execute(
                    "UPDATE trials SET state = ?, attempt = attempt + 1, worker = ?, "
                    "lease_expires = ?, started_at = ?, updated_at = ?, seq = ? "
                    "WHERE experiment = ? AND trial_id = ?",
                    (RUNNING, worker, t + lease_seconds, t, t, self._seq(db), *row),
                )
                self._log_attempt(db, row, worker, t)
                taken = db.execute(f"SELECT {columns} FROM trials WHERE experiment = ? AND "
                                   "trial_id = ?", row).fetchone()
                try:
                    return self._trial(taken)
                except MalformedDocument as err:  # fail it (committed), never hand it out
                    log.warning("%s: %s failed, never run: malformed document: %s", self.url,
                                err.what, err.reason)
                    db.execute("UPDATE trials SET state = ?, error = ?, lease_expires = NULL, "
                               "finished_at = ?, seq = ? WHERE experiment = ? AND trial_id = ?",
                               (FAILED, f"malformed trial document: {err.reason}", t,
                                self._seq(db), *row))

    @staticmethod
    def _log_attempt(db: sqlite3.Connection, key: Sequence[Any], worker: str, t: float) -> None:
        """Inside ``reserve``'s transaction: append the new attempt's entry to the trial's
        attempts log (``store.attempts``)."""
        attempt, text = db.execute("SELECT attempt, attempts FROM trials WHERE experiment = ? "
                                   "AND trial_id = ?", key).fetchone()
        if isinstance(attempt, int):  # else the document is failed as malformed
            log_ = _log_text(appended(_loaded(text, list), opened(attempt, worker, t)))
            if log_ is not None:
                db.execute("UPDATE trials SET attempts = ? WHERE experiment = ? AND "
                           "trial_id = ?", (log_, *key))

    def heartbeat(self, experiment: str, trial_id: int, attempt: int,
                  lease_seconds: float) -> None:
        self._fenced(experiment, trial_id, attempt, {"lease_expires": clock() + lease_seconds})

    def report_progress(self, experiment: str, trial_id: int, attempt: int,
                        progress: Mapping[str, Any]) -> None:
        text, t = strict_json(dict(progress)), clock()
        entry = curve_entry(progress, attempt, t)

        def filed(row: Mapping[str, Any]) -> dict[str, Any]:
            return {} if entry is None else {"curve": {**_loaded(row["curve"], dict),
                                                       entry[0]: entry[1]}}

        self._fenced(experiment, trial_id, attempt, {"progress": text}, edit=filed)

    def _ending(self, experiment: str, trial_id: int, attempt: int, sets: Mapping[str, Any],
                outcome: str, error: str | None = None, late: bool = False) -> None:
        """A fenced write that ends the attempt: ``sets``, and its entry in the attempts log
        closed with ``outcome``."""
        t = clock()

        def close(row: Mapping[str, Any]) -> dict[str, Any]:
            return {"attempts": closed(_loaded(row["attempts"], list), attempt, outcome, t,
                                       error, late)}

        self._fenced(experiment, trial_id, attempt, sets, late=late, edit=close)

    def complete(self, experiment: str, trial_id: int, attempt: int,
                 result: Mapping[str, Any]) -> None:
        self._ending(experiment, trial_id, attempt, {
            "state": DONE, "result": strict_json(dict(result)), "lease_expires": None,
            "finished_at": clock(),
        }, attempts_log.DONE, late=True)

    def fail(self, experiment: str, trial_id: int, attempt: int, error: str) -> None:
        self._ending(experiment, trial_id, attempt, {
            "state": FAILED, "error": str(error), "lease_expires": None, "finished_at": clock(),
        }, attempts_log.FAILED, str(error), late=True)

    def release(self, experiment: str, trial_id: int, attempt: int) -> None:
        self._ending(experiment, trial_id, attempt,
                     {"state": QUEUED, "worker": None, "lease_expires": None},
                     attempts_log.RELEASED)

    def promote(self, experiment: str, trial_id: int, attempt: int,
                fidelity: Mapping[str, Any], fence: LockState | None = None) -> bool:
        check_fidelity(fidelity)
        text = strict_json(dict(fidelity))
        with self._write() as db:
            self._check_fence(db, fence)
            cur = db.execute(
                "UPDATE trials SET state = ?, fidelity = ?, worker = NULL, lease_expires = NULL,"
                " finished_at = NULL, updated_at = ?, seq = ? WHERE experiment = ? AND "
                "trial_id = ? AND state = ? AND attempt = ? AND "
                "json_extract(fidelity, '$.rung') = ?",
                (QUEUED, text, clock(), self._seq(db), experiment, trial_id, DONE, attempt,
                 fidelity["rung"] - 1))
            return cur.rowcount == 1

    # --- any process --------------------------------------------------------------------------
    def requeue_expired(self, max_attempts: int, now: float | None = None,
                        fence: LockState | None = None) -> list[Trial]:
        with self._write() as db:
            self._check_fence(db, fence)
            t = clock() if now is None else now
            rows = db.execute("SELECT experiment, trial_id, lapses, attempt, attempts, worker "
                              "FROM trials WHERE state = ? AND lease_expires < ?",
                              (RUNNING, t)).fetchall()
            for experiment, trial_id, lapses, attempt, text, worker in rows:
                lapses = lapses if isinstance(lapses, int) else 0  # a tampered count
                state, error = requeue_outcome(lapses + 1, max_attempts)
                log_ = closed(_loaded(text, list), attempt, attempts_log.LAPSED, t, error)
                db.execute(
                    "UPDATE trials SET state = ?, error = ?, lapses = lapses + 1, worker = "
                    "CASE WHEN ? = 'failed' THEN worker END, lease_expires = NULL, "
                    "finished_at = CASE WHEN ? = 'failed' THEN ? END, updated_at = ?, seq = ?, "
                    "attempts = COALESCE(?, attempts) WHERE experiment = ? AND trial_id = ?",
                    (state, error, state, state, t, t, self._seq(db), _log_text(log_),
                     experiment, trial_id))
                if isinstance(worker, str):
                    self._mark_lapse(db, worker, lapse_event(experiment, trial_id, attempt,
                                                             state, t))
            return [t for e, i, *_ in rows if (t := self.get_trial(e, i)) is not None]

    def cancel(self, experiment: str, trial_ids: Iterable[int] | None = None) -> int:
        where, args = "experiment = ? AND state IN (?, ?)", [experiment, QUEUED, RUNNING]
        if trial_ids is not None:
            ids = list(trial_ids)
            where += f" AND trial_id IN ({', '.join('?' for _ in ids)})"
            args += ids
        with self._write() as db:
            t = clock()
            running = db.execute(f"SELECT experiment, trial_id, attempt, attempts FROM trials "
                                 f"WHERE {where} AND state = ?", (*args, RUNNING)).fetchall()
            cur = db.execute(f"UPDATE trials SET state = ?, lease_expires = NULL, "
                             f"finished_at = ?, updated_at = ?, seq = ? WHERE {where}",
                             (CANCELLED, t, t, self._seq(db), *args))
            for experiment_, trial_id, attempt, text in running:
                log_ = closed(_loaded(text, list), attempt, attempts_log.CANCELLED, t)
                db.execute("UPDATE trials SET attempts = COALESCE(?, attempts) WHERE "
                           "experiment = ? AND trial_id = ?",
                           (_log_text(log_), experiment_, trial_id))
            return cur.rowcount

    # --- the workers record -------------------------------------------------------------------
    def record_worker(self, worker: str, status: str, trial: Mapping[str, Any] | None = None,
                      event: Mapping[str, Any] | None = None,
                      facts: WorkerFacts | None = None) -> None:
        event = checked_write(worker, status, trial, event)
        with self._write() as db:
            t = clock()
            doc = updated(self._worker_doc(db, worker), worker, status, t, trial, facts, event)
            db.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?)",
                       (worker, t, strict_json(doc)))

    @staticmethod
    def _worker_doc(db: sqlite3.Connection, worker: str) -> dict[str, Any] | None:
        """The worker's stored record as a mapping (None: none, or one that is not even a
        mapping, which the next write replaces)."""
        row = db.execute("SELECT doc FROM workers WHERE worker = ?", (worker,)).fetchone()
        found = None if row is None else _loaded(row[0], dict)
        return found or None

    def _mark_lapse(self, db: sqlite3.Connection, worker: str, event: Mapping[str, Any]
                    ) -> None:
        """Inside ``requeue_expired``'s transaction: the lapse on the worker's record, if it
        has one."""
        doc = self._worker_doc(db, worker)
        if doc is not None:
            db.execute("UPDATE workers SET doc = ? WHERE worker = ?",
                       (strict_json(logged(doc, event, lapsed=True)), worker))

    def workers(self) -> list[WorkerRecord]:
        with self._snapshot() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'workers'").fetchone() is None:
                return []  # a store from before workers were recorded, opened read-only
            rows = db.execute("SELECT worker, doc FROM workers ORDER BY last_seen DESC, "
                              "worker").fetchall()
        return read_each(rows, lambda row: decode_worker(row[1], row[0], text=True), self.url)

    def get_trial(self, experiment: str, trial_id: int) -> Trial | None:
        found = self._select("experiment = ? AND trial_id = ?", (experiment, trial_id))
        return found[0] if found else None

    def trials(self, experiment: str, states: Iterable[str] | None = None) -> list[Trial]:
        where, args = "experiment = ?", [experiment]
        if states is not None:
            states = list(states)
            where += f" AND state IN ({', '.join('?' for _ in states)})"
            args += states
        return self._select(where, args, "ORDER BY trial_id")

    def changes(self, experiment: str, after: int) -> tuple[list[HistoryEntry], int]:
        # One snapshot: it holds every write numbered up to the counter it shows (numbers are
        # taken inside the serialised write transactions). From 0: every trial, a store's from
        # before numbering (seq 0) included.
        after = check_cursor(after)
        with self._snapshot() as db:
            (counter,) = db.execute("SELECT value FROM sequence WHERE name = 'trials'").fetchone()
            rows = db.execute(f"SELECT {', '.join(_HISTORY_COLUMNS)} FROM trials WHERE "
                              "experiment = ? AND seq > ? ORDER BY trial_id",
                              (experiment, after or -1)).fetchall()
        entries = read_each(
            ({"experiment": experiment, **dict(zip(_HISTORY_COLUMNS, r, strict=True))}
             for r in rows), lambda data: decode_entry(data, _JSON_FIELDS), self.url)
        return entries, max(after, counter)

    def reference_runs(self, key: str) -> list[Trial]:
        return self._select("reference_key = ?", (key,), "ORDER BY experiment, trial_id")

    def query_kinds(self, experiments: Sequence[str], fields: Sequence[str]
                    ) -> dict[str, frozenset[str]]:
        from localrules.store.query.to_sql import KIND_OF_JSON_TYPE, kinds_sql

        if not fields:
            return {}
        sql, args = kinds_sql(fields, len(experiments))
        (row,) = self._read(sql, [*args, *experiments])
        out = {}
        for field, joined in zip(fields, row, strict=True):
            if joined is not None:  # some trial holds it (a scalar, null, object or list)
                out[field] = frozenset(KIND_OF_JSON_TYPE[t] for t in joined.split(",")
                                       if t in KIND_OF_JSON_TYPE)
        return out

    def query_fields(self, experiments: Sequence[str]) -> list[str]:
        from localrules.store.query.to_sql import fields_sql

        rows = self._read(fields_sql(len(experiments)), [*experiments, *experiments])
        return sorted(row[0] for row in rows)

    def query_trials(self, experiment: str, where: Any, order: Any = None,
                     limit: int | None = None, offset: int = 0) -> list[Trial]:
        from localrules.store.query.to_sql import order_sql, present_sql, to_sql

        clause, args = to_sql(where)
        tail, tail_args = "ORDER BY trial_id", []
        if order is not None:
            terms, tail_args = order_sql(order.field, order.descending)
            tail = f"ORDER BY {terms}, trial_id"
            present = present_sql(where, order.field)
            clause = clause if present is None else f"{present} AND {clause}"
        if limit is not None or offset:
            tail += f" LIMIT {-1 if limit is None else int(limit)} OFFSET {int(offset)}"
        return self._select(f"experiment = ? AND {clause}", [experiment, *args, *tail_args],
                            tail)

    def query_count(self, experiment: str, where: Any) -> int:
        from localrules.store.query.to_sql import to_sql

        clause, args = to_sql(where)
        rows = self._read(f"SELECT COUNT(*) FROM trials WHERE experiment = ? AND {clause}",
                          [experiment, *args])
        return int(rows[0][0])

    def counts(self, experiment: str) -> dict[str, int]:
        rows = self._read("SELECT state, COUNT(*) FROM trials WHERE experiment = ? "
                          "GROUP BY state", (experiment,))
        return {s: 0 for s in STATES} | {state: n for state, n in rows}

    # --- the controller lock ------------------------------------------------------------------
    def take_lock(self, name: str, owner: str, lease_seconds: float,
                  replacing: str | None = None, now: float | None = None) -> LockState:
        # One write transaction: read the holder, then renew, take or leave it. The generation
        # lives in its own table, so it survives a release (which deletes the lock's row).
        if not owner:
            raise ValueError("a lock owner must be a non-empty string")
        with self._write() as db:
            t = clock() if now is None else now
            row = db.execute("SELECT owner, expires FROM locks WHERE name = ?", (name,)).fetchone()
            found = db.execute("SELECT generation FROM lock_generations WHERE name = ?",
                               (name,)).fetchone()
            generation = 0 if found is None else found[0]
            if row is not None and row[0] != owner and row[1] > t and row[0] != replacing:
                return LockState(name, row[0], row[1], generation)
            if row is None or row[0] != owner:  # a new holder: the next generation
                generation += 1
                db.execute("INSERT OR REPLACE INTO lock_generations VALUES (?, ?)",
                           (name, generation))
            db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?)",
                       (name, owner, t + lease_seconds))
        return LockState(name, owner, t + lease_seconds, generation)

    def lock_state(self, name: str) -> LockState | None:
        with self._snapshot() as db:
            row = db.execute("SELECT owner, expires FROM locks WHERE name = ?", (name,)).fetchone()
            found = db.execute("SELECT generation FROM lock_generations WHERE name = ?",
                               (name,)).fetchone()
        if row is None and found is None:
            return None
        return LockState(name, "" if row is None else row[0], 0.0 if row is None else row[1],
                         0 if found is None else found[0])

    def release_lock(self, name: str, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

    def close(self) -> None:
        with self._lock:
            self._db.close()


_AWAY = ("locked", "busy", "unable to open", "disk i/o")
"""sqlite3.OperationalError messages of a database that is away for now (worth a retry)."""


def _store_error(url: str, err: sqlite3.OperationalError) -> StoreError:
    """The StoreError an OperationalError is: StoreUnavailable when the database is away for
    now (locked by another process, its file unreadable), else a plain StoreError."""
    kind = StoreUnavailable if any(w in str(err).lower() for w in _AWAY) else StoreError
    return kind(f"{url}: {err}")


def _loaded(text: Any, kind: type) -> Any:
    """A JSON column's value read to be rewritten: of ``kind``, or an empty one when the text
    is not (a tampered log is started afresh; a reader of the document refuses it meanwhile)."""
    try:
        value = loads(text, "log")
    except (ValueError, RecursionError):
        return kind()
    return value if isinstance(value, kind) else kind()


def _log_text(value: Any) -> str | None:
    """A rewritten curve or log as JSON text; None when a tampered entry it carries over is no
    strict JSON (then it is left as it is: the transition is made all the same)."""
    try:
        return strict_json(value)
    except ValueError:
        return None


class _Newer(Exception):
    """The file holds a schema newer than this localrules (raised to roll the opening back)."""

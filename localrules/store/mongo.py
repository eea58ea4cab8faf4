"""The MongoDB trial store: one database shared by a controller and any number of workers.

Same contract as SQLite (``tests/test_store_contract.py``). Atomicity comes from single-document
operations: a reservation is one ``find_one_and_update`` on the oldest queued trial, every worker
write is an ``update_one`` whose filter names the attempt it holds (the fencing token), trial ids
come from an ``$inc`` on the experiment document, the controller lock is a conditional upsert.
Trials are keyed ``experiment:trial_id`` (``_id``) with a unique (experiment, trial_id) index
besides, and indexes on the queue order and on lease expiry. Every document carries the schema
version. Credentials come from the URL (or the driver's environment) and never appear in messages.

Leases are timed by the clocks of the processes that write them, as with SQLite; keep the
machines' clocks synchronised (NTP), as any lease-based system needs.

Change numbers (``TrialStore.changes``). A write to a trial is three operations: the write itself,
which also marks the trial as being written (``seq_pending``: a token of this write); then the
next number from the counter document (``meta`` ``seq``, ``$inc``); then the stamp, which sets
``seq`` to it and clears the mark where the mark is still this write's (a later write's mark is
that write's to clear, with a higher number). ``changes`` reads the counter, then returns the
trials numbered above the cursor and every marked one, and hands back the counter it read as the
next cursor. No change is missed: take a change that lands at time T, and the first query whose
counter read comes after T. Its cursor is a counter read before T. When it reaches the trial, the
trial is either still marked (returned), or stamped with a number taken after T, above any
counter read before T (returned). The cursor is the counter read before the query, not the
highest number seen: a number seen may be the stamp of a write that landed while the query ran,
after the query had passed a trial whose own, smaller number was stamped later still. A writer
that dies between its operations leaves its mark: the trial comes with every ``changes`` until
its next write, which costs one entry read again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from localrules.store import attempts as attempts_log
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
    read_each,
    trial_name,
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
from localrules.store.mongo_logs import appended_attempt, closed_attempt, literal
from localrules.store.urls import redact, scrub, url_secrets
from localrules.store.workers import (
    COUNTED,
    COUNTS,
    MAX_EVENTS,
    WorkerFacts,
    WorkerRecord,
    checked_write,
    lapse_event,
)
from localrules.validation import ParameterError

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "localrules"
_COUNTABLE = {"$type": "number", "$not": {"$type": "array"}, "$gte": 0, "$lt": 2**53}
"""A trial's ``attempt`` a reservation can ``$inc``: a number, not an array holding one."""
T = TypeVar("T")


def _key(experiment: str, trial_id: int) -> str:
    return f"{experiment}:{trial_id}"


def _marked(update: Mapping[str, Any], token: str) -> dict[str, Any]:
    """``update`` that also marks the trials it writes as being written by ``token``."""
    return {**update, "$set": {**update.get("$set", {}), "seq_pending": token}}


def _token() -> str:
    return uuid.uuid4().hex


def _writes(method: Callable[..., T]) -> Callable[..., T]:
    """A method that writes: refused on a store opened read-only."""
    @functools.wraps(method)
    def wrapper(self: MongoStore, *args: Any, **kwargs: Any) -> T:
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        return method(self, *args, **kwargs)
    return wrapper


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Driver errors (server unreachable, timeouts, refused commands) as StoreError, with the
    URL's password removed."""
    @functools.wraps(method)
    def wrapper(self: MongoStore, *args: Any, **kwargs: Any) -> T:
        from pymongo.errors import ConnectionFailure, PyMongoError

        try:
            return method(self, *args, **kwargs)
        except ConnectionFailure as err:  # AutoReconnect, ServerSelectionTimeoutError, ...
            raise StoreUnavailable(f"{self.url}: {self._scrub(str(err))}") from None
        except PyMongoError as err:
            raise StoreError(f"{self.url}: {self._scrub(str(err))}") from None

    return wrapper


class MongoStore(TrialStore):
    """A trial store in a MongoDB database (``mongodb://`` or ``mongodb+srv://`` URL)."""

    def __init__(self, url: str, timeout_seconds: float = 10.0, read_only: bool = False) -> None:
        try:
            import pymongo
            from pymongo import uri_parser
        except ImportError:  # pragma: no cover - pymongo is a dependency
            raise ValueError("the MongoDB store needs pymongo: pip install pymongo") from None
        self.url = redact(url)
        self._secrets = url_secrets(url)
        try:
            parsed = uri_parser.parse_uri(url)
        except Exception as err:  # the driver's own URL errors
            raise ValueError(f"malformed MongoDB URL {self.url!r}: "
                             f"{self._scrub(str(err))}") from None
        if parsed.get("password"):
            self._secrets |= url_secrets(f"x://u:{parsed['password']}@h")
        database = parsed.get("database") or DEFAULT_DATABASE
        # Timeouts bound how long a command waits for a server that is away; the URL's own
        # (e.g. ?serverSelectionTimeoutMS=500) win over these defaults.
        ms = int(timeout_seconds * 1000)
        given = {k.lower() for k in parsed.get("options", {})}
        timeouts = {k: v for k, v in {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms,
                                      "socketTimeoutMS": 2 * ms}.items()
                    if k.lower() not in given}
        try:
            self._client = pymongo.MongoClient(url, tz_aware=True, **timeouts)
        except Exception as err:  # the driver's option checks (ConfigurationError, ...)
            raise ValueError(f"malformed MongoDB URL {self.url!r}: "
                             f"{self._scrub(str(err))}") from None
        db = self._client[database]
        self._experiments = db["experiments"]
        self._trials = db["trials"]
        self._locks = db["locks"]
        self._meta = db["meta"]
        self._workers = db["workers"]
        self.read_only = read_only
        if read_only:
            self._check_read_only()
        else:
            self._prepare()

    @_guarded
    def _check_read_only(self) -> None:
        """For readers: no index created, nothing upgraded or written; a database holding a
        localrules store (of this schema version or an older one) only."""
        schema = self._meta.find_one({"_id": "schema"})
        identity = self._meta.find_one({"_id": "identity"})
        if schema is None or identity is None:  # as a missing SQLite file: nothing to read yet
            self._client.close()
            raise ParameterError("url", f"no localrules store in {self.url} (run a search "
                                        "first or give the right database URL)")
        if schema["version"] > SCHEMA_VERSION:
            self._client.close()
            raise StoreError(f"{self.url} has schema version {schema['version']}; this "
                             f"localrules understands up to {SCHEMA_VERSION}: upgrade localrules")
        # An older store's documents read as they are (unnumbered trials come with every read).
        self.identity = identity["value"]

    def _scrub(self, text: str) -> str:
        """A driver message with the URL's secrets (in any form) masked."""
        return scrub(text, self._secrets)

    @_guarded
    def _prepare(self) -> None:
        from pymongo import ASCENDING

        self._trials.create_index([("experiment", ASCENDING), ("trial_id", ASCENDING)],
                                  unique=True, name="experiment_trial_id")
        self._trials.create_index([("state", ASCENDING), ("created_at", ASCENDING),
                                   ("trial_id", ASCENDING)], name="queue")
        self._trials.create_index([("state", ASCENDING), ("lease_expires", ASCENDING)],
                                  name="lease")
        self._trials.create_index([("experiment", ASCENDING), ("state", ASCENDING)],
                                  name="experiment_state")
        self._trials.create_index([("reference.key", ASCENDING)], name="reference_key",
                                  sparse=True)
        self._trials.create_index([("experiment", ASCENDING), ("seq", ASCENDING)],
                                  name="changes")
        self._trials.create_index([("seq_pending", ASCENDING)], name="seq_pending", sparse=True)
        self._workers.create_index([("last_seen", ASCENDING)], name="last_seen")
        # A top-N of one experiment by a score read in index order (store.query)
        for score in ("objective", "top1"):
            self._trials.create_index([("experiment", ASCENDING), (f"result.{score}", ASCENDING)],
                                      name=f"experiment_{score}")
        # From 1: a cursor (the counter as read) is never 0, which reads everything.
        self._meta.update_one({"_id": "seq"}, {"$setOnInsert": {"value": 1}}, upsert=True)
        # Marked with this version (an older localrules would write unnumbered); a newer one
        # stays and is refused below.
        self._meta.update_one({"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}},
                              upsert=True)
        self._meta.update_one({"_id": "identity"},
                              {"$setOnInsert": {"value": uuid.uuid4().hex}}, upsert=True)
        self.identity = self._meta.find_one({"_id": "identity"})["value"]
        version = self._meta.find_one({"_id": "schema"})["version"]
        if version > SCHEMA_VERSION:
            self._client.close()
            raise StoreError(f"{self.url} has schema version {version}; this localrules "
                             f"understands up to {SCHEMA_VERSION}: upgrade localrules")

    # --- documents ----------------------------------------------------------------------------
    @staticmethod
    def _trial(doc: Mapping[str, Any]) -> Trial:
        """The trial of a document (checked: plain JSON, known fields of the right types, keyed
        by its experiment and id); MalformedDocument naming it for anything wrong."""
        trial = decode_trial(doc)
        if doc.get("_id") != _key(trial.experiment, trial.trial_id):
            raise MalformedDocument(trial_name(doc), f"_id {doc.get('_id')!r:.60} does not "
                                                     "match its experiment and trial_id")
        return trial

    @staticmethod
    def _entry(doc: Mapping[str, Any]) -> HistoryEntry:
        """The history entry of a projected document, checked as ``_trial`` checks it."""
        entry = decode_entry(doc)
        if doc.get("_id") != _key(doc.get("experiment"), entry.trial_id):
            raise MalformedDocument(trial_name(doc), f"_id {doc.get('_id')!r:.60} does not "
                                                     "match its experiment and trial_id")
        return entry

    @staticmethod
    def _experiment(doc: Mapping[str, Any]) -> Experiment:
        return decode_experiment({k: v for k, v in doc.items()
                                  if k not in ("_id", "next_trial_id")})

    def _stamp(self, token: str) -> None:
        """Number the trials a write marked with ``token`` (the last of its three steps)."""
        from pymongo import ReturnDocument

        counter = self._meta.find_one_and_update({"_id": "seq"}, {"$inc": {"value": 1}},
                                                 return_document=ReturnDocument.AFTER)
        self._trials.update_many({"seq_pending": token},
                                 {"$set": {"seq": counter["value"]}, "$unset": {"seq_pending": ""}})

    def _fenced(self, experiment: str, trial_id: int, attempt: int,
                sets: Mapping[str, Any], late: bool = False,
                computed: Mapping[str, Any] | None = None) -> None:
        """Update a running trial only if ``attempt`` still holds it (with ``late``, also a
        trial requeued from that attempt and not reserved since); else LeaseLost. ``computed``:
        fields set by pipeline expressions (``store.mongo_logs``) in the same update."""
        states = [RUNNING, QUEUED] if late else [RUNNING]
        token = _token()
        if computed is None:
            update: Any = _marked({"$set": {**sets, "updated_at": clock()}}, token)
        else:
            update = [{"$set": {**{k: literal(v) for k, v in sets.items()}, **computed,
                                "updated_at": clock(), "seq_pending": token}}]
        done = self._trials.update_one(
            {"_id": _key(experiment, trial_id), "state": {"$in": states},
             "attempt": {"$eq": attempt, "$gte": 1}}, update)
        if done.matched_count == 1:
            self._stamp(token)
            return
        doc = self._trials.find_one({"_id": _key(experiment, trial_id)},
                                    {"state": 1, "attempt": 1})
        if doc is None:
            raise TrialNotFound(f"no trial {trial_id} in experiment {experiment!r}")
        raise LeaseLost(f"trial {trial_id} of {experiment!r} is no longer held by attempt "
                        f"{attempt} (state {doc.get('state')}, attempt {doc.get('attempt')})")

    # --- experiments --------------------------------------------------------------------------
    @_guarded
    @_writes
    def create_experiment(self, experiment: Experiment) -> Experiment:
        from pymongo.errors import DuplicateKeyError

        # A concurrent upsert may win (DuplicateKeyError): then theirs is the stored one.
        with contextlib.suppress(DuplicateKeyError):
            self._experiments.update_one(
                {"_id": experiment.name},
                {"$setOnInsert": {**experiment.to_dict(), "next_trial_id": 0}}, upsert=True)
        return self._experiment(self._experiments.find_one({"_id": experiment.name}))

    @_guarded
    def get_experiment(self, name: str) -> Experiment | None:
        doc = self._experiments.find_one({"_id": name})
        return None if doc is None else self._experiment(doc)

    @_guarded
    def list_experiments(self) -> list[Experiment]:
        return read_each(self._experiments.find().sort("_id", 1), self._experiment, self.url)

    @_guarded
    @_writes
    def update_settings(self, name: str, settings: Mapping[str, Any],
                        fence: LockState | None = None) -> Experiment:
        from pymongo import ReturnDocument

        self._check_fence(fence)
        doc = self._experiments.find_one_and_update(
            {"_id": name}, {"$set": {f"settings.{k}": v for k, v in settings.items()}},
            return_document=ReturnDocument.AFTER)
        if doc is None:
            raise ExperimentNotFound(f"no experiment {name!r} in {self.url}")
        self._check_fence(fence)  # the settings are written; the caller learns it was fenced
        return self._experiment(doc)

    # --- creating trials ----------------------------------------------------------------------
    @_guarded
    @_writes
    def allocate_trial_ids(self, experiment: str, n: int) -> list[int]:
        from pymongo import ReturnDocument

        if n < 0:
            raise ValueError(f"cannot allocate {n} trial ids")
        # The counter after the increment, minus n: the post-image is what the update itself
        # wrote (a pre-image read under concurrency was seen to repeat values on SecantusDB).
        doc = self._experiments.find_one_and_update(
            {"_id": experiment}, {"$inc": {"next_trial_id": n}},
            return_document=ReturnDocument.AFTER)
        if doc is None:
            raise ExperimentNotFound(f"no experiment {experiment!r} in {self.url}")
        first = doc["next_trial_id"] - n
        return list(range(first, first + n))

    @_guarded
    @_writes
    def add_trials(self, trials: Sequence[Trial], fence: LockState | None = None) -> None:
        from pymongo.errors import BulkWriteError

        if not trials:
            return
        for t in trials:
            Trial.from_dict(t.to_dict())  # the checks a stored document will face
        names = sorted({t.experiment for t in trials})
        known = {d["_id"] for d in self._experiments.find({"_id": {"$in": names}}, {"_id": 1})}
        missing = [n for n in names if n not in known]
        if missing:
            raise ExperimentNotFound(f"no experiment {', '.join(missing)} in {self.url}")
        keys = [_key(t.experiment, t.trial_id) for t in trials]
        if len(set(keys)) != len(keys):
            raise TrialExists("a trial id is repeated in the batch")
        taken = [d["_id"] for d in self._trials.find({"_id": {"$in": keys}}, {"_id": 1})]
        if taken:
            raise TrialExists(f"trial ids already taken: {', '.join(sorted(taken))}")
        token = _token()
        docs = [{"_id": k, **t.to_dict(), "seq_pending": token}
                for k, t in zip(keys, trials, strict=True)]
        for doc in docs:
            strict_json(doc)
        self._check_fence(fence)
        try:
            self._trials.insert_many(docs, ordered=True)
            self._stamp(token)
        except BulkWriteError as err:  # a concurrent insert took an id: undo ours
            inserted = err.details.get("nInserted", 0)
            if inserted:
                self._trials.delete_many({"_id": {"$in": keys[:inserted]}})
            raise TrialExists(f"a trial id was taken concurrently: "
                              f"{redact(str(err.details.get('writeErrors', ''))[:300])}"
                              ) from None
        if fence is not None and not self._fence_holds(fence):
            # The lock passed on while inserting: withdraw what no worker has taken yet
            # (cancelled trials are not counted as created by the next controller's history).
            t, undo = clock(), _token()
            self._trials.update_many({"_id": {"$in": keys}, "state": QUEUED}, _marked(
                {"$set": {"state": CANCELLED, "finished_at": t, "updated_at": t,
                          "error": "queued by a controller that had lost its lock"}}, undo))
            self._stamp(undo)
            self._check_fence(fence)

    # --- the worker's side --------------------------------------------------------------------
    @_guarded
    @_writes
    def reserve(
        self, worker: str, lease_seconds: float, experiments: Sequence[str] | None = None
    ) -> Trial | None:
        from pymongo import ReturnDocument

        # Documents of a newer schema wait for a newer worker (a rolling upgrade).
        queued: dict[str, Any] = {"state": QUEUED, "schema_version": {"$lte": SCHEMA_VERSION}}
        if experiments is not None:
            if not experiments:
                return None
            queued["experiment"] = {"$in": list(experiments)}
        # Only an attempt that $inc can count on (anything else would make the server refuse
        # the reservation, every time, and stop the queue); others are failed when it is empty.
        query = {**queued, "attempt": _COUNTABLE}
        while True:
            t, token = clock(), _token()
            doc = self._trials.find_one_and_update(
                query,
                [{"$set": {"state": RUNNING, "worker": literal(worker),
                           "lease_expires": t + lease_seconds, "started_at": t,
                           "updated_at": t, "attempt": {"$add": ["$attempt", 1]},
                           "attempts": appended_attempt(worker, t), "seq_pending": token}}],
                sort=[("created_at", 1), ("trial_id", 1)],
                return_document=ReturnDocument.AFTER)
            if doc is None:
                self._fail_uncountable(queued)
                return None
            self._stamp(token)
            try:
                return self._trial(doc)
            except MalformedDocument as err:  # fail it, never hand it out
                log.warning("%s: %s failed, never run: malformed document: %s", self.url,
                            err.what, err.reason)
                self._trials.update_one({"_id": doc["_id"]}, _marked({"$set": {
                    "state": FAILED, "error": f"malformed trial document: {err.reason}",
                    "lease_expires": None, "finished_at": t}}, token))
                self._stamp(token)

    def _fail_uncountable(self, queued: Mapping[str, Any]) -> None:
        """Fail the queued trials whose attempt is no count (a tampered document), which
        ``reserve`` leaves alone: they are never run, and never wait for ever."""
        token = _token()
        done = self._trials.update_many(
            {**queued, "$nor": [{"attempt": _COUNTABLE}]},
            _marked({"$set": {"state": FAILED, "lease_expires": None, "finished_at": clock(),
                              "error": "malformed trial document: its attempt is not a "
                                       "count"}}, token))
        if done.modified_count:
            log.warning("%s: %d queued trial(s) failed, never run: malformed document: the "
                        "attempt is not a count", self.url, done.modified_count)
            self._stamp(token)

    @_guarded
    @_writes
    def heartbeat(self, experiment: str, trial_id: int, attempt: int,
                  lease_seconds: float) -> None:
        self._fenced(experiment, trial_id, attempt, {"lease_expires": clock() + lease_seconds})

    @_guarded
    @_writes
    def report_progress(self, experiment: str, trial_id: int, attempt: int,
                        progress: Mapping[str, Any]) -> None:
        strict_json(progress)
        sets = {"progress": dict(progress)}
        entry = curve_entry(progress, attempt, clock())
        if entry is not None:  # by epoch: a re-run epoch overwrites its entry
            sets[f"curve.{entry[0]}"] = entry[1]
        self._fenced(experiment, trial_id, attempt, sets)

    @_guarded
    @_writes
    def complete(self, experiment: str, trial_id: int, attempt: int,
                 result: Mapping[str, Any]) -> None:
        strict_json(result)
        t = clock()
        self._fenced(experiment, trial_id, attempt, {
            "state": DONE, "result": dict(result), "lease_expires": None, "finished_at": t},
            late=True, computed={"attempts": closed_attempt(attempt, attempts_log.DONE, t,
                                                            late=True)})

    @_guarded
    @_writes
    def fail(self, experiment: str, trial_id: int, attempt: int, error: str) -> None:
        t = clock()
        self._fenced(experiment, trial_id, attempt, {
            "state": FAILED, "error": str(error), "lease_expires": None, "finished_at": t},
            late=True, computed={"attempts": closed_attempt(attempt, attempts_log.FAILED, t,
                                                            str(error), late=True)})

    @_guarded
    @_writes
    def release(self, experiment: str, trial_id: int, attempt: int) -> None:
        self._fenced(experiment, trial_id, attempt,
                     {"state": QUEUED, "worker": None, "lease_expires": None},
                     computed={"attempts": closed_attempt(attempt, attempts_log.RELEASED,
                                                          clock())})

    # --- any process --------------------------------------------------------------------------
    @_guarded
    @_writes
    def requeue_expired(self, max_attempts: int, now: float | None = None,
                        fence: LockState | None = None) -> list[Trial]:
        # Each requeue is conditional on the trial itself (same attempt, still expired), so a
        # controller fenced out between the check and a write requeues only what is due.
        self._check_fence(fence)
        t, token = clock() if now is None else now, _token()
        changed = []
        for doc in self._trials.find({"state": RUNNING, "lease_expires": {"$lt": t}},
                                     {"attempt": 1, "lapses": 1, "worker": 1, "experiment": 1,
                                      "trial_id": 1}):
            lapses = doc.get("lapses", 0)
            state, error = requeue_outcome((lapses if isinstance(lapses, int) else 0) + 1,
                                           max_attempts)
            sets: dict[str, Any] = {"state": state, "error": error, "lease_expires": None,
                                    "updated_at": t}
            sets.update({"finished_at": t} if state == FAILED else {"worker": None})
            # Only if nobody renewed or finished it meanwhile (same attempt, still expired).
            # A pipeline: ``$lapses`` + 1 as ``$inc`` would (a missing count is 0).
            done = self._trials.update_one(
                {"_id": doc["_id"], "state": RUNNING, "attempt": doc.get("attempt"),
                 "lease_expires": {"$lt": t}},
                [{"$set": {**{k: literal(v) for k, v in sets.items()},
                           "lapses": {"$add": [{"$ifNull": ["$lapses", 0]}, 1]},
                           "attempts": closed_attempt(literal(doc.get("attempt")),
                                                      attempts_log.LAPSED, t, error),
                           "seq_pending": token}}])
            if done.modified_count:
                changed.append(doc["_id"])
                if isinstance(doc.get("worker"), str):  # one more update: the worker's record
                    self._workers.update_one({"_id": doc["worker"]}, {
                        "$push": {"events": {"$each": [lapse_event(
                            str(doc.get("experiment")), doc.get("trial_id"),
                            doc.get("attempt"), state, t)], "$slice": -MAX_EVENTS}},
                        "$inc": {"counts.lapsed": 1}})
        if changed:
            self._stamp(token)
        return self._parsed(self._trials.find({"_id": {"$in": changed}}).sort("trial_id", 1))

    def _parsed(self, docs: Iterable[Mapping[str, Any]]) -> list[Trial]:
        """Trials from documents, malformed ones skipped with a warning naming them, so one bad
        document never stops a controller or a query."""
        return read_each(docs, self._trial, self.url)

    @_guarded
    @_writes
    def promote(self, experiment: str, trial_id: int, attempt: int,
                fidelity: Mapping[str, Any], fence: LockState | None = None) -> bool:
        # Conditional on the trial itself (done, same attempt), so it is made at most once
        # whoever makes it; a controller fenced out just after the check promotes only what
        # its successor would (promotions follow from the trial documents alone).
        check_fidelity(fidelity)
        strict_json(dict(fidelity))
        self._check_fence(fence)
        token = _token()
        done = self._trials.update_one(
            {"_id": _key(experiment, trial_id), "state": DONE, "attempt": {"$eq": attempt},
             "fidelity.rung": {"$eq": fidelity["rung"] - 1}},
            _marked({"$set": {"state": QUEUED, "fidelity": dict(fidelity), "worker": None,
                              "lease_expires": None, "finished_at": None,
                              "updated_at": clock()}}, token))
        if done.modified_count:
            self._stamp(token)
        return bool(done.modified_count)

    @_guarded
    @_writes
    def cancel(self, experiment: str, trial_ids: Iterable[int] | None = None) -> int:
        query: dict[str, Any] = {"experiment": experiment, "state": {"$in": [QUEUED, RUNNING]}}
        if trial_ids is not None:
            query["trial_id"] = {"$in": list(trial_ids)}
        t, token = clock(), _token()
        done = self._trials.update_many(query, [{"$set": {
            "state": CANCELLED, "lease_expires": None, "finished_at": t, "updated_at": t,
            "seq_pending": token, "attempts": closed_attempt(
                "$attempt", attempts_log.CANCELLED, t, only_running_trial=True)}}])
        if done.modified_count:
            self._stamp(token)
        return done.modified_count

    # --- the workers record -------------------------------------------------------------------
    @_guarded
    @_writes
    def record_worker(self, worker: str, status: str, trial: Mapping[str, Any] | None = None,
                      event: Mapping[str, Any] | None = None,
                      facts: WorkerFacts | None = None) -> None:
        # One upsert: fields set, facts kept unless given, the event pushed (latest kept) and
        # counted by $inc (every count, by 0 or 1, so a new record has them all).
        event = checked_write(worker, status, trial, event)
        sets = {"last_seen": clock(), "status": status,
                "trial": None if trial is None else dict(trial),
                "schema_version": SCHEMA_VERSION, **({} if facts is None else facts.to_dict())}
        counted = None if event is None else COUNTED.get(event["kind"])
        update = {
            "$set": sets,
            "$setOnInsert": {"worker": worker, **{k: None for k in (
                "host", "pid", "started_at", "experiments", "code_version") if k not in sets}},
            "$push": {"events": {"$each": [] if event is None else [event],
                                 "$slice": -MAX_EVENTS}},
            "$inc": {f"counts.{name}": int(name == counted) for name in COUNTS},
        }
        strict_json(update)
        self._workers.update_one({"_id": worker}, update, upsert=True)

    @_guarded
    def workers(self) -> list[WorkerRecord]:
        docs = self._workers.find().sort([("last_seen", -1), ("_id", 1)])
        return read_each(docs, lambda doc: decode_worker(doc, doc.get("_id")), self.url)

    @_guarded
    def get_trial(self, experiment: str, trial_id: int) -> Trial | None:
        found = self._parsed(self._trials.find({"_id": _key(experiment, trial_id)}).limit(1))
        return found[0] if found else None

    @_guarded
    def trials(self, experiment: str, states: Iterable[str] | None = None) -> list[Trial]:
        query: dict[str, Any] = {"experiment": experiment}
        if states is not None:
            query["state"] = {"$in": list(states)}
        return self._parsed(self._trials.find(query).sort("trial_id", 1))

    @_guarded
    def changes(self, experiment: str, after: int) -> tuple[list[HistoryEntry], int]:
        after = check_cursor(after)
        # Before the query (see above); a store from before numbering, read-only, has none.
        counter = (self._meta.find_one({"_id": "seq"}) or {"value": 1})["value"]
        query: dict[str, Any] = {"experiment": experiment}
        if after:  # from 0: every trial, unnumbered ones from before numbering included
            query["$or"] = [{"seq": {"$gt": after}}, {"seq_pending": {"$exists": True}}]
        cursor = self._trials.find(query, {"experiment": 1, "trial_id": 1, "state": 1,
                                           "misc": 1, "result": 1, "reference": 1,
                                           "seq": 1, "fidelity": 1, "attempt": 1}
                                   ).sort("trial_id", 1)
        return read_each(cursor, self._entry, self.url), max(after, counter)

    @_guarded
    def query_kinds(self, experiments: Sequence[str], fields: Sequence[str]
                    ) -> dict[str, frozenset[str]]:
        from localrules.store.query.to_mongo import KIND_OF_BSON_TYPE, kinds_pipeline

        found = next(self._trials.aggregate(kinds_pipeline(list(experiments), list(fields))),
                     {})
        out = {}
        for i, field in enumerate(fields):
            types = set(found.get(f"f{i}", ())) - {"missing"}  # null: held, no scalar
            if types:
                out[field] = frozenset(KIND_OF_BSON_TYPE[t] for t in types
                                       if t in KIND_OF_BSON_TYPE)
        return out

    @_guarded
    def query_fields(self, experiments: Sequence[str]) -> list[str]:
        from localrules.store.query.to_mongo import fields_pipeline

        return sorted(row["_id"] for row in self._trials.aggregate(
            fields_pipeline(list(experiments))))

    @_guarded
    def query_trials(self, experiment: str, where: Any, order: Any = None,
                     limit: int | None = None, offset: int = 0) -> list[Trial]:
        from localrules.store.query.to_mongo import sort_mongo, to_mongo

        cursor = self._trials.find({"$and": [{"experiment": experiment}, to_mongo(where)]})
        keys = [] if order is None else sort_mongo(order.field, order.descending)
        if not any(key == "trial_id" for key, _ in keys):  # a key twice: the last one wins
            keys.append(("trial_id", 1))
        cursor = cursor.sort(keys)
        if offset:
            cursor = cursor.skip(int(offset))
        if limit is not None:
            cursor = cursor.limit(int(limit))
        return self._parsed(cursor) if limit != 0 else []

    @_guarded
    def query_count(self, experiment: str, where: Any) -> int:
        from localrules.store.query.to_mongo import to_mongo

        return self._trials.count_documents({"$and": [{"experiment": experiment},
                                                      to_mongo(where)]})

    @_guarded
    def reference_runs(self, key: str) -> list[Trial]:
        return self._parsed(self._trials.find({"reference.key": key})
                            .sort([("experiment", 1), ("trial_id", 1)]))

    @_guarded
    def counts(self, experiment: str) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for row in self._trials.aggregate([{"$match": {"experiment": experiment}},
                                           {"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
            if row["_id"] in STATES:  # a tampered state is no state
                out[row["_id"]] = row["n"]
        return out

    # --- the controller lock ------------------------------------------------------------------
    @staticmethod
    def _lock(doc: Mapping[str, Any]) -> LockState:
        generation = doc.get("generation", 0)
        return LockState(doc["_id"], doc.get("owner") or "", float(doc.get("expires") or 0.0),
                         generation if isinstance(generation, int) else 0)

    @_guarded
    @_writes
    def take_lock(self, name: str, owner: str, lease_seconds: float,
                  replacing: str | None = None, now: float | None = None) -> LockState:
        # Two single-document operations, each atomic: a renewal (owner already holds it:
        # generation kept), else a take (expired, released, or held by ``replacing``:
        # generation + 1) as a conditional upsert, which fails on the unique _id while
        # someone else holds it.
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        if not owner:
            raise ValueError("a lock owner must be a non-empty string")
        t = clock() if now is None else now
        doc = self._locks.find_one_and_update(
            {"_id": name, "owner": owner}, {"$set": {"expires": t + lease_seconds}},
            return_document=ReturnDocument.AFTER)
        if doc is not None:
            return self._lock(doc)
        free: list[dict[str, Any]] = [{"expires": {"$lte": t}}]  # as SQLite: held while > t
        if replacing:
            free.append({"owner": replacing})
        try:
            doc = self._locks.find_one_and_update(
                {"_id": name, "$or": free},
                {"$set": {"owner": owner, "expires": t + lease_seconds,
                          "schema_version": SCHEMA_VERSION}, "$inc": {"generation": 1}},
                upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # the lock exists, held by someone else, not expired
            doc = None
        return self._lock(doc or self._locks.find_one({"_id": name})
                          or {"_id": name, "owner": "", "expires": 0.0})

    @_guarded
    def lock_state(self, name: str) -> LockState | None:
        doc = self._locks.find_one({"_id": name})
        return None if doc is None else self._lock(doc)

    @_guarded
    @_writes
    def release_lock(self, name: str, owner: str) -> None:
        # The document stays (released: no owner, expired) so its generation is kept.
        self._locks.update_one({"_id": name, "owner": owner},
                               {"$set": {"owner": "", "expires": 0.0}})

    def _fence_holds(self, fence: LockState) -> bool:
        return self._locks.find_one({"_id": fence.name, "owner": fence.owner,
                                     "generation": fence.generation}, {"_id": 1}) is not None

    def _check_fence(self, fence: LockState | None) -> None:
        """LockLost unless the fence's lock still has its owner and generation. MongoDB has
        no transaction here, so this is a check made right before a fenced write (and, for
        inserts and settings, right after it): a write can act on a lost lock only if the lock
        passed on inside that window, which needs the holder's lease to run out (it was
        renewed at the start of the round, ``lock_seconds`` before) or the holder to have been
        found dead (it is running this very check). A requeue is safe whoever makes it (each is
        conditional on the trial); trials inserted as the lock passed are cancelled again."""
        if fence is not None and not self._fence_holds(fence):
            current = self._locks.find_one({"_id": fence.name}) or {}
            raise LockLost(f"lock {fence.name!r} is no longer held by {fence.owner} "
                           f"(generation {fence.generation}); it is held by "
                           f"{current.get('owner') or 'nobody'} (generation "
                           f"{current.get('generation', 0)})")

    def close(self) -> None:
        self._client.close()

"""The workers record: one document per worker, written by the worker, readable by anyone.

A worker says who it is when it starts (``WorkerFacts``: host, pid, start, the experiments it
serves, its code version), then keeps its record fresh while it waits for work and while it
trains (``last_seen``, ``status``, the trial it holds), and logs what happens to it
(``events``, the latest ``MAX_EVENTS``, and ``counts`` of its completed, failed, released and
lapsed trials). ``TrialStore.requeue_expired`` marks the record of a worker whose lease lapsed
(a ``lease lost`` event and ``counts.lapsed`` + 1), whoever calls it, so a worker that died
still shows why its trial went back to the queue.

The record is informative: a worker never lets a failed write of it stop training (it logs the
failure and carries on), and nothing in the store's other documents depends on it. Readers (the
dashboard) get ``WorkerRecord``s, checked like trials are: a malformed record is refused.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IDLE, TRAINING, STOPPING, STOPPED = "idle", "training", "stopping", "stopped"
STATUSES = (IDLE, TRAINING, STOPPING, STOPPED)
STARTED, RESERVED, COMPLETED, FAILED, RELEASED, LEASE_LOST = (
    "started", "reserved", "completed", "failed", "released", "lease lost")
EVENT_KINDS = (STARTED, RESERVED, COMPLETED, FAILED, RELEASED, LEASE_LOST, STOPPED)
COUNTS = ("completed", "failed", "released", "lapsed")
COUNTED = {COMPLETED: "completed", FAILED: "failed", RELEASED: "released"}
"""The events a worker logs that bump its counts. ``counts.lapsed`` is bumped by the store
when ``requeue_expired`` takes a trial from the worker (the one judge of a lapse), not by the
worker's own ``lease lost`` event, which may follow it (or a cancellation, which is no lapse)."""
MAX_EVENTS = 50
"""The most events a record holds (the latest)."""
DETAIL_LIMIT = 500
"""An event's detail is cut to this many characters."""


@dataclass(frozen=True)
class WorkerFacts:
    """What a worker is, written once when it starts."""

    host: str
    pid: int
    started_at: float
    experiments: list[str] | None
    code_version: str

    @classmethod
    def here(cls, experiments: Sequence[str] | None = None) -> WorkerFacts:
        """This process's facts, now."""
        from localrules import __version__

        return cls(socket.gethostname(), os.getpid(), time.time(),
                   None if experiments is None else list(experiments), __version__)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def held_trial(experiment: str, trial_id: int, attempt: int,
               lease_expires: float | None) -> dict[str, Any]:
    """A record's ``trial``: what the worker holds."""
    return {"experiment": experiment, "trial_id": trial_id, "attempt": attempt,
            "lease_expires": lease_expires}


def worker_event(kind: str, experiment: str | None = None, trial_id: int | None = None,
                 attempt: int | None = None, detail: str | None = None,
                 at: float | None = None) -> dict[str, Any]:
    """An event for ``record_worker`` (``at``: now unless given); ValueError for an unknown
    kind."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown worker event {kind!r}; events are {', '.join(EVENT_KINDS)}")
    return {"at": time.time() if at is None else at, "kind": kind, "experiment": experiment,
            "trial_id": trial_id, "attempt": attempt,
            "detail": None if detail is None else str(detail)[:DETAIL_LIMIT]}


def check_status(status: object) -> str:
    if status not in STATUSES:
        raise ValueError(f"unknown worker status {status!r}; statuses are "
                         f"{', '.join(STATUSES)}")
    return status


def checked_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event as stored: its fields checked (ValueError), its detail cut."""
    if not isinstance(event, Mapping):
        raise ValueError(f"a worker event is a mapping, not a {type(event).__name__}")
    unknown = set(event) - {"at", "kind", "experiment", "trial_id", "attempt", "detail"}
    if unknown:
        raise ValueError(f"unknown worker event field(s): {', '.join(sorted(map(str, unknown)))}")
    return worker_event(**event)


def _is(value: object, *kinds: type) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


@dataclass(frozen=True)
class WorkerRecord:
    """One worker's record as the store keeps it (times are Unix seconds)."""

    worker: str
    last_seen: float
    status: str
    host: str | None = None
    pid: int | None = None
    started_at: float | None = None
    trial: Mapping[str, Any] | None = None
    """``{"experiment", "trial_id", "attempt", "lease_expires"}`` while it holds one."""
    experiments: list[str] | None = None
    """The experiments it serves (None: any)."""
    counts: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    events: list[Mapping[str, Any]] = field(default_factory=list)
    """``{"at", "kind", "experiment", "trial_id", "attempt", "detail"}``, newest last."""
    code_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerRecord:
        """A record from a stored document, checked (ValueError naming what is wrong)."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - names - {"_id", "schema_version"})
        if extra:
            raise ValueError(f"unknown worker record field(s): {', '.join(map(str, extra))}")
        checks = {
            "worker": _is(data.get("worker"), str),
            "last_seen": _is(data.get("last_seen"), int, float),
            "status": data.get("status") in STATUSES,
            "host": data.get("host") is None or _is(data.get("host"), str),
            "pid": data.get("pid") is None or _is(data.get("pid"), int),
            "started_at": data.get("started_at") is None or _is(data.get("started_at"),
                                                                 int, float),
            "trial": data.get("trial") is None or isinstance(data.get("trial"), Mapping),
            "experiments": data.get("experiments") is None or (
                isinstance(data.get("experiments"), list)
                and all(isinstance(e, str) for e in data["experiments"])),
            "counts": isinstance(data.get("counts", {}), Mapping) and all(
                _is(v, int) for v in data.get("counts", {}).values()),
            "events": isinstance(data.get("events", []), list) and all(
                isinstance(e, Mapping) and e.get("kind") in EVENT_KINDS
                and _is(e.get("at"), int, float) for e in data.get("events", [])),
            "code_version": data.get("code_version") is None or _is(data.get("code_version"),
                                                                     str),
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"worker record field(s) {', '.join(wrong)} malformed "
                             f"(worker {data.get('worker')!r:.100})")
        fields = {k: v for k, v in data.items() if k in names}
        fields["counts"] = {**dict.fromkeys(COUNTS, 0), **fields.get("counts", {})}
        return cls(**fields)


def checked_write(worker: object, status: object, trial: Mapping[str, Any] | None,
                  event: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The arguments of a ``record_worker`` write checked (ValueError naming what is wrong);
    the event as stored."""
    if not isinstance(worker, str) or not worker:
        raise ValueError(f"a worker id is a non-empty string, got {worker!r:.100}")
    check_status(status)
    if trial is not None and set(trial) != {"experiment", "trial_id", "attempt",
                                            "lease_expires"}:
        raise ValueError(f"a worker's trial is {{experiment, trial_id, attempt, "
                         f"lease_expires}}, got {dict(trial)!r:.200}")
    return None if event is None else checked_event(event)


def updated(record: Mapping[str, Any] | None, worker: str, status: str, at: float,
            trial: Mapping[str, Any] | None, facts: WorkerFacts | None,
            event: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored record (None: a new one) after a ``record_worker`` write: the backends that
    read-modify-write use it."""
    doc = WorkerRecord(worker, at, status).to_dict() if record is None else dict(record)
    doc.update(last_seen=at, status=status, trial=None if trial is None else dict(trial))
    if facts is not None:
        doc.update(facts.to_dict())
    return logged(doc, event)


def logged(record: Mapping[str, Any], event: Mapping[str, Any] | None,
           lapsed: bool = False) -> dict[str, Any]:
    """A stored record with ``event`` appended (the latest ``MAX_EVENTS`` kept) and counted
    (``lapsed``: a trial the store took back from the worker, ``counts.lapsed`` + 1)."""
    doc = dict(record)
    counts = {**dict.fromkeys(COUNTS, 0), **doc.get("counts", {})}
    counts["lapsed"] += int(lapsed)
    if event is not None:
        doc["events"] = [*doc.get("events", []), dict(event)][-MAX_EVENTS:]
        if event["kind"] in COUNTED:
            counts[COUNTED[event["kind"]]] += 1
    doc["counts"] = counts
    return doc


def lapse_event(experiment: str, trial_id: int, attempt: int, outcome: str,
                at: float) -> dict[str, Any]:
    """The event ``requeue_expired`` logs on the record of the worker whose lease lapsed."""
    return worker_event(LEASE_LOST, experiment, trial_id, attempt,
                        f"lease expired; the trial was {outcome} by the store", at)

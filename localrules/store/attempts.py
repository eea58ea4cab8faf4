"""A trial's attempts log, kept in its document (``Trial.attempts``): who ran each attempt,
when, and how it ended, so a reader sees a trial's history of reservations, hand-backs and
lapses from the database alone.

An entry is ``{"attempt", "worker", "started_at", "ended_at", "outcome", "error"}``, newest
last, the latest ``MAX_LOGGED_ATTEMPTS`` kept. ``reserve`` appends one, ``running``; the write
that ends the attempt closes it (matched by attempt number): ``complete`` → ``done``, ``fail``
→ ``failed``, ``release`` → ``released`` (a graceful hand-back), ``requeue_expired`` →
``lapsed`` (requeued or failed), ``cancel`` → ``cancelled``. A result delivered late, after
the lease lapsed and before anyone reserved the trial again (``TrialStore.complete``), turns the
``lapsed`` entry into ``done`` (or ``failed``) with ``"late": true``: the work counted, and the
lapse stays counted in the trial's ``lapses``. Only a ``running`` entry (or a ``lapsed`` one, by
a late final write) is ever closed, so an entry is closed once. The log is informative: writing
it never decides whether a transition is made (an entry missing, e.g. from a trial reserved
before logs were kept, is left missing). Standard library only.

Both backends implement ``closed`` (SQLite in Python inside its write transaction, MongoDB as an
update pipeline, ``store.mongo_logs``): the same rule twice, so the contract tests check both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_LOGGED_ATTEMPTS = 50
"""The most entries a trial's attempts log holds (the latest)."""
ERROR_LIMIT = 500
"""An entry's error text is cut to this many characters (the trial's ``error`` has it all)."""
RUNNING, DONE, FAILED, RELEASED, LAPSED, CANCELLED = (
    "running", "done", "failed", "released", "lapsed", "cancelled")
OUTCOMES = (RUNNING, DONE, FAILED, RELEASED, LAPSED, CANCELLED)


def short_error(error: str | None) -> str | None:
    """An entry's error: the text, cut to ``ERROR_LIMIT`` characters."""
    return None if error is None else str(error)[:ERROR_LIMIT]


def opened(attempt: int, worker: str, at: float) -> dict[str, Any]:
    """The entry ``reserve`` appends."""
    return {"attempt": attempt, "worker": worker, "started_at": at, "ended_at": None,
            "outcome": RUNNING, "error": None}


def appended(log: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``log`` with ``entry`` last, the latest ``MAX_LOGGED_ATTEMPTS`` kept (a tampered entry
    that is no mapping is carried over as it is, as MongoDB's pipeline does)."""
    return [*log, dict(entry)][-MAX_LOGGED_ATTEMPTS:]


def closed(log: Sequence[Mapping[str, Any]], attempt: int, outcome: str, at: float,
           error: str | None = None, late: bool = False) -> list[dict[str, Any]]:
    """``log`` with the running entry of ``attempt`` ended with ``outcome`` (with ``late``, a
    lapsed one too, marked ``late``); every other entry as it is."""
    out = []
    for entry in log:
        if not isinstance(entry, Mapping):  # tampered: carried over, as MongoDB's pipeline does
            out.append(entry)
            continue
        entry = dict(entry)
        if entry.get("attempt") == attempt and (
                entry.get("outcome") == RUNNING or (late and entry.get("outcome") == LAPSED)):
            if entry["outcome"] == LAPSED:
                entry["late"] = True
            entry.update(outcome=outcome, ended_at=at, error=short_error(error))
        out.append(entry)
    return out


def check_attempts(log: Sequence[Any]) -> None:
    """ValueError unless ``log`` is an attempts log: entries with an attempt number and a known
    outcome, worker and error text or null, times numbers or null."""
    for i, entry in enumerate(log):
        if not isinstance(entry, Mapping):
            raise ValueError(f"trial document field 'attempts' entry {i} is not a mapping")
        attempt = entry.get("attempt")
        times = (entry.get("started_at"), entry.get("ended_at"))
        if not (isinstance(attempt, int) and not isinstance(attempt, bool)
                and entry.get("outcome") in OUTCOMES
                and all(t is None or (isinstance(t, (int, float)) and not isinstance(t, bool))
                        for t in times)
                and all(entry.get(k) is None or isinstance(entry.get(k), str)
                        for k in ("worker", "error"))):
            raise ValueError(f"trial document field 'attempts' entry {i} is malformed: "
                             f"{dict(entry)!r:.200}")

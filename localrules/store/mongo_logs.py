"""The attempts log's rules (``store.attempts``) as MongoDB update-pipeline expressions, so that
a transition and its log entry are one atomic, fenced update of the trial's document.

In a pipeline stage every expression reads the document as it was before the update (so
``$attempt`` in ``reserve``'s stage is the attempt before its increment), and a string that
starts with ``$`` is a field path: every value from outside is wrapped in ``$literal``. A log
that is not an array (a tampered document) is read as empty, so it never makes a transition
fail; the reader refuses that document until then.
"""

from __future__ import annotations

from typing import Any

from localrules.store.attempts import (
    LAPSED,
    MAX_LOGGED_ATTEMPTS,
    RUNNING,
    opened,
    short_error,
)

_LOG: dict[str, Any] = {"$cond": [{"$isArray": "$attempts"}, "$attempts", []]}


def literal(value: Any) -> dict[str, Any]:
    """``value`` as a pipeline expression that is only itself."""
    return {"$literal": value}


def appended_attempt(worker: str, at: float) -> dict[str, Any]:
    """The log with the entry of the attempt a reservation starts (the stored attempt + 1)."""
    entry = {k: literal(v) for k, v in opened(0, worker, at).items()}
    entry["attempt"] = {"$add": ["$attempt", 1]}
    return {"$slice": [{"$concatArrays": [_LOG, [entry]]}, -MAX_LOGGED_ATTEMPTS]}


def closed_attempt(attempt: Any, outcome: str, at: float, error: str | None = None,
                   late: bool = False, only_running_trial: bool = False) -> dict[str, Any]:
    """The log with the running entry of ``attempt`` (an expression: a number, or
    ``"$attempt"``) ended with ``outcome`` (``late``: a lapsed one too, marked ``late``;
    ``only_running_trial``: only while the trial is running), as ``attempts.closed``."""
    ends = [RUNNING, LAPSED] if late else [RUNNING]
    match: list[Any] = [{"$eq": ["$$this.attempt", attempt]},
                        {"$in": ["$$this.outcome", literal(ends)]}]
    if only_running_trial:
        match.append({"$eq": ["$state", RUNNING]})
    end = {"outcome": literal(outcome), "ended_at": literal(at),
           "error": literal(short_error(error))}
    marks = [{"$cond": [{"$eq": ["$$this.outcome", LAPSED]}, literal({"late": True}),
                        literal({})]}] if late else []
    return {"$map": {"input": _LOG, "in": {"$cond": [
        {"$and": match}, {"$mergeObjects": ["$$this", *marks, end]}, "$$this"]}}}

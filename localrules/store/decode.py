"""Stored documents back into trials, entries and experiments: the one decode-or-skip every read
path of every backend goes through.

A store's documents may have been written behind its back (an unlucky operator, a buggy old
version, a hostile hand): text that is not JSON, JSON nested a hundred thousand deep (Python's
``json.loads`` raises RecursionError on it), a list where a mapping belongs, BSON values JSON
has no form for (ObjectId, datetime, bytes, Decimal128). Whatever goes wrong while one document
is decoded or checked, with whatever exception, is a ``MalformedDocument`` naming it: a reader
skips it with a warning (``read_each``), a reservation fails it (so no worker ever runs it, and
it never comes back to crash the next), and every other document is read as usual.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from localrules.store.documents import Experiment, HistoryEntry, Trial, check_json
from localrules.store.workers import WorkerRecord
from localrules.validation import shown

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")

_REASON_LIMIT = 300


class MalformedDocument(ValueError):
    """A stored document that cannot be read as what it should be; ``what`` names it (``trial
    3 of 'exp'``), ``reason`` says what is wrong."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(what, reason)  # both: it pickles

    def __str__(self) -> str:
        return f"{self.what}: malformed document: {self.reason}"


def trial_name(data: Any) -> str:
    """``trial 3 of 'exp'`` from whatever a document holds (never raises)."""
    get = data.get if isinstance(data, Mapping) else (lambda key: None)
    return f"trial {shown(get('trial_id'))} of {shown(get('experiment'))}"


def _reason(err: BaseException) -> str:
    text = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"documents are strict JSON, but the text holds {name}")


def loads(text: Any, field: str) -> Any:
    """A JSON text column's value (None stays None); strict: NaN and Infinity are refused."""
    if text is None:
        return None
    if not isinstance(text, (str, bytes)):
        raise ValueError(f"field {field!r} holds a {type(text).__name__}, not JSON text")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise ValueError(f"field {field!r} is not JSON ({err})") from None


def _decoded(data: Mapping[str, Any], json_fields: Collection[str],
             checked: Collection[str] | None) -> dict[str, Any]:
    doc = dict(data)
    for name in json_fields:
        if name in doc:
            doc[name] = loads(doc[name], name)
    check_json(doc if checked is None else {k: doc.get(k) for k in checked}, "the document")
    return doc


def decode_trial(data: Mapping[str, Any], json_fields: Collection[str] = ()) -> Trial:
    """The trial of a stored document (``json_fields`` hold JSON text to parse first), checked
    as plain, bounded JSON and as a trial; MalformedDocument for anything wrong."""
    try:
        return Trial.from_dict(_decoded(data, json_fields, None))
    except Exception as err:  # RecursionError, TypeError, …: this document only
        raise MalformedDocument(trial_name(data), _reason(err)) from None


_ENTRY_JSON = ("misc", "result", "reference", "fidelity")


def decode_entry(data: Mapping[str, Any], json_fields: Collection[str] = ()) -> HistoryEntry:
    """The history entry of a stored trial's projection (trial_id, state, misc, result,
    reference, seq, fidelity), checked as ``decode_trial`` checks those fields."""
    try:
        return HistoryEntry.from_dict(_decoded(data, json_fields, _ENTRY_JSON))
    except Exception as err:
        raise MalformedDocument(trial_name(data), _reason(err)) from None


def decode_experiment(data: Any, text: bool = False) -> Experiment:
    """The experiment of a stored document (``text``: JSON text to parse first)."""
    name = f"experiment {shown(data.get('name'))}" if isinstance(data, Mapping) \
        else "an experiment"
    try:
        doc = loads(data, "doc") if text else dict(data)
        if not isinstance(doc, Mapping):
            raise ValueError(f"an experiment document is a mapping, not a {type(doc).__name__}")
        if text:
            name = f"experiment {shown(doc.get('name'))}"
        check_json(doc, "the document")
        return Experiment.from_dict(doc)
    except Exception as err:
        raise MalformedDocument(name, _reason(err)) from None


def decode_worker(data: Any, worker: object, text: bool = False) -> WorkerRecord:
    """The worker record of a stored document (``text``: JSON text to parse first) of the
    worker ``worker`` (its key, to name it)."""
    try:
        doc = loads(data, "doc") if text else dict(data)
        if not isinstance(doc, Mapping):
            raise ValueError(f"a worker record is a mapping, not a {type(doc).__name__}")
        check_json(doc, "the document")
        record = WorkerRecord.from_dict(doc)
        if record.worker != worker:
            raise ValueError(f"it is keyed {shown(worker)} but names {shown(record.worker)}")
        return record
    except Exception as err:
        raise MalformedDocument(f"worker record {shown(worker)}", _reason(err)) from None


def read_each(raws: Iterable[R], decode: Callable[[R], T], where: str) -> list[T]:
    """Every raw document decoded, those that are malformed left out with a warning naming
    them (``where``: the store's URL): one bad document never stops a reader."""
    out = []
    for raw in raws:
        try:
            out.append(decode(raw))
        except MalformedDocument as err:
            log.warning("%s: %s skipped: %s", where, err.what, err.reason)
    return out

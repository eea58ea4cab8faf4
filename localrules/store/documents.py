"""The documents a trial store keeps: experiments and trials, as plain JSON (DESIGN.md).

A trial goes ``queued → running → done | failed`` (or ``cancelled``). ``attempt`` counts
reservations and doubles as the fencing token: every write a worker makes names the attempt it
holds, and the store refuses it once the lease has passed to another attempt. Nothing here is
code: configs, params, hyperopt's idxs/vals, progress and results are JSON values only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from localrules import __version__
from localrules.jsonsafe import json_safe
from localrules.results import full_budget
from localrules.store.attempts import check_attempts
from localrules.store.curve import LAYER_METRICS, check_curve, curve_points

SCHEMA_VERSION = 5
"""2: trials may be reference runs (``reference``). 3: every write to a trial stamps it with the
store's change number (``seq``, see ``TrialStore.changes``); a store opened by this version is
marked 3, so an older localrules, which would write without stamping (and a controller would
never see the change), refuses it. 4: a trial of a multi-fidelity search carries its rung and
target epoch (``fidelity``) and may be promoted (done → queued, ``TrialStore.promote``); an
older worker would train it to the end, so an older localrules refuses the store. 5: a
trial keeps its learning curve (``curve``, written by ``report_progress``) and its attempts log
(``attempts``, written by every transition), and the store keeps a record of each worker
(``workers``); an older localrules would refuse the new fields as unknown, and its writes
would leave the curve and the log behind, so it refuses the store. Workers leave documents of
a newer schema for newer workers; older documents are read as they are."""

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES: tuple[str, ...] = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED: frozenset[str] = frozenset({DONE, FAILED, CANCELLED})
PENDING: frozenset[str] = frozenset({QUEUED, RUNNING})


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class Experiment:
    """One search: its space (as a rebuildable source), budget and search settings.

    ``settings`` holds the controller's choices (seed, TPE settings, objective, max_trials); a
    re-run with the same name must bring the same ``fingerprint`` (space and budget)."""

    name: str
    space_name: str
    space_source: Mapping[str, Any]
    fingerprint: str
    budget: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=dict)
    reading: str | None = None
    """How the space's weights read the appendix's α/β/γ (a preset's ``reading``): the paper
    spaces follow the appendix; None for an experiment stored before this was recorded."""
    created_at: float = field(default_factory=now)
    code_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_experiment_name(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Trial:
    """One trial document. Timestamps are Unix seconds (UTC); ``lease_expires`` is set while
    running. ``result`` holds at least ``objective``, ``top1``, ``diverged`` and ``epochs``."""

    experiment: str
    trial_id: int
    config: Mapping[str, Any]
    params: Mapping[str, Any]
    misc: Mapping[str, Any]
    """hyperopt's ``{"idxs": {label: [tid] | []}, "vals": {label: [value] | []}}``."""
    state: str = QUEUED
    attempt: int = 0
    """Reservations so far; the fencing token of the current one."""
    lapses: int = 0
    """Attempts that lost their lease (crashed or unreachable workers). A graceful hand-back
    (``release``, e.g. on a preemption notice) is not one; ``max_attempts`` limits lapses."""
    worker: str | None = None
    lease_expires: float | None = None
    progress: Mapping[str, Any] | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None
    code_version: str = __version__
    """The version that created the trial; the worker's goes into ``result``."""
    created_at: float = field(default_factory=now)
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    reference: Mapping[str, Any] | None = None
    """Set on a reference run (bp, fa, … under the experiment's budget; never given to TPE nor
    counted in ``max_trials``): ``{"rule", "replicate", "key"}``, see ``store.references``."""
    fidelity: Mapping[str, Any] | None = None
    """Set on a trial of a multi-fidelity search (``search.fidelity``): ``{"bracket", "rung",
    "epochs"}``, the rung it trains to (or paused at) and that rung's epochs. A promotion
    raises both and queues the trial again; it resumes from its checkpoint."""
    curve: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The learning curve: ``{"<epoch>": {"epoch", "at", "attempt", "metrics", "layers"}}``,
    written by ``report_progress``, at most ``curve.MAX_CURVE_POINTS`` entries
    (``store.curve``); empty for a trial that has reported nothing (or from before schema 5)."""
    attempts: list[Mapping[str, Any]] = field(default_factory=list)
    """The attempts log: ``{"attempt", "worker", "started_at", "ended_at", "outcome",
    "error"}`` per reservation, newest last, the latest 50 (``store.attempts``)."""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """A trial from a stored document, checked: a malformed or hostile document (missing or
        unknown fields, wrong types) is a ValueError, never a half-built trial."""
        extra = sorted(set(data) - _TRIAL_FIELDS - BOOKKEEPING)
        if extra:
            raise ValueError(f"unknown trial document field(s): {', '.join(map(str, extra))}")
        missing = sorted(_REQUIRED - set(data))
        if missing:
            raise ValueError(f"trial document lacks {', '.join(missing)}")
        _check_fields(data)
        check_experiment_name(data["experiment"])  # it becomes part of file paths
        return cls(**{k: v for k, v in data.items() if k in _TRIAL_FIELDS})

    @property
    def objective(self) -> float | None:
        return None if self.result is None else self.result.get("objective")

    def curve_points(self) -> list[Mapping[str, Any]]:
        """The learning curve's entries, by epoch."""
        return curve_points(self.curve)


_TRIAL_FIELDS = frozenset(f.name for f in dataclasses.fields(Trial))
BOOKKEEPING = frozenset({"_id", "seq", "seq_pending"})
"""Fields a backend keeps in a trial's document beside the trial (its key, its change number and
a write in progress): not part of the trial, never refused as unknown."""
_REQUIRED = frozenset({"experiment", "trial_id", "config", "params", "misc"})
_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "experiment": (str,), "trial_id": (int,), "config": (Mapping,), "params": (Mapping,),
    "misc": (Mapping,), "state": (str,), "attempt": (int,), "lapses": (int,),
    "worker": (str, type(None)), "lease_expires": (*_NUMBER, type(None)),
    "progress": (Mapping, type(None)), "result": (Mapping, type(None)),
    "error": (str, type(None)), "code_version": (str,), "created_at": _NUMBER,
    "started_at": (*_NUMBER, type(None)), "updated_at": (*_NUMBER, type(None)),
    "finished_at": (*_NUMBER, type(None)), "reference": (Mapping, type(None)),
    "fidelity": (Mapping, type(None)), "schema_version": (int,), "curve": (Mapping,),
    "attempts": (list,),
}


_COUNTS = ("trial_id", "attempt", "lapses", "schema_version")
"""Fields that count from 0 (an attempt below 0 would be handed out as attempt 0, which no
write can name: the fencing token starts at 1)."""


def _check_fields(data: Mapping[str, Any]) -> None:
    """The types of the trial fields ``data`` has, and what readers rely on inside them: a
    known state, a valid reference marker, a numeric objective, a text warm-start label."""
    for name, kinds in _TYPES.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ValueError(f"trial document field {name!r} has the wrong type "
                             f"({type(value).__name__})")
    for name in _COUNTS:
        if data.get(name, 0) < 0:
            raise ValueError(f"trial document field {name!r} is negative ({data[name]})")
    if data.get("state", QUEUED) not in STATES:
        raise ValueError(f"trial document state {data['state']!r} is not one of {STATES}")
    if data.get("state") == RUNNING and data.get("attempt", 1) < 1:
        raise ValueError("trial document is running without an attempt (the fencing token "
                         "starts at 1)")
    if data.get("reference") is not None:
        _check_reference(data["reference"])
    if data.get("fidelity") is not None:
        check_fidelity(data["fidelity"])
    check_curve(data.get("curve", {}))
    check_attempts(data.get("attempts", []))
    objective = (data.get("result") or {}).get("objective")
    if objective is not None and (isinstance(objective, bool) or not isinstance(
            objective, _NUMBER) or not math.isfinite(objective)):
        raise ValueError(f"trial document result's objective is not a finite number "
                         f"({type(objective).__name__})")
    label = (data.get("misc") or {}).get("warm_start")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"trial document misc's warm_start is not text "
                         f"({type(label).__name__})")


def _check_reference(reference: Mapping[str, Any]) -> None:
    """A reference run's marker: rule (a preset name), replicate and key."""
    rule, replicate, key = (reference.get(k) for k in ("rule", "replicate", "key"))
    if not (isinstance(rule, str) and isinstance(key, str) and isinstance(replicate, int)
            and not isinstance(replicate, bool) and replicate >= 0):
        raise ValueError(f"trial document field 'reference' is malformed: {dict(reference)!r}")


def check_fidelity(fidelity: Mapping[str, Any]) -> Mapping[str, Any]:
    """A trial's rung marker: bracket, rung and epochs, counts (epochs from 1); ValueError
    naming what is wrong."""
    values = [fidelity.get(k) for k in ("bracket", "rung", "epochs")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31
               for v in values) or values[2] < 1 or set(fidelity) - {"bracket", "rung",
                                                                     "epochs"}:
        raise ValueError(f"trial document field 'fidelity' is malformed: {dict(fidelity)!r:.200}")
    return fidelity


@dataclass(frozen=True)
class HistoryEntry:
    """The part of a trial that TPE's history needs (a cheap projection of the document)."""

    trial_id: int
    state: str
    misc: Mapping[str, Any]
    result: Mapping[str, Any] | None
    reference: Mapping[str, Any] | None = None
    seq: int = 0
    """The store's change number of the trial's last write (0: written before stores numbered
    their changes, or not read from a store)."""
    fidelity: Mapping[str, Any] | None = None
    """The trial's rung marker under a multi-fidelity search (``Trial.fidelity``)."""
    attempt: int = 0
    """Reservations so far: what a promotion is fenced by (``TrialStore.promote``)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEntry:
        """The entry of a stored trial's projection, checked as ``Trial.from_dict`` checks
        those fields (a ValueError for a malformed one)."""
        missing = sorted({"trial_id", "state", "misc"} - set(data))
        if missing:
            raise ValueError(f"trial document lacks {', '.join(missing)}")
        _check_fields(data)
        seq = data.get("seq", 0)
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise ValueError(f"trial document field 'seq' has the wrong type "
                             f"({type(seq).__name__})")
        return cls(data["trial_id"], data["state"], data["misc"], data.get("result"),
                   data.get("reference"), seq, data.get("fidelity"), data.get("attempt", 0))

    @classmethod
    def of(cls, trial: Trial) -> HistoryEntry:
        """The entry of a trial document (one not read back from the store: ``seq`` 0)."""
        return cls(trial.trial_id, trial.state, trial.misc, trial.result, trial.reference,
                   fidelity=trial.fidelity, attempt=trial.attempt)


def state_counts(trials: Iterable[Trial | HistoryEntry]) -> dict[str, int]:
    """Trials per state, every state present (zeros included)."""
    counts = dict.fromkeys(STATES, 0)
    for t in trials:
        counts[t.state] += 1
    return counts


def counts_text(counts: Mapping[str, int]) -> str:
    """Trials per state for people: ``"3 done, 1 failed"`` (states with none left out)."""
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if n)


def full_budget_trial(trial: Trial | HistoryEntry) -> bool:
    """Whether a trial holds a full-budget result: done, with an objective, not paused or
    stopped below the budget's epochs (``results.full_budget``). The one test behind the best
    trial, gap closed, importance and the reports' best so far; a rung result is shown apart,
    never ranked against these."""
    return (trial.state == DONE and full_budget(trial.result)
            and trial.result.get("objective") is not None)


def paused_trial(trial: Trial | HistoryEntry) -> bool:
    """Whether a trial is done with only a rung result: paused (or stopped) below the budget's
    epochs by a multi-fidelity search. Shown apart from full-budget results, never ranked."""
    return (trial.state == DONE and trial.result is not None
            and trial.result.get("objective") is not None and not full_budget(trial.result))


def best_objective(trials: Iterable[Trial | HistoryEntry]) -> Trial | HistoryEntry | None:
    """The search trial with the highest full-budget objective (done trials only carry one;
    a trial paused or stopped at a lower rung is not a candidate, nor is a reference run), or
    None."""
    scored = [t for t in trials if t.reference is None and full_budget_trial(t)]
    return max(scored, key=lambda t: t.result["objective"], default=None)


def top_decile_median(trials: Iterable[Trial | HistoryEntry]) -> float | None:
    """The median objective of the best tenth of the full-budget search trials (the top
    ``ceil(n / 10)`` of ``n``, so at least one), or None without any. The candidates are
    those of ``best_objective``: reference runs and rung results are left out.

    The best trial alone says how lucky a search got; the top decile's median says how good its
    good region is, a steadier figure to set two searches side by side by."""
    import statistics

    objectives = sorted((t.result["objective"] for t in trials
                         if t.reference is None and full_budget_trial(t)), reverse=True)
    if not objectives:
        return None
    return statistics.median(objectives[: math.ceil(len(objectives) / 10)])


def requeue_outcome(lapses: int, max_attempts: int) -> tuple[str, str | None]:
    """State and error of a running trial whose lease has expired for the ``lapses``-th time."""
    if lapses >= max_attempts:
        return FAILED, f"lease expired {lapses} times (max_attempts {max_attempts})"
    return QUEUED, None


MAX_DEPTH = 64
"""Deepest nesting of lists and mappings a document may have: far past any real config, misc or
result, well inside every reader's recursion limit (a nesting bomb is refused, never recursed)."""


def check_json(value: Any, what: str = "document") -> None:
    """ValueError unless ``value`` is plain JSON with finite numbers, nested at most
    ``MAX_DEPTH`` deep (``validation.check_json``, any number of values): a hostile value of any
    depth is refused, never a RecursionError."""
    from localrules.validation import check_json as check

    check(what, value, depth=MAX_DEPTH, items=None, string_keys=False)


def strict_json(value: Any) -> str:
    """``value`` as strict JSON text; ValueError for NaN/Inf, anything JSON cannot hold, or
    nesting past ``MAX_DEPTH``. Every backend checks documents with it, so no store ever holds
    what another could not, nor what a reader would refuse."""
    import json

    check_json(value, "documents are strict JSON, but the document")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"documents are strict JSON: {err}") from None


def check_experiment_name(name: object) -> str:
    """Names go into file paths and URLs: letters, digits, ``-``, ``_``, ``.``; 1–100 chars."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ValueError(
            f"invalid experiment name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def progress_document(record: Mapping[str, Any], epochs: int,
                      run_dir: str | None) -> dict[str, Any]:
    """A trial's progress document from one epoch's record: the epoch, its scalar metrics, its
    layers' weight metrics (``layers``, on an epoch that measured them), and where the run's
    files are (for ``report weights`` on a running trial). Workers and the Ray engine write the
    same document; ``report_progress`` files it in the trial's curve too (``store.curve``)."""
    metrics = {k: v for k, v in record.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
    doc = {"epoch": record.get("epoch"), "epochs": epochs, "metrics": json_safe(metrics),
           "run_dir": run_dir}
    layers = record.get("layers")
    if isinstance(layers, Mapping) and layers:
        doc["layers"] = json_safe({str(name): {k: m.get(k) for k in LAYER_METRICS}
                                   for name, m in layers.items() if isinstance(m, Mapping)})
    return doc

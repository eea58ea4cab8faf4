"""What each dashboard page shows, as plain JSON read from a store (no web framework here).

Every figure comes from the store's read-only API: experiment summaries (``store.summary``),
filtered and sorted trial pages (the query language, ``store/query``), the search's progress and
the importance with SEM (``analysis``), one trial's document with its epoch curve and attempts,
and the workers' records. Nothing here writes.

The summary and the analyses are cached per experiment and redone only when a trial's outcome
changed (``watch``: a refresh reads only the trials written since the last one); the
analyses, which read every trial, at most every ``ANALYSIS_AGE`` seconds. Timestamps stay Unix
seconds: the page shows them in the reader's time zone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localrules.dashboard.watch import ExperimentWatch
from localrules.results import trial_epochs
from localrules.store.documents import (
    DONE,
    FAILED,
    STATES,
    Experiment,
    Trial,
    full_budget_trial,
)
from localrules.store.frame import trial_row
from localrules.store.query.run import with_states
from localrules.store.references import References, references_of, requested_references
from localrules.store.urls import redact

PER_PAGE = 100
MAX_PER_PAGE = 500
MAX_TOP = 200
DEFAULT_TOP = 30
RATE_WINDOW = 3600.0
"""Trials per hour are counted over the last hour."""
ANALYSIS_AGE = 10.0
"""Seconds an experiment's analyses (progress, importance) are kept even if a trial changed
state meanwhile: they read every trial, so on a busy search of 10,000 trials they are redone
at most this often."""


class NotFound(LookupError):
    """An experiment or trial the store does not have (HTTP 404)."""


@dataclass(frozen=True)
class TrialPageRequest:
    """One page of an experiment's trial table: filter, order and position, validated."""

    states: tuple[str, ...] = ()
    where: str | None = None
    sort: str = "trial_id"
    reverse: bool = True
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> TrialPageRequest:
        """From URL query parameters (each a list of values); ValueError naming what is wrong
        and what is valid."""
        known = {"state", "where", "sort", "reverse", "page", "per_page"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(known))}")
        states = tuple(query.get("state", ()))
        bad = [s for s in states if s not in STATES]
        if bad:
            raise ValueError(f"unknown state {bad[0]!r}; valid: {', '.join(STATES)}")
        where = _single(query, "where")
        where = where if where and where.strip() else None
        sort = _single(query, "sort") or "trial_id"
        from localrules.store.query.plan import check_sort_field

        check_sort_field(sort)
        reverse = _flag(_single(query, "reverse"), default=sort == "trial_id")
        page = parse_count(_single(query, "page"), "page", 1, 10**6, 1)
        per_page = parse_count(_single(query, "per_page"), "per_page", 1, MAX_PER_PAGE, PER_PAGE)
        return cls(states, where, sort, reverse, page, per_page)


def _single(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name, ())
    if len(values) > 1:
        raise ValueError(f"{name}: give it once (got {len(values)} values)")
    return values[0] if values else None


def _flag(text: str | None, default: bool) -> bool:
    if text is None or text == "":
        return default
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"reverse: 1/true/yes or 0/false/no, got {text[:40]!r}")


def parse_count(text: str | None, name: str, low: int, high: int, default: int) -> int:
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ValueError(f"{name}: a whole number from {low} to {high}, got {text[:40]!r}")
    return int(text)


class DashboardData:
    """The dashboard's reads over one open (read-only) store, with per-experiment caches."""

    def __init__(self, store: Any, url: str, clock: Callable[[], float] = time.time,
                 analysis_age: float = ANALYSIS_AGE) -> None:
        self.store = store
        self.database = redact(url)
        """The database URL as a page may show it: passwords and secret options masked."""
        self.clock = clock
        self.analysis_age = analysis_age
        self._cache: dict[tuple[str, str], tuple[int, Any, float]] = {}
        self._watches: dict[str, ExperimentWatch] = {}
        self._computing: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    # --- helpers ----------------------------------------------------------------------------
    def _experiment(self, name: str) -> Experiment:
        found = self.store.get_experiment(name)
        if found is None:
            raise NotFound(f"no experiment {name!r} in this database")
        return found

    def _watch(self, name: str) -> ExperimentWatch:
        with self._lock:
            return self._watches.setdefault(name, ExperimentWatch(self.store, name))

    def version(self, name: str) -> int:
        """The version of the experiment's outcomes, read up to now (``watch``)."""
        return self._watch(name).refresh()

    def _cached(self, name: str, kind: str, compute: Callable[[], Any],
                min_age: float = 0.0) -> Any:
        """``compute()`` for the experiment, reused while no trial's outcome has changed (and,
        with ``min_age``, for at least that many seconds after it was computed). One
        computation at a time per value: a second page asking meanwhile waits for it."""
        key = self.version(name)
        with self._lock:
            guard = self._computing.setdefault((name, kind), threading.Lock())
        with guard:
            hit = self._cache.get((name, kind))
            if hit is not None and (hit[0] == key or self.clock() - hit[2] < min_age):
                return hit[1]
            value = compute()
            self._cache[(name, kind)] = (key, value, self.clock())
            return value

    def _references(self, experiment: Experiment) -> References:
        from localrules.store.query.run import REFERENCE_RUNS

        runs = self.store.query_trials(experiment.name, REFERENCE_RUNS)
        return references_of(runs, requested_references(experiment))

    # --- pages --------------------------------------------------------------------------------
    def experiments(self) -> dict[str, Any]:
        """Every experiment, summed up (the experiments page)."""
        rows = [self.summary(e) for e in self.store.list_experiments()]
        return {"database": self.database, "experiments": rows, "now": self.clock()}

    def summary(self, experiment: Experiment) -> dict[str, Any]:
        """One experiment's figures: space, engine, budget, counts, best objective and gap
        closed, references, trials per hour over the last hour."""
        from localrules.store.summary import experiment_summary

        name = experiment.name
        summary = self._cached(name, "summary", lambda: experiment_summary(
            experiment, self._watch(name).entries()))
        return {**summary, "engine": experiment.settings.get("engine", "store"),
                "trials_per_hour": self.rate(name)}

    def rate(self, name: str) -> float:
        """Trials that finished (done or failed) in the last hour."""
        since = self.clock() - RATE_WINDOW
        recent = self.store.select(name, f"state in ({DONE}, {FAILED}) and finished_at >= "
                                         f"{since!r}", columns=["trial_id"])
        return float(len(recent.trials))

    def experiment(self, name: str) -> dict[str, Any]:
        """The experiment page's header: its summary, settings and the version of its trials'
        outcomes (what the analyses say they were computed for: ``watch``)."""
        found = self._experiment(name)
        summary = self.summary(found)
        return {"database": self.database, "summary": summary, "version": self.version(name),
                "settings": dict(found.settings), "now": self.clock()}

    def trials(self, name: str, request: TrialPageRequest) -> dict[str, Any]:
        """One page of the trial table: rows (flat, as ``localrules trials`` has them), the
        parameter names on the page, the total (None under a ``where`` filter, which would
        have to read every match to count them) and whether more pages follow."""
        from localrules.store.query.language import QuerySyntaxError, parse

        found = self._experiment(name)
        offset = (request.page - 1) * request.per_page
        where = with_states(request.where, request.states)
        try:
            if request.where is not None:
                parse(request.where)  # a syntax error's position is in what was typed
            chosen = self.store.select(name, where, request.sort, request.reverse,
                                       limit=request.per_page + 1, offset=offset)
        except QuerySyntaxError as err:  # the CLI's flag is the page's filter field here
            raise ValueError("filter" + str(err).removeprefix("--where")) from None
        references = chosen.references[name]
        page = chosen.trials[:request.per_page]
        rows = [_table_row(t, references) for t in page]
        total = None
        if request.where is None:
            counts = self.store.counts(name)
            total = sum(counts[s] for s in (request.states or STATES))
        if not page and request.page > 1:
            pages = None if total is None else max(1, -(-total // request.per_page))
            last = "" if pages is None else f" (the last is {pages})"
            raise ValueError(f"page {request.page} is past the last page{last}")
        params = sorted({k for t in page for k in t.params})
        return {"experiment": found.name, "rows": rows, "params": params,
                "page": request.page, "per_page": request.per_page, "total": total,
                "more": len(chosen.trials) > request.per_page,
                "where": where, "sort": request.sort, "reverse": request.reverse,
                "now": self.clock()}

    def analyses(self, name: str) -> dict[str, Any]:
        """Progress (objective and best so far by trial and by trial-epochs, as ``report
        progress`` has it) and importance (each categorical metaparameter, with the SEM of
        every level), from one read of the experiment's trials."""
        from localrules.analysis.importance import data_of, importance_report
        from localrules.analysis.progress import progress_of

        found = self._experiment(name)

        def compute() -> dict[str, Any]:
            version = self.version(name)  # before the read: never newer than the trials
            trials = self.store.trials(name)
            try:
                progress = progress_of(found, trials).to_dict()
            except ValueError as err:  # no search trials yet
                progress = {"experiment": name, "trials": [], "curve": [], "note": str(err)}
            try:
                report = importance_report(data_of(found, trials))
            except ValueError as err:  # nothing finished yet
                importance = {"experiment": name, "parameters": [], "analysed": 0,
                              "note": str(err)}
            else:
                importance = {"experiment": name, "analysed": report.analysed,
                              "parameters": [p.to_dict() for p in report.parameters],
                              "note": report.paused and f"{report.paused} paused trial(s) "
                                                        "left out"}
            return {"progress": {**progress, "version": version},
                    "importance": {**importance, "version": version}}

        return self._cached(name, "analyses", compute, self.analysis_age)

    def progress(self, name: str) -> dict[str, Any]:
        return self.analyses(name)["progress"]

    def importance(self, name: str) -> dict[str, Any]:
        return self.analyses(name)["importance"]

    def top(self, name: str, n: int = DEFAULT_TOP) -> dict[str, Any]:
        """The best ``n`` full-budget search trials' params and objectives (the parallel
        coordinates)."""
        self._experiment(name)
        chosen = self.store.select(name, "full_budget and not is_reference", "objective",
                                   limit=n)
        return {"experiment": name, "trials": [
            {"trial_id": t.trial_id, "objective": t.objective, "params": dict(t.params)}
            for t in chosen.trials]}

    def trial(self, name: str, trial_id: int) -> dict[str, Any]:
        """One trial's document for its page: config, params, result and gap closed, the
        epoch curve, the attempts, the lease."""
        found = self._experiment(name)
        trial = self.store.get_trial(name, trial_id) if 0 <= trial_id < 2**63 else None
        if trial is None:
            raise NotFound(f"no trial {trial_id} in experiment {name!r}")
        references = self._references(found)
        gap = references.result_gap_closed(trial.result)
        return {**trial.to_dict(), "curve": trial.curve_points(), "gap_closed": gap,
                "gap_closed_reason": None if gap is not None else (
                    references.result_gap_reason(trial.result) or "no objective"),
                "full_budget": full_budget_trial(trial), "trial_epochs": trial_epochs(
                    trial.result), "now": self.clock()}

    def workers(self) -> dict[str, Any]:
        """Every worker's record: status, trial and lease, last heartbeat, recent events."""
        now = self.clock()
        return {"workers": [w.to_dict() for w in self.store.workers()], "now": now}


def _table_row(trial: Trial, references: References) -> dict[str, Any]:
    """A trial-table row: the query's flat row (stores hold strict JSON: finite numbers only),
    with the epochs the trial is to run."""
    row = trial_row(trial, references)
    row["progress.epochs"] = (trial.progress or {}).get("epochs")
    row["fidelity.epochs"] = (trial.fidelity or {}).get("epochs")
    return row

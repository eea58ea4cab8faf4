"""Importance of categorical and boolean metaparameters, with error bars (appendix B.4, Fig. S2).

For each categorical parameter, over the finished trials where it is active: the objective's mean
per level with its standard error (SEM, ddof = 1) and n; the importance is the spread between the
best and the worst level mean, with the standard error of that difference
(√(SEM_best² + SEM_worst²)). Conditional parameters are analysed only where active — a trial
without the parameter is not a level of it — and n per level is always shown. A level with fewer
than 2 trials has no SEM; a parameter with fewer than 2 such levels, or one that never varied, is
reported as not estimable rather than dropped or crashed on.

Diverged trials count at their recorded objective (chance level); failed or unfinished trials have
no objective and are left out, and the report says how many. Under a multi-fidelity search only
full-budget results are analysed: a trial paused (or stopped) at a lower rung has a rung
objective, lower for fewer epochs whatever its settings, and which trials trained fully was
decided by their early objectives, so mixing the two would credit a parameter with the epochs
its trials were given. The paused trials left out are counted (``paused``).

With more than two levels the spread picks the extreme means, which biases it upwards for noisy
levels; the SE does not correct for that selection (as the paper's plot does not).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LevelStat:
    level: Any
    mean: float
    sem: float | None
    """None with fewer than 2 trials at the level."""
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "mean": self.mean, "sem": self.sem, "n": self.n}


@dataclass(frozen=True)
class ParameterImportance:
    parameter: str
    importance: float | None
    """Best level mean minus worst level mean; None when not estimable."""
    importance_se: float | None
    levels: tuple[LevelStat, ...]
    note: str = ""
    """Why the importance is not estimable, or what to keep in mind."""
    n_active: int = field(default=0)

    @property
    def estimable(self) -> bool:
        return self.importance is not None

    def to_dict(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "importance": self.importance,
                "importance_se": self.importance_se, "n": self.n_active,
                "levels": [lv.to_dict() for lv in self.levels], "note": self.note}


def _sem(values: Sequence[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def _level_key(value: Any) -> tuple[int, Any]:
    """Levels in a stable order: booleans (false, true), then numbers, then strings."""
    if isinstance(value, bool):
        return (0, value)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def parameter_importance(parameter: str, pairs: Iterable[tuple[Any, float]]) -> ParameterImportance:
    """Importance of one parameter from (level, objective) pairs of the trials where it is
    active."""
    by_level: dict[Any, list[float]] = {}
    for level, objective in pairs:
        by_level.setdefault(level, []).append(float(objective))
    levels = tuple(
        LevelStat(level, sum(v) / len(v), _sem(v), len(v))
        for level, v in sorted(by_level.items(), key=lambda kv: _level_key(kv[0])))
    n = sum(lv.n for lv in levels)
    if len(levels) < 2:
        return ParameterImportance(parameter, None, None, levels,
                                   "not estimable: never varied" if levels else
                                   "not estimable: no finished trial where it is active", n)
    usable = [lv for lv in levels if lv.sem is not None]
    if len(usable) < 2:
        return ParameterImportance(parameter, None, None, levels,
                                   "not estimable: fewer than 2 levels with 2 or more trials", n)
    ordered = sorted(usable, key=lambda lv: lv.mean)  # two distinct levels even when tied
    worst, best = ordered[0], ordered[-1]
    se = math.sqrt(best.sem ** 2 + worst.sem ** 2)  # type: ignore[operator]
    skipped = [lv for lv in levels if lv.sem is None]
    note = (f"level(s) {', '.join(repr(lv.level) for lv in skipped)} with 1 trial left out of "
            "the spread" if skipped else "")
    return ParameterImportance(parameter, best.mean - worst.mean, se, levels, note, n)


def top_rows(rows: Sequence[Mapping[str, Any]],
             fraction: float | None) -> list[Mapping[str, Any]]:
    """The rows with an objective; with ``fraction``, only the best ``ceil(fraction · n)`` of
    them (at least one), as when asking what distinguishes good settings among good ones."""
    rows = [r for r in rows if r.get("objective") is not None]
    if fraction is None:
        return rows
    if not 0 < fraction <= 1:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    keep = max(1, math.ceil(len(rows) * fraction))
    return sorted(rows, key=lambda r: r["objective"], reverse=True)[:keep]


def categorical_importance(
    rows: Sequence[Mapping[str, Any]],
    parameters: Iterable[str],
    top_fraction: float | None = None,
) -> list[ParameterImportance]:
    """Importance of each named parameter over ``rows`` (``{"params": {...}, "objective": x}``
    per finished trial), most important first (not-estimable ones last).

    ``top_fraction`` restricts the analysis to the best fraction of trials by objective, as
    when asking what distinguishes good settings among good ones."""
    rows = top_rows(rows, top_fraction)
    results = [
        parameter_importance(p, ((r["params"][p], r["objective"]) for r in rows
                                 if p in r["params"]))
        for p in parameters
    ]
    return sorted(results, key=lambda r: (not r.estimable, -(r.importance or 0.0), r.parameter))


@dataclass(frozen=True)
class ImportanceReport:
    """Importance of an experiment's categorical parameters, and the trials it rests on."""

    experiment: str
    parameters: list[ParameterImportance]
    counts: dict[str, int]
    """Trials per state; only ``done`` ones with an objective are analysed."""
    diverged: int
    analysed: int
    top_fraction: float | None
    paused: int = 0
    """Done trials paused or stopped at a lower rung (multi-fidelity): left out."""


@dataclass(frozen=True)
class ExperimentData:
    """What an importance analysis reads from a store: the space and the finished trials."""

    experiment: str
    space: Any
    rows: list[dict[str, Any]]
    """``{"params", "objective"}`` of each full-budget result (``full_budget_trial``)."""
    counts: dict[str, int]
    diverged: int
    paused: int = 0
    """Done trials with only a rung result (paused or stopped below the budget's epochs),
    left out of ``rows``."""

    def paused_note(self) -> str:
        """What a report says about the paused trials it left out ("" when there are none)."""
        if not self.paused:
            return ""
        return (f"{self.paused} trial(s) paused at a lower rung left out (only full-budget "
                "results are analysed)")


def experiment_data(store, experiment: str) -> ExperimentData:
    """The space and the finished trials of a stored experiment (any backend; a running search
    gives what has finished so far). ValueError for an unknown or empty experiment."""
    found = store.require_experiment(experiment)
    return data_of(found, store.trials(experiment))  # one read: counts and rows agree


def data_of(found, trials) -> ExperimentData:
    """``experiment_data`` of an experiment document and its trials, already read."""
    from localrules.spaces import Budget, space_from_source
    from localrules.store.documents import full_budget_trial, paused_trial, state_counts
    from localrules.store.references import search_trials

    experiment = found.name
    space = space_from_source(found.space_source, Budget.from_dict(found.budget))
    trials = search_trials(trials)
    rows = [{"params": t.params, "objective": t.objective}
            for t in trials if full_budget_trial(t)]
    paused = sum(map(paused_trial, trials))
    if paused:
        log.debug("%s: %d trial(s) paused at a lower rung left out of the importance analysis "
                 "(only full-budget results are analysed)", experiment, paused)
    if not rows:
        more = f", {paused} paused at a lower rung" if paused else ""
        raise ValueError(f"experiment {experiment!r} has no finished trial with a full-budget "
                         f"objective yet ({len(trials)} trial(s) in all{more})")
    counts = {state: n for state, n in state_counts(trials).items() if n}
    diverged = sum(bool((t.result or {}).get("diverged")) for t in trials)
    return ExperimentData(experiment, space, rows, counts, diverged, paused)


def importance_report(data: ExperimentData, top_fraction: float | None = None,
                      parameters: Sequence[str] | None = None) -> ImportanceReport:
    """The categorical importance of an experiment's data; the categorical parameters are the
    choices of its space (or the named ones among them)."""
    from localrules.spaces.nodes import Choice, walk

    categorical = [n.name for n in walk(data.space.nodes) if isinstance(n, Choice)
                   and (not parameters or n.name in parameters)]
    rows = top_rows(data.rows, top_fraction)
    results = categorical_importance(rows, categorical)
    return ImportanceReport(data.experiment, results, data.counts, data.diverged, len(rows),
                            top_fraction, data.paused)


def experiment_importance(store, experiment: str,
                          top_fraction: float | None = None) -> ImportanceReport:
    """The categorical importance of a stored experiment (any backend, running or not)."""
    return importance_report(experiment_data(store, experiment), top_fraction)

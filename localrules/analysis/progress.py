"""How a search progressed: each trial's objective and the best so far, against trial number.

Trials are numbered in the order the controller created them (their ids), not the order they
finished: with several workers a later trial may finish first, and what a TPE curve should show
is how good the suggestions became as the search went on. hyperopt suggests at random while its
history holds fewer than ``n_startup_jobs`` trials; failed trials leave the history, so the
random phase can outlast the first ``n_startup_jobs`` trial numbers. The controller records
which suggestions were random (``misc["startup"]``); for trials stored before it did, the first
``n_startup_jobs`` are taken as the startup phase.

Every trial is reported: failed or unfinished ones have no objective (the plot marks them at the
bottom, the counts say how many), and diverged ones carry their recorded objective (chance level)
with a flag, so nothing is dropped silently. Reference runs (bp, fa, …) are not search trials:
they are left out of the curve and drawn as horizontal lines, and each trial carries its gap
closed between them. A warm start (the published rule the search began from) is flagged.

**Multi-fidelity.** A trial paused (or stopped) at a rung below the budget's epochs has a rung
objective: it is shown apart (faint markers) and never enters the best so far, which follows
full-budget results only, nor gets a gap closed (``References.result_gap_closed``). Trial
number is no fair x-axis across fidelities (an ASHA search runs many cheap trials), so the
progress can also be read against **trial-epochs spent** (``SearchProgress.curve``): every
rung result, in the order they finished (each rung's ``finished_at``; the trial's own for a
result without rungs), advances the x-axis by the epochs it trained, and the best so far is
the best full-budget objective among the results finished by then. Only reported results
count: a run still going, or one that failed before it reported, adds its epochs later or
never; reference runs are left out as from the curve (both kinds of search train them alike).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localrules.results import trial_epochs
from localrules.store.documents import Trial, full_budget_trial
from localrules.store.references import References, references_of, search_trials

X_AXES = ("trial", "trial-epochs")
"""What ``report progress`` can put on the x-axis: trial number (creation order) or
trial-epochs spent (in order of finishing)."""


@dataclass(frozen=True)
class TrialPoint:
    trial_id: int
    state: str
    objective: float | None
    diverged: bool
    startup: bool
    """Suggested at random, before TPE's model took over."""
    warm_start: str | None = None
    """The warm start's label (e.g. the published rule ``ia-tpe``), for a warm start."""
    rung: int | None = None
    """The rung of its result under a multi-fidelity search (None otherwise)."""
    stopped_early: bool = False
    """Its result is a rung result: paused (or stopped) below the budget's epochs."""
    trial_epochs: int = 0
    """Epochs its result reports, every rung included (``results.trial_epochs``)."""

    @property
    def full_budget(self) -> bool:
        """A full-budget result: what the best so far is made of."""
        return self.objective is not None and not self.stopped_early


@dataclass(frozen=True)
class EpochPoint:
    """One result on the trial-epochs axis: a rung result or a full-budget one."""

    trial_epochs: int
    """Trial-epochs spent by the search once this result was in (cumulative)."""
    trial_id: int
    rung: int | None
    epochs: int
    """Epochs this result added (its rung's epochs less the trial's rung before)."""
    objective: float | None
    full_budget: bool
    diverged: bool
    finished_at: float | None


@dataclass(frozen=True)
class SearchProgress:
    """One experiment's trials in creation order, with the running best."""

    experiment: str
    points: tuple[TrialPoint, ...]
    n_startup: int | None
    """The TPE setting ``n_startup_jobs`` (None if the experiment does not record it)."""
    references: References = field(default_factory=lambda: References({}, ()))
    curve: tuple[EpochPoint, ...] = ()
    """Every reported result in the order it finished, against trial-epochs spent."""

    @property
    def startup_trials(self) -> int:
        return sum(p.startup for p in self.points)

    @property
    def best_so_far(self) -> list[float | None]:
        """The best full-budget objective among trials 1..k for each k (None until one has
        finished; a paused trial's rung result never counts)."""
        return _running_best(p.objective if p.full_budget else None for p in self.points)

    @property
    def curve_best(self) -> list[float | None]:
        """The best full-budget objective among the results of ``curve`` finished so far."""
        return _running_best(p.objective if p.full_budget else None for p in self.curve)

    @property
    def paused(self) -> int:
        """Trials whose result is a rung result (paused or stopped below the budget)."""
        return sum(p.stopped_early and p.objective is not None for p in self.points)

    @property
    def trial_epochs(self) -> int:
        """Trial-epochs spent: the epochs of every reported result of the search."""
        return sum(p.trial_epochs for p in self.points)

    def epochs_to(self, target: float) -> int | None:
        """Trial-epochs spent when a full-budget result first reached ``target`` (None if
        none has)."""
        for point, best in zip(self.curve, self.curve_best, strict=True):
            if best is not None and best >= target:
                return point.trial_epochs
        return None

    def counts(self) -> dict[str, int]:
        from localrules.store.documents import state_counts

        return {state: n for state, n in state_counts(self.points).items() if n}

    @property
    def diverged(self) -> int:
        return sum(p.diverged for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        """The trials by number (``trials``) and the results against trial-epochs (``curve``);
        a rung result has no gap closed."""
        gap = self.references.gap_closed
        return {
            "experiment": self.experiment,
            "n_startup": self.n_startup,
            "references": self.references.to_dict(),
            "trial_epochs": self.trial_epochs,
            "paused": self.paused,
            "trials": [{"trial": i + 1, "trial_id": p.trial_id, "state": p.state,
                        "objective": p.objective,
                        "gap_closed": gap(p.objective) if p.full_budget else None,
                        "diverged": p.diverged, "startup": p.startup,
                        "warm_start": p.warm_start, "rung": p.rung,
                        "stopped_early": p.stopped_early, "trial_epochs": p.trial_epochs,
                        "best_so_far": b, "best_gap_closed": gap(b)}
                       for i, (p, b) in enumerate(zip(self.points, self.best_so_far,
                                                      strict=True))],
            "curve": [{"trial_epochs": c.trial_epochs, "trial_id": c.trial_id, "rung": c.rung,
                       "epochs": c.epochs, "objective": c.objective,
                       "full_budget": c.full_budget, "diverged": c.diverged,
                       "gap_closed": gap(c.objective) if c.full_budget else None,
                       "finished_at": c.finished_at, "best_so_far": b,
                       "best_gap_closed": gap(b)}
                      for c, b in zip(self.curve, self.curve_best, strict=True)],
        }


def _running_best(values: Iterable[float | None]) -> list[float | None]:
    best: float | None = None
    out: list[float | None] = []
    for value in values:
        if value is not None and (best is None or value > best):
            best = value
        out.append(best)
    return out


def _time(value: Any) -> float | None:
    """A stored timestamp, or None for anything that is not a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _first(*values: Any) -> float | None:
    """The first of ``values`` that is a timestamp."""
    return next((t for t in map(_time, values) if t is not None), None)


def _rung_entries(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A result's well-formed rung entries, by rung (anything else in ``rungs`` ignored)."""
    entries = [r for r in result.get("rungs") or [] if isinstance(r, Mapping)
               and isinstance(r.get("rung"), int) and isinstance(r.get("epochs"), int)
               and not isinstance(r.get("epochs"), bool)]
    return sorted(entries, key=lambda r: r["rung"])


def trial_results(trial: Trial) -> list[EpochPoint]:
    """A search trial's reported results, each with the epochs it added (cumulative
    ``trial_epochs`` left 0: ``epoch_curve`` fills it). With rungs, one per rung (the last
    is full-budget when the trial finished the budget); else one for the whole result. Each
    rung's epochs are the ones it trained past the rung before; the last takes what the
    result reports (``trial_epochs``), so a trial's results add up to its trial-epochs."""
    result = trial.result or {}
    total = trial_epochs(result)
    fallback = _first(trial.finished_at, trial.updated_at, trial.created_at)
    diverged = bool(result.get("diverged"))
    entries = _rung_entries(result)
    if not entries:
        objective = result.get("objective") if trial.state == "done" else None
        if total == 0 and objective is None:
            return []
        return [EpochPoint(0, trial.trial_id, result.get("rung"), total, objective,
                           full_budget_trial(trial), diverged, fallback)]
    out, before = [], 0
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        reached = max(total, before) if last else max(entry["epochs"], before)
        objective = entry.get("objective")
        out.append(EpochPoint(
            0, trial.trial_id, entry["rung"], reached - before,
            objective if isinstance(objective, (int, float)) else None,
            last and full_budget_trial(trial), last and diverged,
            _first(entry.get("finished_at"), fallback)))
        before = reached
    return out


def epoch_curve(trials: Iterable[Trial]) -> tuple[EpochPoint, ...]:
    """The search trials' results in the order they finished (ties by trial id and rung),
    against the trial-epochs spent once each was in."""
    points = [p for t in search_trials(trials) for p in trial_results(t)]
    points.sort(key=lambda p: (p.finished_at is None, p.finished_at or 0.0, p.trial_id,
                               -1 if p.rung is None else p.rung))
    out, spent = [], 0
    for p in points:
        spent += p.epochs
        out.append(EpochPoint(spent, p.trial_id, p.rung, p.epochs, p.objective,
                              p.full_budget, p.diverged, p.finished_at))
    return tuple(out)


def experiment_progress(store, experiment: str) -> SearchProgress:
    """The progress of a stored experiment (any backend; a running search gives what it has so
    far). ValueError for an unknown experiment or one without trials."""
    found = store.require_experiment(experiment)
    # whole documents: the curve needs when each finished
    return progress_of(found, store.trials(experiment))


def progress_of(found, every) -> SearchProgress:
    """``experiment_progress`` of an experiment document and its trials, already read."""
    experiment = found.name
    history = sorted(search_trials(every), key=lambda t: t.trial_id)
    if not history:
        raise ValueError(f"experiment {experiment!r} has no search trials yet")
    n_startup = (found.settings.get("tpe") or {}).get("n_startup_jobs")
    points = tuple(
        TrialPoint(t.trial_id, t.state,
                   None if t.state != "done" else (t.result or {}).get("objective"),
                   bool((t.result or {}).get("diverged")),
                   bool((t.misc or {}).get("startup", n_startup is not None and i < n_startup)),
                   (t.misc or {}).get("warm_start"), (t.result or {}).get("rung"),
                   bool((t.result or {}).get("stopped_early")), trial_epochs(t.result))
        for i, t in enumerate(history))
    references = references_of(every, found.settings.get("references", ()))
    return SearchProgress(experiment, points, n_startup, references, epoch_curve(history))


def progress_rows(progress: Sequence[SearchProgress], x: str = "trial") -> list[dict[str, Any]]:
    """Flat rows for CSV output: one per trial per experiment, or with ``x`` "trial-epochs"
    one per result on the trial-epochs curve."""
    key = "curve" if x == "trial-epochs" else "trials"
    return [{"experiment": p.experiment, "n_startup": p.n_startup, **row}
            for p in progress for row in p.to_dict()[key]]

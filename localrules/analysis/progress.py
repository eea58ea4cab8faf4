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
with a flag, so nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialPoint:
    trial_id: int
    state: str
    objective: float | None
    diverged: bool
    startup: bool
    """Suggested at random, before TPE's model took over."""


@dataclass(frozen=True)
class SearchProgress:
    """One experiment's trials in creation order, with the running best."""

    experiment: str
    points: tuple[TrialPoint, ...]
    n_startup: int | None
    """The TPE setting ``n_startup_jobs`` (None if the experiment does not record it)."""

    @property
    def startup_trials(self) -> int:
        return sum(p.startup for p in self.points)

    @property
    def best_so_far(self) -> list[float | None]:
        """The best objective among trials 1..k for each k (None until one has finished)."""
        best: float | None = None
        out: list[float | None] = []
        for p in self.points:
            if p.objective is not None and (best is None or p.objective > best):
                best = p.objective
            out.append(best)
        return out

    def counts(self) -> dict[str, int]:
        from localrules.store.documents import state_counts

        return {state: n for state, n in state_counts(self.points).items() if n}

    @property
    def diverged(self) -> int:
        return sum(p.diverged for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "n_startup": self.n_startup,
            "trials": [{"trial": i + 1, "trial_id": p.trial_id, "state": p.state,
                        "objective": p.objective, "diverged": p.diverged,
                        "startup": p.startup, "best_so_far": b}
                       for i, (p, b) in enumerate(zip(self.points, self.best_so_far,
                                                      strict=True))],
        }


def experiment_progress(store, experiment: str) -> SearchProgress:
    """The progress of a stored experiment (any backend; a running search gives what it has so
    far). ValueError for an unknown experiment or one without trials."""
    found = store.require_experiment(experiment)
    history = sorted(store.history(experiment), key=lambda t: t.trial_id)
    if not history:
        raise ValueError(f"experiment {experiment!r} has no trials yet")
    n_startup = (found.settings.get("tpe") or {}).get("n_startup_jobs")
    points = tuple(
        TrialPoint(t.trial_id, t.state,
                   None if t.state != "done" else (t.result or {}).get("objective"),
                   bool((t.result or {}).get("diverged")),
                   bool((t.misc or {}).get("startup", n_startup is not None and i < n_startup)))
        for i, t in enumerate(history))
    return SearchProgress(experiment, points, n_startup)


def progress_rows(progress: Sequence[SearchProgress]) -> list[dict[str, Any]]:
    """Flat rows (one per trial per experiment) for CSV output."""
    return [{"experiment": p.experiment, "n_startup": p.n_startup, **row}
            for p in progress for row in p.to_dict()["trials"]]

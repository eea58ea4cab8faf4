"""How a search progressed: each trial's objective and the best so far, against trial number.

Trials are numbered in the order the controller created them (their ids), not the order they
finished: with several workers a later trial may finish first, and what a TPE curve should show
is how good the suggestions became as the search went on. The first ``n_startup`` trials are
hyperopt's random startup phase; TPE's model suggests the rest.

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


@dataclass(frozen=True)
class SearchProgress:
    """One experiment's trials in creation order, with the running best."""

    experiment: str
    points: tuple[TrialPoint, ...]
    n_startup: int
    """Trials suggested at random before TPE's model takes over."""

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
        counts: dict[str, int] = {}
        for p in self.points:
            counts[p.state] = counts.get(p.state, 0) + 1
        return counts

    @property
    def diverged(self) -> int:
        return sum(p.diverged for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "n_startup": self.n_startup,
            "trials": [{"trial": i + 1, "trial_id": p.trial_id, "state": p.state,
                        "objective": p.objective, "diverged": p.diverged, "best_so_far": b}
                       for i, (p, b) in enumerate(zip(self.points, self.best_so_far,
                                                      strict=True))],
        }


def experiment_progress(store, experiment: str) -> SearchProgress:
    """The progress of a stored experiment (any backend; a running search gives what it has so
    far). ValueError for an unknown experiment or one without trials."""
    from localrules.analysis.importance import find_experiment
    from localrules.search.settings import SearchSettings

    found = find_experiment(store, experiment)
    history = sorted(store.history(experiment), key=lambda t: t.trial_id)
    if not history:
        raise ValueError(f"experiment {experiment!r} has no trials yet")
    points = tuple(
        TrialPoint(t.trial_id, t.state,
                   None if t.state != "done" else (t.result or {}).get("objective"),
                   bool((t.result or {}).get("diverged")))
        for t in history)
    n_startup = SearchSettings.from_dict(found.settings).tpe.n_startup_jobs
    return SearchProgress(experiment, points, n_startup)


def progress_rows(progress: Sequence[SearchProgress]) -> list[dict[str, Any]]:
    """Flat rows (one per trial per experiment) for CSV output."""
    return [{"experiment": p.experiment, "n_startup": p.n_startup, **row}
            for p in progress for row in p.to_dict()["trials"]]

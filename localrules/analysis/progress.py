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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from localrules.store.references import References, references_of, search_trials


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


@dataclass(frozen=True)
class SearchProgress:
    """One experiment's trials in creation order, with the running best."""

    experiment: str
    points: tuple[TrialPoint, ...]
    n_startup: int | None
    """The TPE setting ``n_startup_jobs`` (None if the experiment does not record it)."""
    references: References = field(default_factory=lambda: References({}, ()))

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
        gap = self.references.gap_closed
        return {
            "experiment": self.experiment,
            "n_startup": self.n_startup,
            "references": self.references.to_dict(),
            "trials": [{"trial": i + 1, "trial_id": p.trial_id, "state": p.state,
                        "objective": p.objective, "gap_closed": gap(p.objective),
                        "diverged": p.diverged, "startup": p.startup,
                        "warm_start": p.warm_start, "best_so_far": b,
                        "best_gap_closed": gap(b)}
                       for i, (p, b) in enumerate(zip(self.points, self.best_so_far,
                                                      strict=True))],
        }


def experiment_progress(store, experiment: str) -> SearchProgress:
    """The progress of a stored experiment (any backend; a running search gives what it has so
    far). ValueError for an unknown experiment or one without trials."""
    found = store.require_experiment(experiment)
    every = store.history(experiment)
    history = sorted(search_trials(every), key=lambda t: t.trial_id)
    if not history:
        raise ValueError(f"experiment {experiment!r} has no search trials yet")
    n_startup = (found.settings.get("tpe") or {}).get("n_startup_jobs")
    points = tuple(
        TrialPoint(t.trial_id, t.state,
                   None if t.state != "done" else (t.result or {}).get("objective"),
                   bool((t.result or {}).get("diverged")),
                   bool((t.misc or {}).get("startup", n_startup is not None and i < n_startup)),
                   (t.misc or {}).get("warm_start"))
        for i, t in enumerate(history))
    references = references_of(every, found.settings.get("references", ()))
    return SearchProgress(experiment, points, n_startup, references)


def progress_rows(progress: Sequence[SearchProgress]) -> list[dict[str, Any]]:
    """Flat rows (one per trial per experiment) for CSV output."""
    return [{"experiment": p.experiment, "n_startup": p.n_startup, **row}
            for p in progress for row in p.to_dict()["trials"]]

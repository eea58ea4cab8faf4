"""What ``localrules search`` shows: a progress bar while it runs and a summary when it ends."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from localrules.cli.tables import fmt
from localrules.store import FINISHED

log = logging.getLogger(__name__)


def summary(session, outcome) -> str:
    """What a finished search prints: counts (trials paused at a lower rung of a multi-fidelity
    search among the done), the references, the trial-epochs spent, the leaderboard of
    full-budget results with each trial's gap closed, and the best full-budget trial."""
    from localrules.cli.trials_cmd import leaderboard
    from localrules.store.documents import best_objective, paused_trial, state_counts
    from localrules.store.references import references_of, search_trials

    trials = outcome.trials
    experiment, space, settings = session.experiment, session.space, session.settings
    references = references_of(trials, settings.references)
    search = search_trials(trials)
    counts = state_counts(search)
    paused = sum(map(paused_trial, search))
    note = f" ({outcome.note})" if outcome.note else ""
    done = f"{counts['done']} done" + (f" ({paused} paused at a lower rung)" if paused else "")
    lines = [f"experiment {experiment.name}{note}: {done}, "
             f"{counts['failed']} failed of {settings.max_trials}; space {space.name}; "
             f"{space.describe_budget()}",
             leaderboard(trials, references)]
    best = best_objective(trials)
    if best is not None:
        gap = references.gap_closed(best.objective)
        lines.append(f"best trial {best.trial_id}: objective {best.objective:.4f}, gap closed "
                     f"{fmt(gap)}; params: {json.dumps(dict(best.params))}")
    return "\n".join(lines)


class Display:
    """A progress bar over finished trials (reference runs included) with running/queued
    counts, the best so far and its gap closed."""

    def __init__(self, settings, enabled: bool) -> None:
        from tqdm.auto import tqdm

        total = settings.max_trials + len(settings.references) * settings.reference_seeds
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled,
                        file=sys.stderr)
        self.last: Any = None

    def __call__(self, status) -> None:
        finished = sum(status.counts[s] for s in FINISHED)
        self.bar.total = max(self.bar.total, sum(status.counts.values()))
        self.bar.n = finished
        best = status.best.objective if status.best is not None else None
        gap = status.references.gap_closed(best)
        self.bar.set_postfix(running=status.counts["running"], queued=status.counts["queued"],
                             best=fmt(best), gap=fmt(gap), refresh=False)
        self.bar.refresh()
        if best is not None and (best, gap) != self.last:
            log.info("best so far: trial %d, objective %.4f, gap closed %s",
                     status.best.trial_id, best, fmt(gap))
            self.last = (best, gap)

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

"""What ``localrules search`` shows: a progress bar while it runs with a line per finished trial
above it (``logs.console`` writes log lines through tqdm) and a summary when it ends."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence

from localrules.cli.tables import fmt
from localrules.store import FINISHED, Trial

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
    counts, the best so far and its gap closed; and one log line per trial as it finishes
    (its objective, gap closed and the best so far), written above the bar. Trials finished
    before (a resumed search) are counted, not listed. ``trials`` reads the experiment's
    trials: when the counts change, and every ``reread`` seconds (a trial that finishes in the
    round another is promoted may leave the counts as they were)."""

    def __init__(self, settings, enabled: bool, trials: Callable[[], Sequence[Trial]],
                 reread: float = 10.0) -> None:
        from tqdm.auto import tqdm

        total = settings.max_trials + len(settings.references) * settings.reference_seeds
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled,
                        file=sys.stderr)
        self.trials = trials
        self.seen = {_finish(t) for t in trials() if t.state in FINISHED}
        self.counts: dict[str, int] | None = None
        self.reread = reread
        self.read_at = time.monotonic()

    def __call__(self, status) -> None:
        finished = sum(status.counts[s] for s in FINISHED)
        self.bar.total = max(self.bar.total, sum(status.counts.values()))
        self.bar.n = finished
        best = status.best.objective if status.best is not None else None
        gap = status.references.gap_closed(best)
        self.bar.set_postfix(running=status.counts["running"], queued=status.counts["queued"],
                             best=fmt(best), gap=fmt(gap), refresh=False)
        self.bar.refresh()
        if status.counts != self.counts or time.monotonic() - self.read_at >= self.reread:
            self.counts, self.read_at = dict(status.counts), time.monotonic()
            for trial in sorted((t for t in self.trials() if t.state in FINISHED
                                 and _finish(t) not in self.seen), key=_finish):
                self.seen.add(_finish(trial))
                log.info("%s", finished_line(trial, status))

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _finish(trial: Trial) -> tuple[float, int]:
    """A trial's finish: a promoted trial (multi-fidelity) finishes again at its next rung."""
    return trial.finished_at or 0.0, trial.trial_id


def finished_line(trial: Trial, status) -> str:
    """``trial 3 done: objective 0.1086, gap closed 0.42; best so far: trial 1, 0.1086`` (a
    reference run, a rung result, a failure said as such)."""
    from localrules.store import DONE
    from localrules.store.documents import paused_trial

    replicate = (trial.reference or {}).get("replicate") or 0
    name = (f"reference {trial.reference.get('rule')}{f' #{replicate}' if replicate else ''} "
            f"(trial {trial.trial_id})" if trial.reference else f"trial {trial.trial_id}")
    if trial.state != DONE:
        reason = (trial.error or "").strip().splitlines()
        return f"{name} {trial.state}" + (f": {reason[-1][:200]}" if reason else "")
    result = trial.result or {}
    rung = f" at {result.get('epochs')} epochs" if paused_trial(trial) else ""
    text = f"{name} done{rung}: objective {fmt(trial.objective)}"
    gap = status.references.result_gap_closed(result)
    if gap is not None:
        text += f", gap closed {fmt(gap)}"
    if status.best is not None:
        best = status.best
        text += f"; best so far: trial {best.trial_id}, {fmt(best.objective)}"
    return text

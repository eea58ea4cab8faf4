"""The search controller: keeps an experiment's queue filled with TPE suggestions.

Each round it returns expired leases to the queue, takes (or renews) the experiment's controller
lock, brings its history up to date with the trials the store has written since the last round
(``search.history.History``: hyperopt's ``Trials`` and the counts are kept between rounds, never
read and decoded whole again) and tops the queue up to ``concurrency`` pending trials without
passing ``max_trials``. Everything it knows is in the store, so it can be killed
and restarted at any moment; the lock keeps a second controller from suggesting for the same
experiment, and trial ids come from the store's counter, so none is ever used twice.

Trials come from ``search.suggest`` (warm starts, then TPE seeded per trial id: the same seed
and the same completion order give the same suggestions). Reference runs (``store.references``)
sit beside the search: queued in the controller's first round, they are not counted in
``max_trials`` and never enter TPE's history, but the search is finished only once they are.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from localrules.search.history import History
from localrules.search.references import new_reference_trials
from localrules.search.settings import SearchSettings
from localrules.search.suggest import Suggester, suggestion_seed, trial_seed
from localrules.spaces import Space
from localrules.store import (
    FAILED,
    Experiment,
    HistoryEntry,
    StoreError,
    Trial,
    TrialStore,
)
from localrules.store.references import References, references_of

__all__ = ["Controller", "ControllerLocked", "Status", "suggestion_seed", "trial_seed"]

log = logging.getLogger(__name__)


class ControllerLocked(StoreError, ValueError):
    """Another controller holds the experiment's lock."""


@dataclass(frozen=True)
class Status:
    """Where a search stands: trial counts (reference runs included), the best search trial,
    search trials created, the references, and whether it is finished."""

    counts: dict[str, int]
    best: Trial | None
    created: int
    finished: bool
    references: References

    @property
    def done(self) -> int:
        return self.counts.get("done", 0)


class Controller:
    """Suggests trials for one experiment. ``step()`` is one round; ``run()`` loops until the
    search is finished."""

    def __init__(self, store: TrialStore, experiment: Experiment, space: Space,
                 settings: SearchSettings, owner: str | None = None,
                 lock_seconds: float = 60.0) -> None:
        self.store = store
        self.experiment = experiment
        self.space = space
        self.settings = settings
        self.suggester = Suggester(store, experiment.name, space, settings)
        self.owner = owner or (
            f"controller:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        self.lock_seconds = lock_seconds
        self.lock_name = f"controller:{experiment.name}"
        self.history = History(space)
        """The experiment's trials as of the last round, and TPE's history of them."""
        self._references_queued = False

    @property
    def domain(self):
        return self.suggester.domain

    # --- one round ----------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Take or renew the experiment's controller lock; ControllerLocked if another holds it."""
        if not self.store.acquire_lock(self.lock_name, self.owner, self.lock_seconds):
            raise ControllerLocked(f"another controller is running experiment "
                                   f"{self.experiment.name!r} in {self.store.url}; stop it "
                                   f"first (or wait {self.lock_seconds:.0f} s for its lock to "
                                   "expire)")

    def release_lock(self) -> None:
        self.store.release_lock(self.lock_name, self.owner)

    @property
    def lock(self) -> tuple[str, str, float]:
        """(name, owner, seconds) of the lock, for a process that renews it on this one's
        behalf (the Ray engine's callback)."""
        return self.lock_name, self.owner, self.lock_seconds

    def step(self) -> int:
        """One round: requeue expired leases, then top up the queue. Returns trials added.

        Raises ControllerLocked if another controller holds this experiment's lock."""
        self.acquire_lock()
        for trial in self.store.requeue_expired(self.settings.max_attempts):
            log.warning("trial %d of %r: lease expired on attempt %d, %s", trial.trial_id,
                        trial.experiment, trial.attempt,
                        "failed" if trial.state == FAILED else "back in the queue")
        if not self._references_queued:
            self.queue_references()
        history = self.history
        history.update(self.store, self.experiment.name)
        n = min(self.settings.concurrency - history.pending,
                self.settings.max_trials - history.created)
        if n <= 0:
            return 0
        try:
            new = self.suggester.suggest(history, n)  # they join the history as pending
            self.store.add_trials(new)
        except BaseException:
            # It may hold trials the store does not: read all again.
            self.history = History(self.space)
            raise
        log.info("queued trial%s %s", "s" if len(new) > 1 else "",
                 ", ".join(str(t.trial_id) for t in new))
        return len(new)

    def queue_references(self) -> list[Trial]:
        """Add the reference runs the experiment still needs (once per controller, under its
        lock): finished ones elsewhere under the same key are copied, the rest queued."""
        trials = new_reference_trials(self.store, self.experiment.name, self.space.budget,
                                      self.settings)
        if trials:
            self.store.add_trials(trials)
        for t in trials:
            source = (t.result or {}).get("reused_from")
            log.info("reference %s (replicate %d): trial %d, %s", t.reference["rule"],
                     t.reference["replicate"], t.trial_id,
                     "queued" if source is None else
                     f"reused from trial {source['trial_id']} of {source['experiment']!r}")
        self._references_queued = True
        return trials

    def suggest(self, stored: Sequence[Trial | HistoryEntry], n: int) -> list[Trial]:
        """``n`` new queued trials: warm starts, then TPE on top of the stored history."""
        return self.suggester.suggest(stored, n)

    # --- the loop -----------------------------------------------------------------------------
    def status(self, history: Sequence[HistoryEntry] | None = None) -> Status:
        """Counts, the best trial, the references and whether the search is finished, from
        ``history`` (without it: the controller's, brought up to date with the store) plus the
        best trial's document."""
        if history is None:
            self.history.update(self.store, self.experiment.name)
        return self._status(self.history if history is None
                            else History.of(history, self.space))

    def _status(self, history: History) -> Status:
        top = history.best()
        best = None if top is None else self.store.get_trial(self.experiment.name, top.trial_id)
        finished = history.created >= self.settings.max_trials and history.pending == 0
        return Status(dict(history.counts), best, history.created, finished,
                      references_of(history.references(), self.settings.references))

    def run(self, poll_seconds: float = 2.0,
            on_status: Callable[[Status], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Status:
        """Rounds until every one of ``max_trials`` trials has finished (or ``should_stop``)."""
        try:
            while True:
                self.step()
                status = self._status(self.history)  # what the round just read and added
                if on_status is not None:
                    on_status(status)
                if status.finished or (should_stop is not None and should_stop()):
                    return status
                time.sleep(poll_seconds)
        finally:
            self.release_lock()

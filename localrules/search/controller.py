"""The search controller: keeps an experiment's queue filled with TPE suggestions.

Each round it returns expired leases to the queue, takes (or renews) the experiment's controller
lock, rebuilds hyperopt's history from the store and tops the queue up to ``concurrency`` pending
trials without passing ``max_trials``. Everything it knows is in the store, so it can be killed
and restarted at any moment; the lock keeps a second controller from suggesting for the same
experiment, and trial ids come from the store's counter, so none is ever used twice.

Suggestions are seeded per trial id from the experiment's seed: the same seed and the same
completion order give the same suggestions. TPE suggests one trial at a time; each new trial goes
into the history as pending before the next is suggested, as in hyperopt's asynchronous runs.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from localrules.search.history import hyperopt_doc, misc_from_doc, rebuild
from localrules.search.settings import SearchSettings
from localrules.spaces import Space
from localrules.store import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    Experiment,
    HistoryEntry,
    StoreError,
    Trial,
    TrialStore,
)
from localrules.store.documents import best_objective, state_counts

log = logging.getLogger(__name__)


class ControllerLocked(StoreError, ValueError):
    """Another controller holds the experiment's lock."""


def suggestion_seed(experiment_seed: int, trial_id: int) -> int:
    """The seed of one trial's suggestion: a function of the experiment's seed and the id."""
    import numpy as np

    return int(np.random.SeedSequence([experiment_seed, trial_id]).generate_state(1)[0]
               % (2**31 - 1))


def trial_seed(experiment_seed: int, trial_id: int) -> int:
    """The seed a trial trains with (weights, data order, noise): distinct per trial."""
    return (experiment_seed * 100_003 + trial_id) % (2**31 - 1)


@dataclass(frozen=True)
class Status:
    """Where a search stands: trial counts, the best result, and whether it is finished."""

    counts: dict[str, int]
    best: Trial | None
    created: int
    finished: bool

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
        self.owner = owner or (
            f"controller:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        self.lock_seconds = lock_seconds
        self.lock_name = f"controller:{experiment.name}"
        self._history: list[HistoryEntry] = []

    @functools.cached_property
    def domain(self):
        from hyperopt.base import Domain

        return Domain(lambda params: 0.0, self.space.to_hyperopt())

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
        stored = self.store.history(self.experiment.name)
        self._history = stored
        counted = [t for t in stored if t.state != CANCELLED]
        pending = sum(t.state in PENDING for t in stored)
        n = min(self.settings.concurrency - pending, self.settings.max_trials - len(counted))
        if n <= 0:
            return 0
        new = self.suggest(stored, n)
        self.store.add_trials(new)
        self._history = [*stored, *(HistoryEntry(t.trial_id, t.state, t.misc, t.result)
                                    for t in new)]
        log.info("queued trial%s %s", "s" if len(new) > 1 else "",
                 ", ".join(str(t.trial_id) for t in new))
        return len(new)

    def suggest(self, stored: Sequence[Trial | HistoryEntry], n: int) -> list[Trial]:
        """``n`` new queued trials suggested by TPE on top of the stored history."""
        from hyperopt import tpe

        history = rebuild(stored)
        ids = self.store.allocate_trial_ids(self.experiment.name, n)
        tpe_settings = self.settings.tpe
        new: list[Trial] = []
        for trial_id in ids:
            # hyperopt suggests at random while it holds fewer trials than n_startup_jobs
            # (queued and running ones count; failed ones, left out of the history, do not).
            startup = len(history.trials) < tpe_settings.n_startup_jobs
            (doc,) = tpe.suggest(
                [trial_id], self.domain, history, suggestion_seed(self.settings.seed, trial_id),
                prior_weight=tpe_settings.prior_weight, n_startup_jobs=tpe_settings.n_startup_jobs,
                n_EI_candidates=tpe_settings.n_ei_candidates, gamma=tpe_settings.gamma,
                verbose=False,
            )
            misc = {**misc_from_doc(doc), "startup": startup}
            params = self.space.params_from_vals(misc["vals"])
            config = self.space.config(params, seed=trial_seed(self.settings.seed, trial_id))
            trial = Trial(experiment=self.experiment.name, trial_id=trial_id,
                          config=config.to_dict(), params=params, misc=misc)
            new.append(trial)
            history.insert_trial_docs([hyperopt_doc(history, trial)])
            history.refresh()
        return new

    # --- the loop -----------------------------------------------------------------------------
    def status(self, history: Sequence[HistoryEntry] | None = None) -> Status:
        """Counts, the best trial and whether the search is finished, from ``history`` (read
        from the store when not given) plus the best trial's document."""
        stored = self.store.history(self.experiment.name) if history is None else history
        counts = state_counts(stored)
        top = best_objective(stored)
        best = None if top is None else self.store.get_trial(self.experiment.name, top.trial_id)
        created = len(stored) - counts[CANCELLED]
        finished = (created >= self.settings.max_trials
                    and all(t.state in FINISHED for t in stored))
        return Status(counts, best, created, finished)

    def run(self, poll_seconds: float = 2.0,
            on_status: Callable[[Status], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Status:
        """Rounds until every one of ``max_trials`` trials has finished (or ``should_stop``)."""
        try:
            while True:
                self.step()
                status = self.status(self._history)  # what the round just read and added
                if on_status is not None:
                    on_status(status)
                if status.finished or (should_stop is not None and should_stop()):
                    return status
                time.sleep(poll_seconds)
        finally:
            self.release_lock()

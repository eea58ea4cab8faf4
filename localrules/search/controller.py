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

Under a multi-fidelity search (``search.fidelity``) each round also promotes the paused trials
ASHA's rule calls for, before topping the queue up: a promotion queues the trial again at its
next rung (``TrialStore.promote``, fenced by the trial's attempt and the controller's lock) and
counts as pending; promoted trials are reserved before new ones (they are older), as ASHA
prefers a promotion to a new trial. The decisions follow from the trial documents alone, so a
restarted controller makes the same ones. A search is finished once ``max_trials`` trials exist,
none is pending and no paused trial is due a promotion.

Only the controller requeues expired leases, so it must not be a single point of failure:

* **Outages.** A round that fails because the database is away (``StoreUnavailable``: SQLite
  locked or unreadable, MongoDB unreachable) is retried with the workers' backoff
  (``store.outage``: doubling from the poll interval up to a minute), logged as a warning, and
  the loop resumes when the database is back. An outage longer than ``outage_seconds`` (10
  minutes by default) ends the run with a ``StoreUnavailable`` (the CLI exits 1 with the
  message); running the search again resumes it.
* **Restart after a crash.** The lock's owner names its holder by host, boot, pid namespace, pid
  and process start time (``store.holder``). A new controller on the same host that finds the
  lock held by a process that no longer runs (a killed controller; its pid gone or reused by
  another process) takes the lock over at once instead of waiting for its lease to expire.
* **Fencing.** Every acquisition by a new holder raises the lock's generation. The controller
  keeps the lock state it took (owner and generation) and passes it as ``fence`` to each write
  that acts on the search (requeueing leases, queueing trials, updating settings): the store
  makes the write only while the lock still has that owner and generation (SQLite: in the
  write's own transaction; MongoDB: checked right before and after, see ``store/mongo.py``). A
  controller that finds it has lost its lock (another holds it, or it was held by another in
  between, so the generation moved) raises ``ControllerFenced`` and stops: it never acts on
  the state it had; running the search again starts from the store.
* **A second controller elsewhere.** Started on another host (or in another pid namespace)
  while the first one runs, it cannot tell whether the holder is alive, so it refuses to start
  (``ControllerLocked``: "another controller is running ...", naming the holder and when its
  lease ends). If the first one died, the second can start once the lease (``lock_seconds``,
  60 s) has expired. If the first one was only paused past its lease (a frozen VM, a long
  outage on its side) and the second took over, the first is fenced out at its next write or
  round and exits with ``ControllerFenced``; trials it queued are never duplicated (ids come
  from the store's counter) and it queues nothing once the lock has moved.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from localrules.search.fidelity import promotions
from localrules.search.history import History
from localrules.search.references import new_reference_trials
from localrules.search.settings import SearchSettings
from localrules.search.suggest import Suggester, suggestion_seed, trial_seed
from localrules.spaces import Space
from localrules.store import (
    FAILED,
    QUEUED,
    Experiment,
    HistoryEntry,
    LockLost,
    LockState,
    StoreError,
    StoreUnavailable,
    Trial,
    TrialStore,
)
from localrules.store.holder import Holder, is_dead, this_process
from localrules.store.outage import Outage
from localrules.store.references import References, references_of

__all__ = ["Controller", "ControllerFenced", "ControllerLocked", "Status", "suggestion_seed",
           "trial_seed"]

log = logging.getLogger(__name__)
PROMOTIONS = f"{__name__}.promotions"
"""The logger of a multi-fidelity search's promotions: a search's own progress, shown with its
finished trials at the default level (``cli.main.log_levels``)."""
promotion_log = logging.getLogger(PROMOTIONS)


class ControllerLocked(StoreError, ValueError):
    """Another controller holds the experiment's lock."""


class ControllerFenced(LockLost):
    """This controller held the experiment's lock and lost it to another: it stops acting (a
    database error: exit 1)."""


OUTAGE_SECONDS = 600.0
"""How long a controller's rounds retry a database that is away before it gives up."""


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
                 lock_seconds: float = 60.0, outage_seconds: float | None = OUTAGE_SECONDS
                 ) -> None:
        self.store = store
        self.experiment = experiment
        self.space = space
        self.settings = settings
        self.suggester = Suggester(store, experiment.name, space, settings)
        self.holder = this_process("controller")
        """Who this controller is (host, boot, pid, start time): its lock's owner."""
        self.owner = owner or self.holder.owner()
        self.lock_seconds = lock_seconds
        self.outage_seconds = outage_seconds
        """Retry rounds against a database that is away this long (None: for ever)."""
        self.lock_name = f"controller:{experiment.name}"
        self.fence: LockState | None = None
        """The lock as this controller took it (its generation): what its writes are fenced
        by. None until it first holds the lock."""
        self.fenced_out = False
        """Set once this controller has lost its lock: it never acts again."""
        self.history = self._new_history()
        """The experiment's trials as of the last round, and TPE's history of them."""
        self._references_queued = False

    def _new_history(self) -> History:
        return History(self.space, self.settings.tpe.n_startup_jobs)

    @property
    def domain(self):
        return self.suggester.domain

    # --- one round ----------------------------------------------------------------------------
    def acquire_lock(self) -> LockState:
        """Take or renew the experiment's controller lock, taking it over at once from a
        holder on this host that no longer runs. ``ControllerLocked`` if another holds it;
        ``ControllerFenced`` if this controller held it and another has taken it since."""
        if self.fenced_out:
            raise ControllerFenced(self._fenced())
        state = self.store.take_lock(self.lock_name, self.owner, self.lock_seconds)
        if not state.held_by(self.owner) and is_dead(state.owner, self.holder):
            log.warning("experiment %r: the controller lock is held by %s, which no longer "
                        "runs; taking it over", self.experiment.name, _holder(state.owner))
            state = self.store.take_lock(self.lock_name, self.owner, self.lock_seconds,
                                         replacing=state.owner)
        if self.fence is not None and (not state.held_by(self.owner)
                                       or state.generation != self.fence.generation):
            self.fenced_out = True
            if state.held_by(self.owner):  # retaken after another held it: let it go again
                self.release_lock()
            raise ControllerFenced(self._fenced(state))
        if not state.held_by(self.owner):
            left = max(0.0, state.expires - time.time())
            raise ControllerLocked(f"another controller is running experiment "
                                   f"{self.experiment.name!r} in {self.store.url} "
                                   f"({_holder(state.owner)}); stop it first (or, if it is "
                                   f"gone, wait {left:.0f} s for its lock to expire)")
        self.fence = state
        return state

    def _fenced(self, state: LockState | None = None) -> str:
        now = "" if state is None or not state.owner else (
            f" (now held by {_holder(state.owner)}, generation {state.generation})")
        return (f"this controller lost experiment {self.experiment.name!r}'s lock in "
                f"{self.store.url}{now}: another controller took over; this one stops rather "
                "than act on stale state. Stop the other one and run the search again to "
                "resume")

    def release_lock(self) -> None:
        """Give the lock up (best effort: if the database is away, the lease expires, and a
        controller restarted on this host takes it over at once anyway)."""
        try:
            self.store.release_lock(self.lock_name, self.owner)
        except StoreError as err:
            log.warning("controller lock of %r not released (%s); it expires in %.0f s",
                        self.experiment.name, err, self.lock_seconds)
        self.fence = None

    @property
    def lock(self) -> tuple[str, str, float]:
        """(name, owner, seconds) of the lock, for a process that renews it on this one's
        behalf (the Ray engine's callback)."""
        return self.lock_name, self.owner, self.lock_seconds

    def step(self) -> int:
        """One round: requeue expired leases, then top up the queue. Returns trials added.

        Raises ControllerLocked if another controller holds this experiment's lock,
        ControllerFenced if this one lost it (nothing is written then)."""
        try:
            return self._step()
        except ControllerFenced:
            raise
        except LockLost as err:  # a fenced write found the lock moved
            self.fenced_out = True
            raise ControllerFenced(f"{self._fenced()} ({err})") from None

    def _step(self) -> int:
        self.acquire_lock()
        for trial in self.store.requeue_expired(self.settings.max_attempts, fence=self.fence):
            log.warning("trial %d of %r: lease expired on attempt %d, %s", trial.trial_id,
                        trial.experiment, trial.attempt,
                        "failed" if trial.state == FAILED else "back in the queue")
        if not self._references_queued:
            self.queue_references()
        history = self.history
        history.update(self.store, self.experiment.name)
        self.promote(history)
        n = min(self.settings.concurrency - history.pending,
                self.settings.max_trials - history.created)
        if n <= 0:
            return 0
        try:
            new = self.suggester.suggest(history, n)  # they join the history as pending
            self.store.add_trials(new, fence=self.fence)
        except BaseException:
            # It may hold trials the store does not: read all again.
            self.history = self._new_history()
            raise
        log.info("queued trial%s %s", "s" if len(new) > 1 else "",
                 ", ".join(str(t.trial_id) for t in new))
        return len(new)

    def promote(self, history: History) -> list[int]:
        """Make the promotions ASHA's rule calls for now (``search.fidelity.promotions``, from
        the trial documents alone, so a restarted controller makes the same ones), each in the
        store, fenced by the trial's attempt and this controller's lock; the history shows them
        queued again. Returns the trial ids promoted."""
        fidelity = self.settings.fidelity
        if not fidelity.enabled or self.settings.engine != "store":
            return []
        made = []
        for entry, target in promotions(history.values(), fidelity, self.space.budget.epochs):
            if self.store.promote(self.experiment.name, entry.trial_id, entry.attempt, target,
                                  fence=self.fence):
                made.append(dataclasses.replace(entry, state=QUEUED, fidelity=target))
                promotion_log.info(
                    "trial %d promoted to rung %d (%d epochs): objective %.4f at rung %d is in "
                    "the top 1/%d", entry.trial_id, target["rung"], target["epochs"],
                    entry.result["objective"], target["rung"] - 1, fidelity.reduction_factor)
        history.apply(made)
        return [e.trial_id for e in made]

    def queue_references(self) -> list[Trial]:
        """Add the reference runs the experiment still needs (once per controller, under its
        lock): finished ones elsewhere under the same key are copied, the rest queued."""
        trials = new_reference_trials(self.store, self.experiment.name, self.space.budget,
                                      self.settings)
        if trials:
            self.store.add_trials(trials, fence=self.fence)
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
                            else History.of(history, self.space,
                                                self.settings.tpe.n_startup_jobs))

    def _status(self, history: History) -> Status:
        top = history.best()
        try:
            best = None if top is None else self.store.get_trial(self.experiment.name,
                                                                 top.trial_id)
        except StoreUnavailable as err:  # the counts stand; the best trial's document waits
            log.warning("best trial %d not read: %s", top.trial_id, err)
            best = None
        finished = history.created >= self.settings.max_trials and history.pending == 0
        return Status(dict(history.counts), best, history.created, finished,
                      references_of(history.references(), self.settings.references))

    def run(self, poll_seconds: float = 2.0,
            on_status: Callable[[Status], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Status:
        """Rounds until every one of ``max_trials`` trials has finished (or ``should_stop``).

        A round that fails because the database is away is retried (module docstring); after
        ``outage_seconds`` of failures, ``StoreUnavailable``."""
        stop = should_stop or (lambda: False)
        outage = Outage(poll_seconds, self.outage_seconds)
        try:
            while True:
                try:
                    self.step()
                    status = self._status(self.history)  # what the round just read and added
                except StoreUnavailable as err:
                    wait = outage.failed()
                    if outage.exhausted():
                        raise StoreUnavailable(
                            f"the database has been unreachable for {outage.seconds:.0f} s; "
                            f"the controller of {self.experiment.name!r} gives up (run the "
                            f"search again once it is back): {err}") from None
                    log.warning("controller round failed, the database is away (%s); "
                                "retrying in %.0f s", err, wait)
                    if _wait(wait, stop):
                        return self._status(self.history)  # as of the last round read
                    continue
                outage.recovered()
                if on_status is not None:
                    on_status(status)
                if status.finished or stop():
                    return status
                time.sleep(poll_seconds)
        finally:
            self.release_lock()


def _holder(owner: str) -> str:
    """A lock owner for messages: ``controller pid N on host`` or the string as stored."""
    holder = Holder.parse(owner)
    return holder.describe() if holder is not None else repr(owner)


def _wait(seconds: float, stop: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` in short slices; True as soon as ``stop()`` says so."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop():
            return True
        time.sleep(min(left, 0.5))
    return stop()

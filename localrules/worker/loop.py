"""The worker loop: reserve a trial, hold its lease, train it, report, move on.

A trial whose config fails validation (with any exception: a hostile config may raise anything)
is marked failed without running anything, and the loop takes the next one; an exception
while training fails that trial with its error and the loop continues; a lost lease abandons the
trial without writing to the database or the trial's files; SIGTERM (or ``should_stop``) during
training checkpoints, hands the trial back to the queue and ends the loop (the next holder
resumes from the checkpoint). A database that is briefly away is retried.

The worker keeps its record in the store (``store.workers``): who it is when it starts, its
status and the trial it holds while it waits (at most once per ``lease/4`` or poll interval)
and while it trains (at each heartbeat), and an event at every reservation, final write, hand-
back, lost lease and stop. The record is informative: a failed write of it is logged at WARNING
and training goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localrules.results import at_rung
from localrules.runs import trial_dir
from localrules.store import LeaseLost, StoreError, Trial, TrialStore
from localrules.store.documents import progress_document
from localrules.store.outage import MAX_BACKOFF, backoff_seconds
from localrules.store.workers import (
    COMPLETED,
    FAILED,
    IDLE,
    LEASE_LOST,
    RELEASED,
    RESERVED,
    STARTED,
    STOPPED,
    STOPPING,
    TRAINING,
    WorkerFacts,
    held_trial,
    worker_event,
)
from localrules.validation import DURATION, INTERVAL, TRIALS
from localrules.worker.heartbeat import Heartbeat
from localrules.worker.reference_guard import ReferenceGuard
from localrules.worker.spool import Spool
from localrules.worker.trial_runner import train_trial, validate_config

log = logging.getLogger(__name__)

__all__ = ["MAX_BACKOFF", "Worker", "WorkerStats"]


@dataclass
class WorkerStats:
    completed: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)
    abandoned: list[tuple[str, int]] = field(default_factory=list)
    released: list[tuple[str, int]] = field(default_factory=list)


class Worker:
    """Runs trials from a store until it is idle for ``idle_exit`` seconds, has run
    ``max_trials`` trials, or is stopped."""

    def __init__(
        self,
        store: TrialStore,
        artifacts: str | Path,
        *,
        experiments: Sequence[str] | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 60.0,
        heartbeat_seconds: float | None = None,
        poll_seconds: float = 1.0,
        idle_exit: float | None = None,
        max_trials: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        trainer: Callable[..., dict[str, Any]] = train_trial,
        spool: Spool | None = None,
    ) -> None:
        INTERVAL.check_parameter("lease_seconds", lease_seconds)
        INTERVAL.check_parameter("poll_seconds", poll_seconds)
        if heartbeat_seconds is not None:
            INTERVAL.check_parameter("heartbeat_seconds", heartbeat_seconds)
        if idle_exit is not None:
            DURATION.check_parameter("idle_exit", idle_exit)
        if max_trials is not None:
            TRIALS.check_parameter("max_trials", max_trials)
        self.store = store
        self.artifacts = str(artifacts)
        self.experiments = None if experiments is None else list(experiments)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.idle_exit = idle_exit
        self.max_trials = max_trials
        self.should_stop = should_stop or (lambda: False)
        self.train = trainer
        self.spool = spool
        """Where final writes wait while the database is away (None: such a write raises)."""
        self.stats = WorkerStats()
        self._stopping = False
        self._wake = threading.Event()
        """Set by SIGTERM so that a wait for the database or the queue ends at once."""
        self._beat: Heartbeat | None = None
        """The heartbeat of the trial being run, from its reservation on."""
        self._record_every = max(poll_seconds, (heartbeat_seconds or lease_seconds / 4))
        """The least time between two writes of the worker's record while it waits."""
        self._record_due = 0.0
        """When (monotonic) the record may next be written while waiting, or after a failure."""

    def stopping(self) -> bool:
        return self._stopping or self.should_stop()

    def run(self) -> WorkerStats:
        """Loop until idle for ``idle_exit`` s, ``max_trials`` run, or a stop (SIGTERM or
        ``should_stop``); a stop during a trial checkpoints it and hands it back first."""
        previous = signal.getsignal(signal.SIGTERM)
        in_main = _in_main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        self._record(IDLE, event=worker_event(STARTED), facts=WorkerFacts.here(self.experiments))
        try:
            idle_since = time.monotonic()
            ran = failures = 0
            while not self.stopping():
                if self.max_trials is not None and ran >= self.max_trials:
                    break
                if self.spool is not None:
                    self.spool.flush(self.store)
                try:
                    trial = self.store.reserve(self.worker_id, self.lease_seconds,
                                               self.experiments)
                    failures = 0
                except StoreError as err:  # the database is away: back off, try again
                    failures += 1
                    wait = backoff_seconds(failures, self.poll_seconds)
                    log.warning("worker %s: cannot reserve (%s); retrying in %.0f s",
                                self.worker_id, err, wait)
                    self._wake.wait(wait)
                    continue
                if trial is None:
                    if time.monotonic() >= self._record_due:
                        self._record(IDLE)
                    if self.idle_exit is not None \
                            and time.monotonic() - idle_since >= self.idle_exit:
                        log.info("worker %s: idle for %.0f s, exiting", self.worker_id,
                                 self.idle_exit)
                        break
                    self._wake.wait(self.poll_seconds)
                    continue
                ran += 1
                self._event(RESERVED, trial, TRAINING)
                if self.stopping():  # the stop came while reserving: hand it straight back
                    self._hand_back(trial, f"trial {trial.trial_id} of {trial.experiment!r}")
                    break
                with self._heartbeat(trial):  # from reservation on: validation, imports are slow
                    self.run_trial(trial)
                idle_since = time.monotonic()
        finally:
            self._record(STOPPED, event=worker_event(STOPPED), force=True)
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            if self.spool is not None:
                self.spool.flush(self.store)
                left = len(self.spool.pending(self.store))
                if left:
                    log.warning("worker %s: %d write(s) still spooled in %s; the next worker "
                                "on this host delivers them", self.worker_id, left,
                                self.spool.directory)
        return self.stats

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.info("worker %s: SIGTERM, stopping (a running trial checkpoints and goes back to "
                 "the queue)", self.worker_id)
        self._stopping = True
        self._wake.set()

    def _hand_back(self, trial: Trial, ident: str) -> None:
        log.info("%s: stopping, handing it back to the queue", ident)
        if self._write(self.store.release, trial):
            self.stats.released.append((trial.experiment, trial.trial_id))
            self._event(RELEASED, trial, STOPPING)
        else:
            self._event(LEASE_LOST, trial, STOPPING)

    def _record(self, status: str, trial: Trial | None = None,
                event: dict[str, Any] | None = None, facts: WorkerFacts | None = None,
                force: bool = False) -> None:
        """Write the worker's record (``TrialStore.record_worker``), never raising (a failure is
        logged). A plain beat is skipped until ``_record_every`` has passed since the last write;
        an event, the facts or ``force`` are written at once."""
        now = time.monotonic()
        if not force and event is None and facts is None and now < self._record_due:
            return
        self._record_due = now + self._record_every
        held = None if trial is None else held_trial(
            trial.experiment, trial.trial_id, trial.attempt, time.time() + self.lease_seconds)
        try:
            self.store.record_worker(self.worker_id, status, held, event, facts)
        except Exception as err:  # informative only: never stop a worker for it
            log.warning("worker %s: its record is not written (%s)", self.worker_id, err)

    def _event(self, kind: str, trial: Trial, status: str = IDLE, detail: str | None = None,
               ) -> None:
        """Log ``kind`` about ``trial`` on the worker's record (held while ``training``)."""
        self._record(status, trial if status == TRAINING else None,
                     worker_event(kind, trial.experiment, trial.trial_id, trial.attempt, detail),
                     force=True)

    def run_trial(self, trial: Trial) -> None:
        key = (trial.experiment, trial.trial_id)
        ident = f"trial {trial.trial_id} of {trial.experiment!r} (attempt {trial.attempt})"
        try:
            config = validate_config(trial.config)
        except Exception as err:  # whatever a hostile config raises: that trial fails, not us
            reason = err if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            log.error("%s has an invalid config, not run: %.500s", ident, reason)
            self._write(self.store.fail, trial, f"invalid trial config: {reason}"[:4000])
            self.stats.failed.append(key)
            self._event(FAILED, trial, detail=f"invalid trial config: {reason}")
            return
        log.info("%s: training %s/%s on %s", ident, config.rule.kind, config.model,
                 config.dataset)
        with self._reference_guard(trial) as guard:  # released after the final write
            self._train_and_report(trial, config, guard, ident)

    def _train_and_report(self, trial: Trial, config, guard: ReferenceGuard | None,
                          ident: str) -> None:
        """Train under a heartbeat (a reference run first reuses or locks its key), then make
        the final write."""
        from localrules.train.trainer import RunAbandoned

        key = (trial.experiment, trial.trial_id)
        out_dir = trial_dir(self.artifacts, trial)
        _warn_without_checkpoint(trial, out_dir, ident)
        with self._heartbeat(trial) as beat:
            if guard is not None:
                beat.also.append(guard.renew)

            def on_epoch(record: dict[str, Any]) -> None:
                try:
                    self.store.report_progress(
                        trial.experiment, trial.trial_id, trial.attempt,
                        progress_document(record, config.run.epochs, out_dir))
                except LeaseLost:
                    beat.lost.set()
                except StoreError as err:  # progress is informative; training goes on
                    log.warning("%s: progress not recorded (%s)", ident, err)

            def stop() -> bool:
                return self.stopping() or beat.lost.is_set()

            try:
                copied = guard.acquire(stop) if guard is not None else None
                if copied is not None:  # trained elsewhere under the same key
                    result = copied
                elif guard is not None and not guard.held:  # stopped while waiting
                    result = {"interrupted": True}
                else:
                    result = self.train(config, out_dir, on_epoch=on_epoch, should_stop=stop,
                                        may_write=lambda: not beat.lost.is_set(),
                                        **self._rung(trial))
            except (RunAbandoned, LeaseLost):
                result = None
            except Exception as err:  # one bad trial must not stop the worker
                log.exception("%s failed", ident)
                self._write(self.store.fail, trial, _error_text(err))
                self.stats.failed.append(key)
                self._event(FAILED, trial, detail=f"{type(err).__name__}: {err}")
                return
        if result is None or beat.lost.is_set():
            log.warning("%s: lease lost, abandoning the trial", ident)
            self.stats.abandoned.append(key)
            self._event(LEASE_LOST, trial, detail="abandoned")
        elif result.get("interrupted"):  # only a stop request interrupts a run
            self._stopping = True
            self._hand_back(trial, ident)
        elif self._write(self.store.complete, trial,
                         result := at_rung(result, trial.fidelity, trial.result,
                                           config.run.epochs)):
            log.info("%s %s: objective %.4f%s", ident,
                     f"paused at rung {result['rung']}" if result.get("stopped_early")
                     else "done", result["objective"],
                     " (diverged)" if result.get("diverged") else "")
            self.stats.completed.append(key)
            self._event(COMPLETED, trial, detail=f"objective {result['objective']:.4f}")
        else:
            self.stats.abandoned.append(key)
            self._event(LEASE_LOST, trial, detail="result refused: the lease had passed on")

    @staticmethod
    def _rung(trial: Trial) -> dict[str, Any]:
        """The trainer's stop under a multi-fidelity search: the trial's rung's epochs (it
        resumes from its checkpoint when promoted); nothing for a trial trained fully."""
        return {} if trial.fidelity is None else {"until_epoch": int(trial.fidelity["epochs"])}

    @contextlib.contextmanager
    def _heartbeat(self, trial: Trial) -> Iterator[Heartbeat]:
        """The trial's lease-renewing heartbeat: the one already beating for it (started at
        reservation, before anything slow), else a new one for the block."""
        if self._beat is not None and self._beat.trial is trial:
            try:
                yield self._beat
            finally:  # stopped before the final write, as a heartbeat of its own would be
                self._beat.__exit__(None, None, None)
            return
        with Heartbeat(self.store, trial, self.lease_seconds, self.heartbeat_seconds) as beat:
            beat.also.append(lambda: self._record(TRAINING, trial, force=True))
            self._beat = beat
            try:
                yield beat
            finally:
                self._beat = None

    @contextlib.contextmanager
    def _reference_guard(self, trial: Trial) -> Iterator[ReferenceGuard | None]:
        """For a reference run, the guard that reuses or locks its key, released once the
        trial's final write is made (so nobody else takes the key before the result is in);
        None for a search trial."""
        if trial.reference is None:
            yield None
            return
        guard = ReferenceGuard(self.store, trial, self.worker_id, self.lease_seconds, self._wake,
                               poll_seconds=self.poll_seconds)
        try:
            yield guard
        finally:
            guard.release()

    def _write(self, method: Callable[..., None], trial: Trial, *args: Any) -> bool:
        """A fenced write; False (and nothing written) if the lease has passed on. With the
        database away, the write is spooled (True: it will be delivered, fenced, later)."""
        try:
            method(trial.experiment, trial.trial_id, trial.attempt, *args)
            return True
        except LeaseLost as err:
            log.warning("%s", err)
            return False
        except StoreError as err:
            if self.spool is None:
                raise
            try:
                path = self.spool.add(self.store, method.__name__, trial, *args)
            except OSError as spool_err:
                log.error("database unreachable (%s) and the spool is not writable (%s): the "
                          "%s of trial %d is lost; its lease will expire and it will be redone",
                          err, spool_err, method.__name__, trial.trial_id)
                return False
            log.warning("database unreachable (%s); %s of trial %d spooled in %s", err,
                        method.__name__, trial.trial_id, path)
            return True


def _warn_without_checkpoint(trial: Trial, out_dir: str, ident: str) -> None:
    """A promoted trial resumes from the checkpoint its last rung left; when this worker cannot
    see it (artifacts on a disk of another machine), it trains from epoch 0 to the same result
    at a cost, and says so."""
    from localrules.runs import RunDirectory, listdir

    fidelity = trial.fidelity
    if fidelity is None or fidelity["rung"] == fidelity["bracket"]:
        return
    if not listdir(RunDirectory(out_dir).checkpoints):
        log.warning("%s was promoted to rung %d but its checkpoint is not in %s: training it "
                    "again from epoch 0 (on a cluster, give every worker the same --artifacts: "
                    "a shared path or gs://)", ident, fidelity["rung"], out_dir)


def _error_text(err: BaseException, limit: int = 4000) -> str:
    """The exception, then the end of its traceback, for the trial's ``error`` field."""
    last = "".join(traceback.format_exception_only(type(err), err)).strip()
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__)).strip()
    return f"{last}\n\n{trace[-limit:]}"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

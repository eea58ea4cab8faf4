"""The worker loop: reserve a trial, hold its lease, train it, report, move on.

A trial whose config fails validation is marked failed without running anything; an exception
while training fails that trial with its error and the loop continues; a lost lease abandons the
trial without writing; SIGTERM during training checkpoints, hands the trial back to the queue and
ends the loop (the trainer saves a checkpoint, the next holder resumes from it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localrules.store import LeaseLost, Trial, TrialStore
from localrules.worker.heartbeat import Heartbeat
from localrules.worker.trial_runner import progress_document, train_trial, validate_config

log = logging.getLogger(__name__)


class _Abandon(Exception):
    """Raised from the epoch callback when the lease is gone: stop training, write nothing."""


def trial_dir(artifacts: str, trial: Trial) -> str:
    """Where a trial's checkpoints, history and TensorBoard files go."""
    return f"{str(artifacts).rstrip('/')}/{trial.experiment}/trial-{trial.trial_id:05d}"


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
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease_seconds}")
        self.store = store
        self.artifacts = str(artifacts)
        self.experiments = list(experiments) if experiments else None
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.idle_exit = idle_exit
        self.max_trials = max_trials
        self.should_stop = should_stop or (lambda: False)
        self.train = trainer
        self.stats = WorkerStats()
        self._stopping = False

    def run(self) -> WorkerStats:
        previous = signal.getsignal(signal.SIGTERM)
        in_main = _in_main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            idle_since = time.monotonic()
            ran = 0
            while not (self._stopping or self.should_stop()):
                if self.max_trials is not None and ran >= self.max_trials:
                    break
                trial = self.store.reserve(self.worker_id, self.lease_seconds, self.experiments)
                if trial is None:
                    if self.idle_exit is not None \
                            and time.monotonic() - idle_since >= self.idle_exit:
                        log.info("worker %s: idle for %.0f s, exiting", self.worker_id,
                                 self.idle_exit)
                        break
                    time.sleep(self.poll_seconds)
                    continue
                ran += 1
                self.run_trial(trial)
                idle_since = time.monotonic()
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        return self.stats

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.info("worker %s: SIGTERM while idle, exiting", self.worker_id)
        self._stopping = True

    def run_trial(self, trial: Trial) -> None:
        key = (trial.experiment, trial.trial_id)
        ident = f"trial {trial.trial_id} of {trial.experiment!r} (attempt {trial.attempt})"
        try:
            config = validate_config(trial.config)
        except ValueError as err:
            log.error("%s has an invalid config, not run: %s", ident, err)
            self._write(self.store.fail, trial, f"invalid trial config: {err}")
            self.stats.failed.append(key)
            return
        log.info("%s: training %s/%s on %s", ident, config.rule.kind, config.model,
                 config.dataset)
        with Heartbeat(self.store, trial, self.lease_seconds, self.heartbeat_seconds) as beat:
            def on_epoch(record: dict[str, Any]) -> None:
                if beat.lost.is_set():
                    raise _Abandon
                self.store.report_progress(trial.experiment, trial.trial_id, trial.attempt,
                                           progress_document(record, config.run.epochs))

            try:
                result = self.train(config, trial_dir(self.artifacts, trial), on_epoch=on_epoch)
            except (_Abandon, LeaseLost):
                log.warning("%s: lease lost, abandoning the trial", ident)
                self.stats.abandoned.append(key)
                return
            except Exception as err:  # one bad trial must not stop the worker
                log.error("%s failed: %s", ident, err)
                text = "".join(traceback.format_exception_only(type(err), err)).strip()
                self._write(self.store.fail, trial, text)
                self.stats.failed.append(key)
                return
        if result.get("interrupted"):
            log.info("%s interrupted: checkpointed, handing it back to the queue", ident)
            self._write(self.store.release, trial)
            self.stats.released.append(key)
            self._stopping = True
            return
        if self._write(self.store.complete, trial, result):
            log.info("%s done: objective %.4f%s", ident, result["objective"],
                     " (diverged)" if result.get("diverged") else "")
            self.stats.completed.append(key)
        else:
            self.stats.abandoned.append(key)

    def _write(self, method: Callable[..., None], trial: Trial, *args: Any) -> bool:
        """A fenced write; False (and nothing written) if the lease has passed on."""
        try:
            method(trial.experiment, trial.trial_id, trial.attempt, *args)
            return True
        except LeaseLost as err:
            log.warning("%s", err)
            return False


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

"""A reference run is trained once across the whole store.

Before a worker trains a reference run it looks for a finished run with the same key (another
experiment's, trained under the same budget, seed and code): if there is one, the trial is
completed with a copy of its result. Otherwise it takes the key's store-wide lock and trains,
renewing the lock from the trial's heartbeat; while another process holds the lock (training the
same run for another experiment right now) it waits, keeping its own lease, and copies that
result when it lands. A holder that dies lets its lock expire, and a waiting worker takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from localrules.store import Trial, TrialStore
from localrules.store.references import claim, finished_run, release, reused_result

log = logging.getLogger(__name__)


class ReferenceGuard:
    def __init__(self, store: TrialStore, trial: Trial, owner: str, lease_seconds: float,
                 wake: threading.Event, poll_seconds: float = 5.0) -> None:
        self.store = store
        self.key = trial.reference["key"]
        self.trial = trial
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.wake = wake
        self.poll_seconds = poll_seconds
        self.held = False

    def acquire(self, stopping: Callable[[], bool]) -> dict[str, Any] | None:
        """A copied result when a run with this key has finished (nothing to train); None once
        this worker holds the key's lock (train it), or when asked to stop first (``held`` is
        False then)."""
        announced = False
        while not stopping():
            source = finished_run(self.store, self.key)
            if source is not None:
                log.info("trial %d of %r: reference %s already trained as trial %d of %r; "
                         "reusing its result", self.trial.trial_id, self.trial.experiment,
                         self.trial.reference["rule"], source.trial_id, source.experiment)
                return reused_result(source)
            if claim(self.store, self.key, self.owner, self.lease_seconds):
                self.held = True
                return None
            if not announced:
                log.info("trial %d of %r: reference %s is being trained elsewhere; waiting for "
                         "its result", self.trial.trial_id, self.trial.experiment,
                         self.trial.reference["rule"])
                announced = True
            self.wake.wait(self.poll_seconds)
        return None

    def renew(self) -> None:
        if self.held:
            claim(self.store, self.key, self.owner, self.lease_seconds)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                release(self.store, self.key, self.owner)
            except Exception as err:  # it expires on its own
                log.warning("reference lock %s not released (%s); it expires in %.0f s",
                            self.key, err, self.lease_seconds)

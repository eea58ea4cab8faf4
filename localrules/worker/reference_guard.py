"""A reference run is trained once across the whole store.

Before a worker trains a reference run it looks for a finished run with the same key (another
experiment's, trained under the same budget, seed and code): if there is one, the trial is
completed with a copy of its result. Otherwise it takes the key's store-wide lock and trains,
renewing the lock from the trial's heartbeat and releasing it only after the trial's result is
written; while another process holds the lock (training the same run for another experiment
right now) it waits, keeping its own lease, and copies that result when it lands. A holder that
dies lets its lock expire, and a waiting worker takes over. While the database is away the wait
goes on (as reservations do). One gap remains: a result spooled during an outage is not in the
database, so a waiting worker may take the key once its lock expires and train the run again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from localrules.store import StoreError, Trial, TrialStore
from localrules.store.references import claim, finished_run, release, reused_result

log = logging.getLogger(__name__)


class ReferenceGuard:
    def __init__(self, store: TrialStore, trial: Trial, worker: str, lease_seconds: float,
                 wake: threading.Event, poll_seconds: float = 5.0) -> None:
        self.store = store
        self.key = trial.reference["key"]
        self.trial = trial
        # Unique even when two workers share a --name: a lock renews for the same owner.
        self.owner = f"{worker}:{uuid.uuid4().hex[:8]}"
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
            try:
                source = finished_run(self.store, self.key)
                if source is None and claim(self.store, self.key, self.owner,
                                            self.lease_seconds):
                    self.held = True
                    return None
            except StoreError as err:  # the database is away: keep waiting, as reserve does
                log.warning("reference %s: cannot reach the database (%s); retrying",
                            self.trial.reference["rule"], err)
                self.wake.wait(self.poll_seconds)
                continue
            if source is not None:
                log.info("trial %d of %r: reference %s already trained as trial %d of %r; "
                         "reusing its result", self.trial.trial_id, self.trial.experiment,
                         self.trial.reference["rule"], source.trial_id, source.experiment)
                return reused_result(source)
            if not announced:
                log.info("trial %d of %r: reference %s is being trained elsewhere; waiting for "
                         "its result", self.trial.trial_id, self.trial.experiment,
                         self.trial.reference["rule"])
                announced = True
            self.wake.wait(self.poll_seconds)
        return None

    def renew(self) -> None:
        """Called from the trial's heartbeat while it trains."""
        if self.held and not claim(self.store, self.key, self.owner, self.lease_seconds):
            log.warning("reference %s: the key's lock lapsed and another process took it; "
                        "this run goes on, and whichever finishes first is reused",
                        self.trial.reference["rule"])

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                release(self.store, self.key, self.owner)
            except Exception as err:  # it expires on its own
                log.warning("reference lock %s not released (%s); it expires in %.0f s",
                            self.key, err, self.lease_seconds)

"""A lease-renewing thread, independent of training: a long step never lets a lease lapse.

It renews every ``interval`` seconds. When the store says the lease is gone (the trial was
requeued, cancelled or finished elsewhere) it sets ``lost``; the worker checks that flag between
epochs and abandons the trial without writing anything. Other store errors (a database that is
briefly away) are logged and retried at the next beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from localrules.store import LeaseLost, Trial, TrialStore

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, store: TrialStore, trial: Trial, lease_seconds: float,
                 interval: float | None = None) -> None:
        self.also: list[Callable[[], None]] = []
        """More leases to renew at every beat (a reference run's key lock)."""
        self.store = store
        self.trial = trial
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(lease_seconds / 4, 0.05)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial.trial_id}",
                                        daemon=True)

    def _beat(self) -> None:
        t = self.trial
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(t.experiment, t.trial_id, t.attempt, self.lease_seconds)
                for renew in self.also:
                    renew()
            except LeaseLost as err:
                log.warning("%s", err)
                self.lost.set()
                return
            except Exception as err:  # keep beating through store hiccups
                log.warning("heartbeat for trial %d failed (%s); retrying", t.trial_id, err)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

"""Riding out a database that is away: one backoff rule for every process that retries.

Workers retry a reservation for as long as it takes (``worker.loop``); the controller retries
its rounds the same way, up to ``Outage.limit`` seconds of continuous failure, then gives up
(the search exits 1 and can be run again). The waits double from the poll interval up to
``MAX_BACKOFF``.
"""

from __future__ import annotations

import logging
import time

__all__ = ["MAX_BACKOFF", "Outage", "backoff_seconds"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
"""Longest wait between attempts to reach a database that is away."""


def backoff_seconds(failures: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """The wait after the ``failures``-th failure in a row: ``base`` doubled each time, at most
    ``cap``."""
    return min(base * 2 ** min(max(failures, 1) - 1, 10), cap)


class Outage:
    """Consecutive failures of one retrying loop: how long to wait next, and whether the
    outage has lasted longer than ``limit`` seconds (None: retry for ever)."""

    def __init__(self, base: float, limit: float | None, cap: float = MAX_BACKOFF) -> None:
        self.base, self.limit, self.cap = base, limit, cap
        self.failures = 0
        self.since: float | None = None

    def failed(self) -> float:
        """Record a failure; the seconds to wait before the next attempt."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
        return backoff_seconds(self.failures, self.base, self.cap)

    @property
    def seconds(self) -> float:
        """How long the database has been away (0 when it is not)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def exhausted(self) -> bool:
        return self.limit is not None and self.seconds >= self.limit

    def recovered(self) -> bool:
        """Record a success; True if it ends an outage."""
        ended = self.failures > 0
        if ended:
            log.warning("the database is back after %.0f s", self.seconds)
        self.failures, self.since = 0, None
        return ended

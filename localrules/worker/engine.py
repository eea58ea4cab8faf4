"""The store-queue engine: the controller queues trials in the database; worker processes on this
machine (and any started elsewhere with ``localrules worker``) reserve and train them.

Stopping is safe at any moment: Ctrl-C, SIGTERM or ``should_stop`` ends the controller's loop and
SIGTERMs the local workers, whose running trials checkpoint and go back to the queue; running the
search again resumes it. When every local worker has exited with trials left, the run stops
(``WORKERS_EXITED``) rather than wait for ever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localrules.search.engine import (
    INTERRUPTED,
    TERMINATED,
    WORKERS_EXITED,
    Engine,
    SearchOutcome,
    StatusCallback,
    StopCheck,
    on_sigterm,
)
from localrules.validation import INTERVAL, WORKERS, Limit

if TYPE_CHECKING:
    from localrules.search.session import SearchSession

log = logging.getLogger(__name__)

MAX_POLL = 30.0
"""Longest wait between controller rounds: the controller's lock (60 s) must outlive it."""
POLL = Limit(0, MAX_POLL, low_open=True)
"""Seconds between controller rounds."""
QUEUE_ONLY_CONCURRENCY = 4
"""Trials queued at once when no local worker runs (remote workers take them)."""


@dataclass
class StoreEngine(Engine):
    """``workers`` local worker processes (0: queue only, for remote workers) writing trial
    files under ``artifacts``; a controller round every ``poll_seconds``."""

    artifacts: str
    workers: int = 2
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    log_level: int = logging.INFO
    """The local workers' (their records go to this process's handlers)."""

    name = "store"

    def __post_init__(self) -> None:
        WORKERS.check_parameter("workers", self.workers)
        INTERVAL.check_parameter("lease_seconds", self.lease_seconds)
        POLL.check_parameter("poll_seconds", self.poll_seconds)

    @property
    def default_concurrency(self) -> int:
        return self.workers if self.workers > 0 else QUEUE_ONLY_CONCURRENCY

    def run(self, session: SearchSession, on_status: StatusCallback | None = None,
            should_stop: StopCheck | None = None) -> SearchOutcome:
        from localrules.logs import LogForwarder
        from localrules.store import StoreUnavailable
        from localrules.worker.local import (
            CONTEXT,
            LocalWorkerSpec,
            start_local_workers,
            stop_local_workers,
            threads_per_worker,
        )

        controller = session.controller
        try:
            controller.step()  # the first trials are queued before the workers start
        except StoreUnavailable as err:  # the loop below retries it
            log.warning("the first round failed, the database is away (%s); retrying", err)
        spec = LocalWorkerSpec(url=session.url, artifacts=self.artifacts,
                               experiments=(session.experiment.name,),
                               lease_seconds=self.lease_seconds,
                               threads=threads_per_worker(self.workers),
                               log_level=self.log_level)
        stopped: dict[str, str | None] = {"why": None}
        procs: list[Any] = []

        def terminate() -> None:
            stopped["why"] = TERMINATED

        def stop_now() -> bool:
            if procs and not any(p.is_alive() for p in procs):
                log.error("every local worker has exited (exit codes %s); stopping",
                          ", ".join(str(p.exitcode) for p in procs))
                stopped["why"] = WORKERS_EXITED
            elif stopped["why"] is None and should_stop is not None and should_stop():
                stopped["why"] = INTERRUPTED
            return stopped["why"] is not None

        status = None
        with LogForwarder(CONTEXT) as worker_logs:  # the workers' records reach our handler
            try:
                with on_sigterm(terminate):
                    procs += start_local_workers(spec, self.workers, worker_logs.queue) \
                        if self.workers else []
                    status = controller.run(poll_seconds=self.poll_seconds,
                                            on_status=on_status, should_stop=stop_now)
            except KeyboardInterrupt:
                stopped["why"] = INTERRUPTED
            finally:
                stop_local_workers(procs)
        if status is None or stopped["why"] is not None:
            status = controller.status()  # after the workers handed their trials back
        note = "" if stopped["why"] is None else "running trials went back to the queue"
        return SearchOutcome(status, stopped["why"], session.trials(), note=note)

"""What runs a search's trials, behind one interface: ``SearchSession.run(engine, …)``.

Two engines implement it: the store-queue engine (``worker.engine.StoreEngine``: the controller
queues trials in the database, worker processes on this machine or elsewhere train them) and the
Ray engine (``raytune.engine.RayEngine``: Ray Tune schedules them). An engine is a context
manager: entering it acquires what it needs before anything of the experiment is written (Ray:
connect and check the cluster offers a trial's resources), so a refusal leaves the database
untouched. It records its own settings with the experiment (``recorded``) and may propose the
concurrency of a new search (``default_concurrency``).
"""

from __future__ import annotations

import abc
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localrules.search.controller import Status
    from localrules.search.session import SearchSession
    from localrules.store import Trial

StatusCallback = Callable[["Status"], None]
StopCheck = Callable[[], bool]

INTERRUPTED = "interrupted"
"""Stopped from outside (Ctrl-C, ``should_stop``); running trials went back to the queue."""
TERMINATED = "terminated"
"""SIGTERM; as ``INTERRUPTED``."""
WORKERS_EXITED = "workers-exited"
"""Every local worker process exited while trials were left."""
STOPS = (INTERRUPTED, TERMINATED, WORKERS_EXITED)


@dataclass(frozen=True)
class SearchOutcome:
    """How a run of a search ended: the status the engine last saw, why it stopped early (None
    when every trial finished; else one of ``STOPS``), the experiment's trials, and the engine's
    note for a summary (e.g. how many trials Ray's scheduler stopped early)."""

    status: Status
    stopped: str | None
    trials: list[Trial]
    note: str = ""

    @property
    def finished(self) -> bool:
        return self.stopped is None


@contextlib.contextmanager
def on_sigterm(handler: Callable[[], None]) -> Iterator[None]:
    """``handler()`` on SIGTERM while the block runs, the previous handler restored after.
    Signals reach the main thread only: elsewhere (an engine run from a thread) nothing is
    installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: handler())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Engine(abc.ABC):
    """Runs an opened search's trials until it is finished or told to stop."""

    name: str
    """What ``SearchSettings.engine`` records (``store`` or ``ray``)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def recorded(self) -> Mapping[str, Any]:
        """The settings this engine records with the experiment (``engine``, ``ray``)."""
        return {"engine": self.name, "ray": {}}

    @property
    def default_concurrency(self) -> int:
        """Trials at once in a new search that does not set ``concurrency``."""
        return 2

    @abc.abstractmethod
    def run(self, session: SearchSession, on_status: StatusCallback | None = None,
            should_stop: StopCheck | None = None) -> SearchOutcome:
        """Run the session's search until it is finished or ``should_stop()``; the session
        holds the experiment's controller lock throughout."""

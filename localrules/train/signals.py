"""SIGTERM (a preempted VM) as a flag the training loop checks between steps.

The loop then checkpoints after the current step and stops with ``interrupted: true``; the next
run that resumes carries on from there.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


class StopSignal:
    """Turns SIGTERM into ``requested`` (only in the main thread, and only when ``install``;
    otherwise the caller handles signals and ``requested`` stays False)."""

    def __init__(self, install: bool = True) -> None:
        self.requested = False
        self.install = install
        self._previous: Any = None

    def __enter__(self) -> StopSignal:
        if not self.install:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: checkpointing after this step and stopping")
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

"""Set-up several test files share (``from helpers import …``: pytest puts tests/ on the path)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from localrules.store import Experiment, Trial, TrialStore

TINY_RUN = ["width=4", "run.batch_size=32", "run.warmup_epochs=0"]
"""A bp trial of a few seconds on digits."""


def free_port() -> int:
    """A TCP port nothing listens on (for a server to start on, or to find nobody at)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_configs(*epochs: int) -> list[dict[str, Any]]:
    """Tiny bp trial configs, one per epoch count."""
    from localrules.config import config_from_preset

    return [config_from_preset("bp", overrides=[*TINY_RUN, f"run.epochs={e}"]).to_dict()
            for e in epochs]


def queue_trials(store: TrialStore, configs: Sequence[Mapping[str, Any]],
                 experiment: str = "exp") -> list[int]:
    """A plain experiment (no space behind it) with one queued trial per config; its ids."""
    store.create_experiment(Experiment(experiment, "test", {"paper": "wm"}, "f", {}))
    ids = store.allocate_trial_ids(experiment, len(configs))
    store.add_trials([Trial(experiment, i, dict(c), {"i": i}, {"idxs": {}, "vals": {}})
                      for i, c in zip(ids, configs, strict=True)])
    return ids


def finish_queued(store: TrialStore, experiment: str,
                  objective: Callable[[Trial], float] = lambda trial: 0.5,
                  worker: str = "w") -> int:
    """Reserve and complete every queued trial of ``experiment`` in order, each scoring
    ``objective(trial)``; returns how many."""
    n = 0
    while (trial := store.reserve(worker, 60, [experiment])) is not None:
        store.complete(experiment, trial.trial_id, trial.attempt,
                       {"objective": objective(trial), "diverged": False})
        n += 1
    return n


class RestartableMongoDB:
    """A SecantusDB server on a port and storage of its own, which an outage test stops and
    starts again (the data survives). Skips the test when the suite runs against an external
    mongod (``LOCALRULES_TEST_MONGODB_URI``), which a test cannot stop."""

    def __init__(self, storage: str, options: str = "serverSelectionTimeoutMS=500") -> None:
        import os

        import pytest

        if os.environ.get("LOCALRULES_TEST_MONGODB_URI"):
            pytest.skip("stops and restarts its own server; cannot do that to an external mongod")
        self.port, self.storage = free_port(), storage
        self.url = f"mongodb://127.0.0.1:{self.port}/lr?{options}"
        self._server: Any = None

    def start(self) -> None:
        from secantus import SecantusDBServer

        self._server = SecantusDBServer(port=self.port, storage_path=self.storage)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> RestartableMongoDB:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A local spool for a worker's final writes while the database is away.

When ``complete``, ``fail`` or ``release`` cannot reach the database, the write goes to a file
here (one JSON file per write, written atomically) and the worker carries on; before every
reservation the spool is flushed. Delivery is still fenced by the attempt: if the trial's lease
passed to another worker during the outage, the spooled write is refused and dropped (that work is
redone), so a result is never recorded twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localrules.store import LeaseLost, StoreError, Trial, TrialStore
from localrules.store.documents import strict_json

log = logging.getLogger(__name__)

OPERATIONS = ("complete", "fail", "release")
DEFAULT_SPOOL = "~/.cache/localrules/spool"
"""Shared by the workers of one host, so a restarted worker delivers what a dead one kept."""


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def add(self, operation: str, trial: Trial, *args: Any) -> Path:
        """Keep one write (``store.<operation>(experiment, trial_id, attempt, *args)``)."""
        if operation not in OPERATIONS:
            raise ValueError(f"cannot spool {operation!r}; spooled writes: {OPERATIONS}")
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"operation": operation, "experiment": trial.experiment,
                 "trial_id": trial.trial_id, "attempt": trial.attempt, "args": list(args)}
        name = f"{trial.experiment}-{trial.trial_id:05d}-{trial.attempt}-{operation}.json"
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(strict_json(entry))
        path = self.directory / name
        os.replace(tmp, path)
        return path

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)

    def flush(self, store: TrialStore) -> int:
        """Deliver what is spooled, oldest first; stop at the first store error (the database
        is still away). Returns the number delivered; refused writes are dropped."""
        delivered = 0
        for path in self.pending():
            try:
                entry = json.loads(path.read_text())
            except FileNotFoundError:  # another worker on this host delivered it
                continue
            method: Callable[..., None] = getattr(store, entry["operation"])
            try:
                method(entry["experiment"], entry["trial_id"], entry["attempt"], *entry["args"])
                delivered += 1
                log.info("delivered the spooled %s of trial %d of %r", entry["operation"],
                         entry["trial_id"], entry["experiment"])
            except LeaseLost as err:
                log.warning("spooled %s dropped: %s", entry["operation"], err)
            except StoreError:
                return delivered
            path.unlink(missing_ok=True)
        return delivered

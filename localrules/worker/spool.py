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

from localrules.store import LeaseLost, StoreError, Trial, TrialNotFound, TrialStore
from localrules.store.documents import strict_json

log = logging.getLogger(__name__)

OPERATIONS = ("complete", "fail", "release")
DEFAULT_SPOOL = "~/.cache/localrules/spool"
"""Shared by the workers of one host, so a restarted worker delivers what a dead one kept."""


class Spool:
    """One directory of pending writes, shared by the workers of a host. Entries name the store
    they are for (its ``identity``), so each is delivered only to that database."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def check_writable(self) -> None:
        """Create the directory if needed and check that files can be written in it;
        ``ParameterError("spool", …)`` if not (a worker must not find out during an outage)."""
        from localrules.validation import ParameterError

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as err:
            raise ParameterError("spool", f"{{}} {str(self.directory)!r} is not a writable "
                                          f"directory: {err.strerror or err}") from None

    def add(self, store: TrialStore, operation: str, trial: Trial, *args: Any) -> Path:
        """Keep one write (``store.<operation>(experiment, trial_id, attempt, *args)``)."""
        if operation not in OPERATIONS:
            raise ValueError(f"cannot spool {operation!r}; spooled writes: {OPERATIONS}")
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"store": store.identity, "operation": operation,
                 "experiment": trial.experiment, "trial_id": trial.trial_id,
                 "attempt": trial.attempt, "args": list(args)}
        name = (f"{store.identity[:12]}-{trial.experiment}-{trial.trial_id:05d}-"
                f"{trial.attempt}-{operation}.json")
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(strict_json(entry))
        path = self.directory / name
        os.replace(tmp, path)
        return path

    def pending(self, store: TrialStore | None = None) -> list[Path]:
        """Entries waiting (for ``store`` only, if given), oldest first."""
        if not self.directory.is_dir():
            return []
        prefix = "" if store is None else store.identity[:12]
        found = []
        for path in self.directory.glob(f"{prefix}*.json"):
            try:
                found.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # delivered meanwhile by another worker on this host
                continue
        return [path for _, path in sorted(found)]

    def flush(self, store: TrialStore) -> int:
        """Deliver this store's entries, oldest first; stop at the first store error (the
        database is still away). Returns the number delivered. Refused writes (the trial moved
        on, or is not in this store) are dropped; unreadable entries are set aside as ``.bad``."""
        delivered = 0
        for path in self.pending(store):
            try:
                entry = json.loads(path.read_text())
                if entry["store"] != store.identity:
                    continue
                if entry["operation"] not in OPERATIONS:
                    raise ValueError(f"unknown operation {entry['operation']!r}")
                method: Callable[..., None] = getattr(store, entry["operation"])
                call = (entry["experiment"], entry["trial_id"], entry["attempt"], *entry["args"])
            except FileNotFoundError:  # another worker on this host delivered it
                continue
            except Exception as err:  # any damage (a nesting bomb, a directory)
                log.error("spool entry %s is unreadable (%s); set aside", path,
                          f"{type(err).__name__}: {err}")
                path.replace(path.with_suffix(".bad"))
                continue
            try:
                method(*call)
                delivered += 1
                log.info("delivered the spooled %s of trial %d of %r", entry["operation"],
                         entry["trial_id"], entry["experiment"])
            except (LeaseLost, TrialNotFound) as err:
                log.warning("spooled %s dropped: %s", entry["operation"], err)
            except StoreError:
                return delivered
            except Exception as err:  # the store refused the entry's values
                log.error("spooled %s refused (%s); set aside", entry["operation"],
                          f"{type(err).__name__}: {err}")
                path.replace(path.with_suffix(".bad"))
                continue
            path.unlink(missing_ok=True)
        return delivered

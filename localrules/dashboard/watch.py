"""An experiment's trials as the dashboard last read them, kept up to date from the store's
change feed (``TrialStore.changes``): each refresh reads only the trials written since the last
one, and a version number moves only when a trial's outcome did (its state, result, reference
marker or rung), never for a progress report. The analyses are cached by that version, so a
promotion that leaves every count as it was still refreshes them, and an epoch reported by a
running trial does not.
"""

from __future__ import annotations

import threading
from typing import Any

from localrules.store.documents import HistoryEntry


def outcome(entry: HistoryEntry) -> tuple[Any, ...]:
    """What the summary and the analyses read of a trial (progress and change numbers left out)."""
    return entry.state, entry.result, entry.reference, entry.fidelity


class ExperimentWatch:
    """One experiment's history entries by trial id, the store cursor they were read up to, and
    the version of their outcomes."""

    def __init__(self, store: Any, experiment: str) -> None:
        self.store = store
        self.experiment = experiment
        self.cursor = 0
        self.version = 0
        self._entries: dict[int, HistoryEntry] = {}
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read what was written since the last refresh; the version after it."""
        with self._lock:
            changed, cursor = self.store.changes(self.experiment, self.cursor)
            for entry in changed:
                before = self._entries.get(entry.trial_id)
                if before is None or outcome(before) != outcome(entry):
                    self.version += 1
                self._entries[entry.trial_id] = entry
            self.cursor = cursor
            return self.version

    def entries(self) -> list[HistoryEntry]:
        """The entries as last read, by trial id."""
        with self._lock:
            return [self._entries[i] for i in sorted(self._entries)]

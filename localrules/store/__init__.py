"""Trial databases: one small interface (``TrialStore``) and a backend per URL scheme.

``open_store("sqlite:///localrules.db")`` opens (and creates) the embedded default; URLs follow
SQLAlchemy's forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
``sqlite://`` (in memory, one process). Nothing here imports TensorFlow.
"""

from __future__ import annotations

from localrules.store.base import (
    ExperimentNotFound,
    LeaseLost,
    LockLost,
    LockState,
    StoreError,
    StoreUnavailable,
    TrialExists,
    TrialNotFound,
    TrialStore,
)
from localrules.store.decode import MalformedDocument
from localrules.store.documents import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    STATES,
    Experiment,
    HistoryEntry,
    Trial,
)
from localrules.store.urls import DEFAULT_URL, open_store
from localrules.store.workers import WorkerFacts, WorkerRecord

__all__ = [
    "CANCELLED",
    "DEFAULT_URL",
    "DONE",
    "FAILED",
    "FINISHED",
    "PENDING",
    "QUEUED",
    "RUNNING",
    "STATES",
    "Experiment",
    "ExperimentNotFound",
    "HistoryEntry",
    "LeaseLost",
    "LockLost",
    "LockState",
    "MalformedDocument",
    "StoreError",
    "StoreUnavailable",
    "Trial",
    "TrialExists",
    "TrialNotFound",
    "TrialStore",
    "WorkerFacts",
    "WorkerRecord",
    "open_store",
]

"""Trials as a pandas DataFrame: the form analysis code and notebooks want.

One row per trial; ``params.<name>`` columns (missing where a parameter was inactive, so
conditional parameters stay distinguishable from any value), ``result.<key>`` and
``progress.epoch`` columns, and timestamps as UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localrules.store.documents import Trial

TIME_COLUMNS = ("created_at", "started_at", "updated_at", "finished_at")
BASE_COLUMNS = ("experiment", "trial_id", "state", "attempt", "worker", "error", "code_version")


def trial_row(trial: Trial) -> dict[str, Any]:
    """The flat row of one trial (no pandas needed)."""
    row: dict[str, Any] = {c: getattr(trial, c) for c in BASE_COLUMNS}
    row.update({f"params.{k}": v for k, v in trial.params.items()})
    for key, value in (trial.result or {}).items():
        if not isinstance(value, (dict, list)):
            row[f"result.{key}"] = value
    row["progress.epoch"] = (trial.progress or {}).get("epoch")
    row.update({c: getattr(trial, c) for c in TIME_COLUMNS})
    return row


def trials_frame(trials: Sequence[Trial]):
    import pandas as pd

    frame = pd.DataFrame([trial_row(t) for t in trials])
    if frame.empty:
        return pd.DataFrame(columns=[*BASE_COLUMNS, *TIME_COLUMNS])
    for column in TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame

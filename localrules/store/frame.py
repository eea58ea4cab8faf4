"""Trials as a pandas DataFrame: the form analysis code and notebooks want.

One row per trial; ``params.<name>`` columns (missing where a parameter was inactive, so
conditional parameters stay distinguishable from any value), ``result.<key>`` and
``progress.epoch`` columns, and timestamps as UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localrules.store.documents import Trial
from localrules.store.references import References, references_of

TIME_COLUMNS = ("created_at", "started_at", "updated_at", "finished_at")
BASE_COLUMNS = ("experiment", "trial_id", "state", "attempt", "worker", "error", "code_version")


def trial_row(trial: Trial, references: References | None = None) -> dict[str, Any]:
    """The flat row of one trial (no pandas needed): with the experiment's ``references``, its
    gap closed; ``reference`` names a reference run's rule, ``warm_start`` a warm start."""
    row: dict[str, Any] = {c: getattr(trial, c) for c in BASE_COLUMNS}
    row["reference"] = (trial.reference or {}).get("rule")
    row["warm_start"] = (trial.misc or {}).get("warm_start")
    row.update({f"params.{k}": v for k, v in trial.params.items()})
    for key, value in (trial.result or {}).items():
        if not isinstance(value, (dict, list)):
            row[f"result.{key}"] = value
    if references is not None:
        row["gap_closed"] = references.gap_closed(trial.objective)
    row["progress.epoch"] = (trial.progress or {}).get("epoch")
    row.update({c: getattr(trial, c) for c in TIME_COLUMNS})
    return row


def trials_frame(trials: Sequence[Trial], references: References | None = None):
    """Trials of one experiment; ``references`` (by default those among ``trials``) give each
    row its ``gap_closed``."""
    import pandas as pd

    references = references_of(trials) if references is None else references
    frame = pd.DataFrame([trial_row(t, references) for t in trials])
    if frame.empty:
        return pd.DataFrame(columns=[*BASE_COLUMNS, *TIME_COLUMNS])
    for column in TIME_COLUMNS:
        # Out of pandas' range (a tampered document's timestamp): NaT, not an error.
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True, errors="coerce")
    return frame

"""Trials as a pandas DataFrame: the form analysis code and notebooks want.

One row per trial; ``params.<name>`` columns (missing where a parameter was inactive, so
conditional parameters stay distinguishable from any value), ``result.<key>`` (scalars; the
per-rung list ``result.rungs`` stays in the documents) and ``progress.epoch`` columns, and
timestamps as UTC datetimes.

Every row also has the multi-fidelity columns, whatever the search: ``rung`` (the rung of its
result, None outside a multi-fidelity search), ``stopped_early`` (paused or stopped below the
budget's epochs), ``full_budget`` (``FULL_BUDGET``: the rows best, gap closed and importance
read; ``frame[frame.full_budget]``) and ``trial_epochs`` (epochs its result reports, every rung
included: what a search spent on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localrules.results import trial_epochs
from localrules.store.documents import Trial, full_budget_trial
from localrules.store.references import References, references_of

TIME_COLUMNS = ("created_at", "started_at", "updated_at", "finished_at")
BASE_COLUMNS = ("experiment", "trial_id", "state", "attempt", "lapses", "worker", "error",
                "code_version")
FIDELITY_COLUMNS = ("rung", "stopped_early", "full_budget", "trial_epochs")
FULL_BUDGET = "full_budget"
"""The column that says a row is a full-budget result: done, with an objective, not paused or
stopped at a lower rung (``store.documents.full_budget_trial``)."""


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
    result = trial.result or {}
    row["rung"] = result.get("rung")
    row["stopped_early"] = bool(result.get("stopped_early"))
    row[FULL_BUDGET] = full_budget_trial(trial)
    row["trial_epochs"] = trial_epochs(trial.result)
    if references is not None:  # paused at a rung: none (References.result_gap_closed)
        row["gap_closed"] = references.result_gap_closed(trial.result)
    row["progress.epoch"] = (trial.progress or {}).get("epoch")
    row.update({c: getattr(trial, c) for c in TIME_COLUMNS})
    return row


def trials_frame(trials: Sequence[Trial], references: References | None = None):
    """Trials of one experiment; ``references`` (by default those among ``trials``) give each
    row its ``gap_closed``."""
    references = references_of(trials) if references is None else references
    return typed_frame([trial_row(t, references) for t in trials])


def column_dtype(values: Sequence[Any]) -> str:
    """The pandas dtype of a column from its values (None: missing): ``boolean`` for
    booleans, ``Int64`` for integers, ``float64`` for numbers, ``string`` for text (pandas'
    nullable types keep a missing value apart from False or 0), ``object`` for a mix."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return "object"
    if kinds == {bool}:
        return "boolean"
    if kinds == {int}:
        return "Int64"
    if kinds <= {int, float}:
        return "float64"
    if kinds == {str}:
        return "string"
    return "object"


def typed_frame(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None):
    """The rows as a DataFrame with the union of their columns (``columns``: those, in that
    order, a column no row has being all missing), each of its values' dtype
    (``column_dtype``), timestamps as UTC datetimes."""
    import pandas as pd

    if columns is None:
        columns = list(dict.fromkeys([*BASE_COLUMNS, *FIDELITY_COLUMNS, *TIME_COLUMNS,
                                      *(k for row in rows for k in row)]))
    data = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        if column in TIME_COLUMNS:
            # Out of pandas' range (a tampered document's timestamp): NaT, not an error.
            data[column] = pd.to_datetime(pd.Series(values, dtype="float64"), unit="s",
                                          utc=True, errors="coerce")
        else:
            data[column] = pd.Series(values, dtype=column_dtype(values))
    return pd.DataFrame(data, columns=list(columns))

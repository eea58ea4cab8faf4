"""A bound filter evaluated on a trials DataFrame (``store.frame``): the same rows the
databases select, for frames already in memory (a notebook's, or load-then-filter).

Per experiment, since a gap closed is compared through each experiment's own threshold
(``plan.for_experiment``); each comparison reads a column's values as the documents held them
(a missing value, NaN or NaT is absent; timestamps are Unix seconds again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localrules.store.query.fields import (
    AllOf,
    Atom,
    Bound,
    Constant,
)
from localrules.store.query.plan import for_experiment
from localrules.store.references import References


def _plain(value: Any) -> Any:
    """A frame cell as the document held it (None for missing)."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.timestamp()
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _column(frame, field: str):
    if field == "is_reference":
        return frame["reference"].map(lambda rule: isinstance(_plain(rule), str))
    return frame[field] if field in frame.columns else None


def atom_mask(frame, atom: Atom):
    import pandas as pd

    column = _column(frame, atom.field)
    if column is None:  # no trial has the field: absent everywhere
        return pd.Series(atom.holds(None), index=frame.index, dtype=bool)
    return column.astype("object").map(lambda v: atom.holds(_plain(v))).astype(bool)


def mask(frame, node: Bound):
    """The rows of ``frame`` (one experiment's) for which ``node`` holds."""
    import pandas as pd

    if isinstance(node, Constant):
        return pd.Series(node.value, index=frame.index, dtype=bool)
    if isinstance(node, Atom):
        return atom_mask(frame, node)
    parts = [mask(frame, item) for item in node.items]
    out = parts[0]
    for part in parts[1:]:
        out = (out & part) if isinstance(node, AllOf) else (out | part)
    return out


def filter_frame(frame, node: Bound, references: Mapping[str, References]):
    """The rows of a frame of one or more experiments for which the bound filter holds, each
    experiment's through its ``references``."""
    import pandas as pd

    keep = pd.Series(False, index=frame.index, dtype=bool)
    for name, rows in frame.groupby("experiment", sort=False):
        keep.loc[rows.index] = mask(rows, for_experiment(node, references[name])).to_numpy()
    return frame[keep]

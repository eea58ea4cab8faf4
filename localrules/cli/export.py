"""Writing a query's trials as CSV, JSON or Parquet, to the terminal or a file.

A file is written whole or not at all (a temporary file beside it, renamed into place), and an
existing file is never overwritten: a query is a read, and a mistyped ``--out`` must not cost
a user the export they made yesterday. Parquet goes through pandas and pyarrow (the ``parquet``
extra); without pyarrow the command stops before reading anything. A column of values of
several kinds (a YAML choice of text and numbers) is written to Parquet as their JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from localrules.cli.tables import iso
from localrules.store.frame import TIME_COLUMNS, trial_row, typed_frame
from localrules.store.query.run import Selection


def check_out(out: str | None, fmt: str) -> None:
    """ValueError (exit 2, before the database is opened) for an output that cannot be
    written: parquet without ``--out`` or without pyarrow, an existing file, a missing
    directory."""
    if fmt == "parquet":
        if out is None:
            raise ValueError("--format parquet writes a file: give --out FILE.parquet")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--format parquet needs pyarrow: pip install 'localrules[parquet]' "
                             "(or choose --format csv or json)") from None
    if out is None:
        return
    path = Path(out)
    if path.exists():
        raise ValueError(f"--out: {out!r} exists; give a new file (nothing is overwritten)")
    if not path.parent.is_dir():
        raise ValueError(f"--out: directory {str(path.parent)!r} does not exist")


def _rows(chosen: Selection) -> list[dict[str, Any]]:
    rows = [trial_row(t, chosen.references[t.experiment]) for t in chosen.trials]
    if chosen.columns is None:
        return rows
    return [{c: row.get(c) for c in chosen.columns} for row in rows]


def json_text(chosen: Selection) -> str:
    """Trial objects (``trials_cmd.trial_json``), or with columns, objects of those columns
    (times as ISO 8601)."""
    from localrules.cli.trials_cmd import trial_json

    if chosen.columns is None:
        data = [trial_json(t, chosen.references[t.experiment]) for t in chosen.trials]
    else:
        data = [{c: iso(v) if c in TIME_COLUMNS else v for c, v in row.items()}
                for row in _rows(chosen)]
    return json.dumps(data, indent=2) + "\n"


def csv_text(chosen: Selection) -> str:
    rows = _rows(chosen)
    columns = list(chosen.columns or dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_trials(chosen: Selection, fmt: str, out: str | None) -> None:
    """The selection in ``fmt`` (csv, json, parquet) on stdout or into the new file ``out``."""
    if fmt == "parquet":
        frame = typed_frame(_rows(chosen), chosen.columns)
        for column in frame.columns:  # Parquet columns hold one type
            if frame[column].dtype == object:
                frame[column] = frame[column].map(
                    lambda v: None if v is None else json.dumps(v)).astype("string")
        _write_file(out, lambda path: frame.to_parquet(path, index=False))
        return
    text = json_text(chosen) if fmt == "json" else csv_text(chosen)
    if out is None:
        print(text, end="")
        return
    _write_file(out, lambda path: Path(path).write_text(text))


def _write_file(out: str, write) -> None:
    """``write(path)`` into a temporary file beside ``out``, then renamed to it."""
    target = Path(out)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(temp)
        if target.exists():  # made meanwhile: still never overwritten
            raise ValueError(f"--out: {out!r} exists; give a new file (nothing is "
                             "overwritten)")
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)

"""Plain-text tables, CSV, value formatting and the output directory shared by the query and
report commands."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def iso(timestamp: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string (one no calendar date holds, e.g. a tampered
    document's 1e300, as the number)."""
    if timestamp is None:
        return None
    try:
        return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(
            timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return repr(timestamp)


def terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((160, 24)).columns


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          max_width: int | None = None) -> str:
    """Columns padded to their widest cell; numbers right-aligned. With ``max_width`` the last
    column is cut (with …) so that lines fit."""
    cells = [[fmt(v) for v in row] for row in rows]
    if max_width is not None and headers:
        used = sum(max([len(h), *(len(r[i]) for r in cells)]) + 2
                   for i, h in enumerate(headers[:-1]))
        room = max(max_width - used, len(headers[-1]), 20)
        for r in cells:
            if len(r[-1]) > room:
                r[-1] = r[-1][: room - 1] + "…"
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def dict_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as CSV text (header from the first row; None as an empty field)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def print_report(fmt: str, as_json: Any, csv_text: Callable[[], str],
                 table_text: Callable[[], str]) -> None:
    """A report on stdout in the chosen format (only that one is rendered)."""
    if fmt == "json":
        print(json.dumps(as_json, indent=2))
    elif fmt == "csv":
        print(csv_text(), end="")
    else:
        print(table_text())


def check_out_dir(out: str | None, flag: str = "--out") -> Path | None:
    """An output directory flag, checked before any work is done: a directory, or a path that
    can become one (nothing on the way is a file). The caller creates it only when it writes.
    A URI (gs://…) is returned as it is, for the code that writes there to check."""
    if out is None:
        return None
    if not out.strip():
        raise ValueError(f"{flag} must name a directory")
    path = Path(out).expanduser()
    if "://" not in out:
        for part in (path, *path.parents):
            if part.exists() and not part.is_dir():
                raise ValueError(f"{flag} {out!r}: {str(part)!r} exists and is not a directory")
    return path


def artifacts_location(artifacts: str) -> str:
    """An ``--artifacts`` value (checked like an ``--out``) as an absolute path (workers may
    run elsewhere), or the URI it is."""
    check_out_dir(artifacts, "--artifacts")
    return artifacts if "://" in artifacts else str(Path(artifacts).expanduser().resolve())

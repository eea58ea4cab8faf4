"""Database URLs → store backends, and URLs safe to print (no passwords)."""

from __future__ import annotations

import re
from pathlib import Path

from localrules.store.base import TrialStore
from localrules.validation import ParameterError

DEFAULT_URL = "sqlite:///localrules.db"
URL_ENV = "LOCALRULES_DB"
"""An environment variable that replaces DEFAULT_URL (keeps credentials off command lines)."""
SCHEMES: tuple[str, ...] = ("sqlite", "mongodb", "mongodb+srv")


def redact(url: str) -> str:
    """The URL (or any text holding one) with passwords replaced by ``***``: everything between
    ``scheme://user:`` and the last ``@`` before the hosts, whatever characters it holds."""
    return re.sub(r"([A-Za-z0-9+.-]+://[^:/@\s]*):[^\s]*@", r"\1:***@", url)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:`` URL (SQLAlchemy's forms), or ``:memory:``."""
    rest = url[len("sqlite:"):]
    if rest in ("", "//", "///:memory:", "//:memory:"):
        return ":memory:"
    if not rest.startswith("///") or len(rest) == 3:
        raise ValueError(f"malformed SQLite URL {url!r}: use sqlite:///relative/path.db or "
                         "sqlite:////absolute/path.db")
    return rest[3:]


def open_store(url: str = DEFAULT_URL, create: bool = True,
               read_only: bool = False) -> TrialStore:
    """Open the store a URL names; with ``create=False`` a missing database is an error (so
    that a mistyped path creates nothing). ``read_only`` (for readers; implies ``create=False``)
    creates, migrates and writes nothing to the store: SQLite opens the file in its read-only
    mode (an older schema is read from a copy brought up to date in memory), MongoDB creates no
    index; a database that is not a localrules store (or a newer one) is refused."""
    create = create and not read_only
    if not isinstance(url, str) or ":" not in url:
        raise ValueError(f"malformed database URL {url!r}; valid forms: sqlite:///PATH.db, "
                         "mongodb://HOST[:PORT]/DB, mongodb+srv://HOST/DB")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from localrules.store.sqlite import SQLiteStore

        path = sqlite_path(url)
        if not create and path != ":memory:" and not Path(path).expanduser().is_file():
            raise ParameterError("url", f"no database at {path!r} (from {url}); run a search "
                                        "first or give the right database URL")
        if read_only and path == ":memory:":
            raise ParameterError("url", "{} sqlite:// is an empty in-memory database: nothing "
                                        "to read")
        return SQLiteStore(path, url=url, read_only=read_only)
    if scheme in ("mongodb", "mongodb+srv"):
        from localrules.store.mongo import MongoStore

        return MongoStore(url, read_only=read_only)
    raise ValueError(f"unknown database URL scheme {scheme!r} in {redact(url)!r}; valid: "
                     f"{', '.join(s + '://' for s in SCHEMES)}")

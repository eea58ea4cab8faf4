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


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\n]*):[^\n]*@")
"""``scheme://user:`` then the password: up to the last ``@`` on the line, whatever it holds
(a raw ``@``, ``/``, space or ``%`` included; a later ``@`` on the line over-redacts, which is
safe)."""
_SECRET_OPTIONS = re.compile(
    r"(?i)([?&;][^=&;#\s]*(?:password|secret|token|authmechanismproperties)[^=&;#\s]*=)"
    r"[^&;#\s]*")
"""URL options that carry a secret: ``tlsCertificateKeyFilePassword``, the AWS session token
in ``authMechanismProperties``, anything named like a password, secret or token."""


def redact(url: str) -> str:
    """The URL (or any text holding URLs) with passwords and secret options replaced by
    ``***``."""
    return _SECRET_OPTIONS.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))


MIN_SCRUBBED = 4
"""Secrets shorter than this are masked in URL form only (``redact``): masking every ``a`` or
``42`` in a message would garble it, and such a password falls to any guess anyway."""


def url_secrets(url: str) -> frozenset[str]:
    """Every form in which the secrets of ``url`` (its password and secret options) can appear
    in a message: as written, percent-decoded (``%40`` → ``@``, ``+`` kept or read as a space)
    and percent-encoded. A driver error that quotes a password outside the URL is scrubbed with
    these (``scrub``)."""
    from urllib.parse import quote, quote_plus, unquote, unquote_plus

    raw = []
    match = _USERINFO.match(url.strip())
    if match:
        raw.append(url.strip()[match.end(1) + 1:match.end() - 1])
    for option in _SECRET_OPTIONS.finditer(url):  # a value and its KEY:VALUE,... parts
        value = unquote(option.group(0)[len(option.group(1)):])
        raw += [value, *re.split(r"[,:]", value)]
    forms = set()
    for secret in raw:
        for decoded in {secret, unquote(secret), unquote_plus(secret)}:
            forms |= {decoded, quote(decoded, safe=""), quote_plus(decoded)}
    return frozenset(form for form in forms if len(form) >= MIN_SCRUBBED)


def scrub(text: str, secrets: frozenset[str] = frozenset()) -> str:
    """``text`` redacted (``redact``) and with every one of ``secrets`` (``url_secrets``)
    masked, longest first."""
    text = redact(text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:`` URL (SQLAlchemy's forms), or ``:memory:``."""
    rest = url[len("sqlite:"):]
    if rest in ("", "//", "///:memory:", "//:memory:"):
        return ":memory:"
    if not rest.startswith("///") or len(rest) == 3:
        raise ValueError(f"malformed SQLite URL {redact(url)!r}: use sqlite:///relative/path.db or "
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
        raise ValueError(f"malformed database URL {redact(str(url))!r}; valid forms: "
                         "sqlite:///PATH.db, mongodb://HOST[:PORT]/DB, mongodb+srv://HOST/DB")
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

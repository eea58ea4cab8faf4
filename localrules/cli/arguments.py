"""Options several commands share, and turning a library's parameter names into flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping

from localrules.store.urls import DEFAULT_URL, URL_ENV
from localrules.validation import Limit

SHARED_FLAGS = {"url": "--db"}


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--db`` option every command that opens a store shares."""
    parser.add_argument(
        "--db", default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"database URL: sqlite:///PATH.db or mongodb://[USER:PASSWORD@]HOST[:PORT]/DB "
             f"(default: ${URL_ENV}, else {DEFAULT_URL})")


def flag_of(parameter: str, flags: Mapping[str, str]) -> str:
    """The flag that sets a library parameter: the command's own name for it, else
    ``--parameter-name``."""
    return {**SHARED_FLAGS, **flags}.get(parameter, "--" + parameter.replace("_", "-"))


def number(limit: Limit) -> Callable[[str], int | float]:
    """The argparse ``type=`` of a numeric flag: ``limit.parse`` of the text, its ValueError
    turned into argparse's own error (exit status 2, the flag named, before any handler runs,
    so nothing is opened or written)."""

    def parse(text: str) -> int | float:
        try:
            return limit.parse("the value", text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).replace("the value ", "", 1)) from None

    parse.__name__ = "integer" if limit.integer else "number"
    parse.limit = limit  # type: ignore[attr-defined]  # for tests and help texts
    return parse

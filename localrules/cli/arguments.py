"""Options several commands share, and turning a library's parameter names into flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from localrules.store.urls import DEFAULT_URL, URL_ENV

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

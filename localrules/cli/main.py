"""Entry point: parse, dispatch to a subcommand, map bad input to exit status 2.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``handler=run`` where ``run(args) -> int`` (and ``flags``, the flag of each library parameter
whose name differs). A ``ValueError`` raised by a handler is bad input: its message goes to
stderr and the exit status is 2 (argparse's own usage errors exit 2 too); a ``ParameterError``
names the flag that set the parameter. A flag's value that its ``type=`` refuses (every
numeric flag's ``cli.arguments.number``) is argparse's usage error: status 2 as well, returned
rather than raised so that callers in-process see the same statuses. A
``StoreError`` (database unreachable or refusing) is reported the same way with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from localrules import __version__
from localrules.cli import (
    dashboard_cmd,
    dynamics_cmd,
    neural_fit_cmd,
    report_cmd,
    rules_cmd,
    search_cmd,
    train_cmd,
    trials_cmd,
    worker_cmd,
)

COMMANDS = (rules_cmd, dynamics_cmd, train_cmd, search_cmd, worker_cmd, trials_cmd, report_cmd,
            neural_fit_cmd, dashboard_cmd)

EXIT_BAD_INPUT = 2
EXIT_STORE_ERROR = 1
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}
OUTPUT_LOGGER = "localrules.cli"
"""The commands' own lines (a search's finished trials): INFO even when a command's default
level is quieter (``quiet_library``)."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (which quote what was typed: ``unrecognized
    arguments: --dbb mongodb://user:pw@...``) show no password. Subcommands' parsers are of
    the same class."""

    def error(self, message: str):  # type: ignore[override]
        from localrules.store.urls import redact

        super().error(redact(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="localrules",
        description="Hyperparameter search for learning rules without weight symmetry.",
    )
    parser.add_argument("--version", action="version", version=f"localrules {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="log debug messages, TensorFlow's own lines included "
                                "(--log-level debug)")
    verbosity.add_argument("--log-level", choices=tuple(LOG_LEVELS), type=str.lower,
                           help="debug (as -v), info, warning or error (default: info; "
                                "`search` shows its progress and warnings only)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a usage error (a flag's value refused: 2), --help, --version
        return done.code if isinstance(done.code, int) else EXIT_BAD_INPUT

    from localrules.logs import NativeFilter, console, quiet_tensorflow, shows_native
    from localrules.store.urls import url_secrets

    level, levels = log_levels(args)
    loud_again = quiet_tensorflow(level)  # before any subcommand imports TensorFlow
    secrets = url_secrets(args.db) if isinstance(getattr(args, "db", None), str) else frozenset()
    scrubbing = ScrubSecrets(secrets)
    with NativeFilter(show=shows_native(level)), \
            console(level, levels, verbose=level <= logging.DEBUG):
        handlers = list(logging.getLogger().handlers)
        for handler in handlers:
            handler.addFilter(scrubbing)
        try:
            return _run(args, secrets)
        finally:
            for handler in handlers:
                handler.removeFilter(scrubbing)
            loud_again()


def log_levels(args: argparse.Namespace) -> tuple[int, dict[str, int]]:
    """The root logger's level from ``-v`` / ``--log-level``, and other loggers' own: by
    default INFO, or WARNING for the library under a command that sets ``quiet_library``
    (``search``: its workers' per-trial lines would flood its progress) with the command's
    output (``OUTPUT_LOGGER``) and a multi-fidelity search's promotions at INFO."""
    if args.verbose:
        return logging.DEBUG, {}
    if args.log_level is not None:
        return LOG_LEVELS[args.log_level], {}
    if getattr(args, "quiet_library", False):
        from localrules.search.controller import PROMOTIONS

        return logging.WARNING, {OUTPUT_LOGGER: logging.INFO, PROMOTIONS: logging.INFO}
    return logging.INFO, {}


def _run(args: argparse.Namespace, secrets: frozenset[str]) -> int:
    """The subcommand, its errors mapped to exit statuses (messages scrubbed of secrets)."""
    from localrules.cli.arguments import flag_of
    from localrules.store.base import StoreError
    from localrules.store.urls import scrub
    from localrules.validation import ParameterError

    def fail(kind: str, message: object, status: int) -> int:
        print(f"localrules {args.command}: {kind}: {scrub(str(message), secrets)}",
              file=sys.stderr)
        return status

    try:
        return int(args.handler(args) or 0)
    except ParameterError as err:  # the library names a parameter; the user set a flag
        return fail("error", err.naming(flag_of(err.parameter, getattr(args, "flags", {}))),
                    EXIT_BAD_INPUT)
    except ValueError as err:
        return fail("error", err, EXIT_BAD_INPUT)
    except StoreError as err:  # the database is unreachable or refused: not the input's fault
        return fail("database error", err, EXIT_STORE_ERROR)


class ScrubSecrets(logging.Filter):
    """Masks the database URL's secrets (``store.urls.scrub``) in every log record a handler
    writes, whichever module logged it and however it quoted the URL."""

    def __init__(self, secrets: frozenset[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        from localrules.store.urls import scrub

        message = record.getMessage()
        cleaned = scrub(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


if __name__ == "__main__":
    sys.exit(main())

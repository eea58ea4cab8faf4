"""What a command's terminal shows: its log lines written above any progress bar, TensorFlow's
and absl's own lines kept out below ``DEBUG``, and worker processes' records sent to the
command's handler.

Three writers share the terminal while a search runs: the command's own logging, the spawned
worker processes (each with its own logging), and TensorFlow's C++ side, which writes straight
to file descriptor 2 (absl's "All log messages before absl::InitializeLog() is called" and
``I0000 … port.cc] oneDNN custom operations are on`` come from there, and no environment
variable of TensorFlow 2.21 silences them: ``TF_CPP_MIN_LOG_LEVEL`` reaches only the lines that
go through TensorFlow's own logging shim, absl has no variable at all). So:

- ``console``: one handler on the root logger that writes each record through ``tqdm.write``,
  which clears the bars, writes the line and draws them again below it;
- ``native_filter``: descriptor 2 becomes a pipe read by a thread that drops absl's and
  TensorFlow's info and warning lines (errors and anything else go on, above the bars); the
  process's own ``sys.stderr`` keeps writing to the terminal, and child processes inherit the
  pipe, so their native lines are filtered too;
- ``LogForwarder`` / ``send_to``: worker processes log into a multiprocessing queue that a
  thread of the parent empties into the parent's loggers (and so its handler);
- ``quiet_tensorflow``: ``TF_CPP_MIN_LOG_LEVEL`` and the levels of the ``absl`` and
  ``tensorflow`` Python loggers, set before TensorFlow loads.

At ``DEBUG`` (``-v``) TensorFlow's lines come back.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue as queues
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PLAIN_FORMAT = "%(asctime)s %(message)s"
TF_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
THIRD_PARTY = ("absl", "tensorflow")
"""Python loggers of TensorFlow (``Sharding callback duration`` at every checkpoint is absl's)."""
NATIVE_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\s\]]+:\d+\] "  # absl: I0000 00:00:17.5  512 port.cc:153]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] [^\s\]]+:\d+\] "  # TensorFlow's older format
    r"|To enable the following instructions: .* rebuild TensorFlow")
"""The start of a TensorFlow or absl info or warning line on descriptor 2 (errors pass)."""


def shows_native(level: int) -> bool:
    """Whether TensorFlow's and absl's own lines are shown at this log level."""
    return level <= logging.DEBUG


def native_noise(line: str) -> bool:
    """Whether a line of descriptor 2 is TensorFlow's or absl's info or warning chatter."""
    return NATIVE_LINE.match(line) is not None


def quiet_tensorflow(level: int) -> Callable[[], None]:
    """Before TensorFlow loads: its C++ log level (``TF_CPP_MIN_LOG_LEVEL``, inherited by child
    processes) and its Python loggers for this ``level`` (all shown at ``DEBUG``; else only
    errors, unless ``TF_CPP_MIN_LOG_LEVEL`` is set already). Python warnings go through logging
    (above the progress bars) as well. Returns what puts everything back (for a command run
    in-process)."""
    show = shows_native(level)
    before = os.environ.get(TF_LEVEL)
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY}
    os.environ[TF_LEVEL] = "0" if show else before or "2"
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.NOTSET if show else logging.ERROR)
    logging.captureWarnings(True)

    def undo() -> None:
        logging.captureWarnings(False)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
        if before is None:
            os.environ.pop(TF_LEVEL, None)
        else:
            os.environ[TF_LEVEL] = before

    return undo


class ConsoleFormatter(logging.Formatter):
    """``VERBOSE_FORMAT`` when verbose or for warnings and errors; else an info line is its
    time and message (what a user reads: ``trial 3 done: objective …``)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(VERBOSE_FORMAT)
        self.verbose = verbose
        self.plain = logging.Formatter(PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose or record.levelno >= logging.WARNING:
            return super().format(record)
        return self.plain.format(record)


class ConsoleHandler(logging.StreamHandler):
    """Writes each record through ``tqdm.write``: progress bars on the same terminal are
    cleared first and drawn again below the line, never broken by it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def console(level: int, levels: dict[str, int] | None = None,
            verbose: bool = False) -> Iterator[ConsoleHandler]:
    """While inside: a ``ConsoleHandler`` on ``sys.stderr`` on the root logger at ``level``
    (``levels``: other loggers' own levels, e.g. the command's output at INFO under a quieter
    root). Everything is put back on exit, so commands run in-process (tests) leave no trace."""
    root = logging.getLogger()
    handler = ConsoleHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter(verbose))
    chosen = {"": level, **(levels or {})}
    previous = {name: logging.getLogger(name).level for name in chosen}
    for name, value in chosen.items():
        logging.getLogger(name).setLevel(value)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, value in previous.items():
            logging.getLogger(name).setLevel(value)


class NativeFilter:
    """Descriptor 2 through a pipe whose lines a thread writes above the progress bars, less
    TensorFlow's and absl's info and warning lines unless ``show``. ``sys.stderr`` writes to
    the terminal directly meanwhile. Does nothing when ``sys.stderr`` is not descriptor 2
    (captured, as under pytest)."""

    def __init__(self, show: bool = False) -> None:
        self.show = show
        self._saved: int | None = None
        self._thread: threading.Thread | None = None
        self._previous: Any = None
        self._stream: TextIO | None = None

    def __enter__(self) -> NativeFilter:
        try:
            if sys.stderr.fileno() != 2:
                return self
        except (AttributeError, OSError, ValueError):
            return self
        sys.stderr.flush()
        self._saved = os.dup(2)
        read, write = os.pipe()
        self._stream = open(self._saved, "w", buffering=1, closefd=False,
                            encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                            errors="backslashreplace")
        os.dup2(write, 2)
        os.close(write)
        self._previous, sys.stderr = sys.stderr, self._stream
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True,
                                        name="localrules-native-logs")
        self._thread.start()
        return self

    def _pump(self, read: int) -> None:
        from tqdm.auto import tqdm

        pending = b""
        try:
            while chunk := os.read(read, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    self._write(tqdm, raw.decode("utf-8", "replace"))
            if pending:
                self._write(tqdm, pending.decode("utf-8", "replace"))
        except (OSError, ValueError):  # the terminal went away, or the stream was closed
            pass
        finally:
            os.close(read)

    def _write(self, tqdm: Any, line: str) -> None:
        if self.show or not native_noise(line):
            tqdm.write(line, file=self._stream)

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # the pipe's last writers now are child processes, if any
        sys.stderr = self._previous
        assert self._thread is not None and self._stream is not None
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # else a lingering child holds the pipe: leave both
            self._stream.close()
            os.close(self._saved)
        self._saved = None


def send_to(queue: Any, level: int, prefix: str = "") -> None:
    """In a child process: every record at ``level`` or above goes into ``queue`` (a
    multiprocessing queue a parent's ``LogForwarder`` empties), its message prefixed with
    ``prefix`` (e.g. ``worker-0 ``); no other handler. Python warnings go there too."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.handlers.QueueHandler(queue)
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


class LogForwarder:
    """In a parent process: a queue (``context.Queue()``, handed to children that call
    ``send_to``) and a thread that passes each record to the parent's logger of the same name,
    hence to the parent's handlers (the child already chose what to send). Stopping drains
    what is left. The thread polls, so a child killed mid-write cannot hang the parent."""

    def __init__(self, context: Any, poll: float = 0.1) -> None:
        self.queue = context.Queue()
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="localrules-worker-logs")

    def __enter__(self) -> LogForwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.queue.close()

    def _run(self) -> None:
        while True:
            try:
                record = self.queue.get(timeout=self.poll)
            except queues.Empty:
                if self._stop.is_set():
                    return
                continue
            except (EOFError, OSError, ValueError):  # the queue was closed under us
                return
            logging.getLogger(record.name).handle(record)

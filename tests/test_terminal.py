"""What the terminal shows (``localrules.logs``): records of a spawned process reach the parent's
handler, TensorFlow's and absl's native lines are dropped below DEBUG, and a real ``localrules
search`` under a pseudo-terminal shows its progress bar, one line per finished trial and its
leaderboard, with no TensorFlow line and no log text breaking a redraw of the bar."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import pty
import struct
import subprocess
import sys
import termios
import time

import pytest

from localrules.cli.main import log_levels
from localrules.logs import LogForwarder, native_noise, send_to

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE_SAMPLES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796266789.051224     512 port.cc:153] oneDNN custom operations are on.",
    "W0000 00:00:1796266789.051224     512 cpu_allocator_impl.cc:84] Allocation exceeds 10%",
    "2026-12-03 02:59:47.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] This",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
]
KEPT_SAMPLES = [
    "E0000 00:00:1796266789.051224     512 op_kernel.cc:1830] OP_REQUIRES failed",
    "F0000 00:00:1796266789.051224     512 check.cc:12] Check failed: x",
    "Traceback (most recent call last):",
    "2026-12-03 02:59:47,816 WARNING localrules.worker.loop: worker-0 lease lost",
]
TENSORFLOW_TRACES = ("oneDNN", "absl", "I0000", "W0000", "tensorflow/", "Sharding callback",
                     "cpu_feature_guard", "InitializeLog", "port.cc")


def _child(queue, level: int) -> None:
    """A spawned process's logging, as a local worker's (``worker.local.worker_main``)."""
    send_to(queue, level, prefix="worker-7 ")
    logging.getLogger("localrules.worker.loop").info("not sent below the child's level")
    logging.getLogger("localrules.worker.loop").warning("lease of trial %d lost", 3)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("localrules.worker.loop").exception("trial 4 failed")


def test_a_record_logged_in_a_spawned_child_reaches_the_parents_handler(caplog):
    context = multiprocessing.get_context("spawn")
    with caplog.at_level(logging.DEBUG), LogForwarder(context) as forwarder:
        child = context.Process(target=_child, args=(forwarder.queue, logging.WARNING))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        deadline = time.monotonic() + 10
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    records = [r for r in caplog.records if r.name == "localrules.worker.loop"]
    assert [r.getMessage().splitlines()[0] for r in records] == [
        "worker-7 lease of trial 3 lost", "worker-7 trial 4 failed"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.ERROR]
    assert "RuntimeError: boom" in records[1].getMessage()  # the traceback came along
    assert all(r.process == child.pid for r in records)


def test_tensorflow_and_absl_info_and_warning_lines_are_noise_errors_are_not():
    assert all(map(native_noise, NATIVE_SAMPLES))
    assert not any(map(native_noise, KEPT_SAMPLES))


def test_the_native_filter_drops_tensorflow_lines_on_descriptor_2_and_keeps_the_rest():
    """In a process of its own: pytest captures stderr, and the filter leaves a captured
    stderr alone. What is written to descriptor 2 (as TensorFlow's C++ side writes) and
    through ``sys.stderr`` both arrive, less the native info and warning lines; at DEBUG
    nothing is dropped."""
    lines = "\n".join(NATIVE_SAMPLES + KEPT_SAMPLES) + "\n"
    script = ("import os, sys\nfrom localrules.logs import NativeFilter\n"
              "with NativeFilter(show=sys.argv[1] == 'show'):\n"
              f"    os.write(2, {lines.encode()!r})\n"
              "    print('through sys.stderr', file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    for mode, expected in (("quiet", KEPT_SAMPLES), ("show", NATIVE_SAMPLES + KEPT_SAMPLES)):
        run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True,
                             text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
        shown = run.stderr.splitlines()
        assert sorted(shown) == sorted([*expected, "through sys.stderr"]), mode


def test_search_is_quiet_by_default_and_verbosity_flags_override_it():
    from localrules.cli.main import build_parser

    parse = build_parser().parse_args
    search = ["search", "--space", "wm", "--experiment", "e"]
    assert log_levels(parse(search)) == (logging.WARNING, {  # its lines and promotions shown
        "localrules.cli": logging.INFO, "localrules.search.controller.promotions": logging.INFO})
    assert log_levels(parse(["-v", *search])) == (logging.DEBUG, {})
    assert log_levels(parse(["--log-level", "INFO", *search])) == (logging.INFO, {})
    assert log_levels(parse(["rules"])) == (logging.INFO, {})
    assert log_levels(parse(["--log-level", "error", "rules"])) == (logging.ERROR, {})


def run_in_terminal(args: list[str], cwd, timeout: float = 600) -> tuple[int, str]:
    """``localrules ARGS`` with a pseudo-terminal (120 columns) as stdin, stdout and stderr,
    as a user's shell runs it: everything it wrote, in order, and its exit status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "TQDM"))}
    env["PYTHONPATH"] = ROOT
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "localrules.cli.main", *args], cwd=cwd,
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every holder of the terminal has closed it
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=max(1.0, deadline - time.monotonic())), out.decode("utf-8",
                                                                            "replace")


@pytest.mark.slow
def test_search_in_a_terminal_shows_a_bar_a_line_per_trial_and_no_tensorflow(tmp_path):
    status, out = run_in_terminal(
        ["search", "--space", "wm-ad", "--experiment", "tty", "--db",
         f"sqlite:///{tmp_path}/s.db", "--max-trials", "1", "--references", "bp",
         "--workers", "1", "--epochs", "1", "--width", "4", "--artifacts",
         str(tmp_path / "art"), "--poll", "0.5"], cwd=tmp_path)
    assert status == 0, out[-3000:]
    assert not [t for t in TENSORFLOW_TRACES if t in out], out[-3000:]
    # the workers' per-trial info lines stay out of it; the search's own come in order
    assert "worker-0" not in out and "training" not in out and "INFO" not in out
    segments = [s for s in out.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                if s.strip()]
    bars = [s for s in segments if s.startswith("trials:")]
    text = [s for s in segments if not s.startswith("trials:")]
    assert len(bars) >= 3 and bars[-1].startswith("trials: 100%")
    reference = [s for s in text if "reference bp (trial 0) done: objective " in s]
    trial = [s for s in text if "trial 1 done: objective " in s and "best so far: trial 1" in s]
    assert len(reference) == 1 and len(trial) == 1
    assert text.index(reference[0]) < text.index(trial[0])
    # a redraw of the bar and a log line never share a line of the terminal
    assert not [s for s in bars if "done:" in s or "WARNING" in s]
    assert not [s for s in text if "trial/s" in s or "trials:" in s]
    # the leaderboard comes last, once the bar is gone
    assert text[-1].startswith("best trial 1: objective")
    assert out.rindex("trials:") < out.index("experiment tty: 1 done")

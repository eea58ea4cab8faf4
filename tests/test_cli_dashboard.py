"""``localrules dashboard`` as a user runs it: refusals before anything starts (exit 2 for bad
input, 1 for a database that cannot be reached), and a real server that answers, holds no lock
on the database a search is writing, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from dashboard_fill import fill
from helpers import free_port

from localrules.cli.main import main

pytest.importorskip("uvicorn", reason="the dashboard extra installs uvicorn")


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    fill(url, n=6, queued=1)
    return url


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "0.0.0.0"], "binding beyond this machine needs a token"),
    (["--host", "192.0.2.1", "--token", "short"], "--token: at least 16 characters"),
    (["--token", "has spaces in the token"], "--token: at least 16 characters"),
    (["--token", "a&b=c#d+e%41-0123456789"], "each a letter, digit"),
    (["--host", "no-such-host.invalid", "--token", "x" * 20], "--host no-such-host.invalid"),
])
def test_bad_addresses_and_tokens_exit_2(db, capsys, args, message):
    assert main(["dashboard", "--db", db, "--port", str(free_port()), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_exits_2(db, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["dashboard", "--db", db, "--port", str(port)]) == 2
    assert f"--port {port}: already in use" in capsys.readouterr().err


def test_a_port_out_of_range_is_argparses_error(db, capsys):
    assert main(["dashboard", "--db", db, "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def test_a_missing_database_is_bad_input_and_created_by_nobody(tmp_path, capsys):
    path = tmp_path / "typo.db"
    assert main(["dashboard", "--db", f"sqlite:///{path}", "--port", str(free_port())]) == 2
    assert "no database at" in capsys.readouterr().err and not path.exists()


def test_an_unreachable_database_exits_1_without_its_password(capsys):
    url = (f"mongodb://reader:Hunter2-secret@127.0.0.1:{free_port()}/lr"
           "?serverSelectionTimeoutMS=300")
    assert main(["dashboard", "--db", url, "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "database error" in err and "Hunter2-secret" not in err


def test_without_the_extra_the_message_says_how_to_install_it(monkeypatch):
    import importlib.util

    from localrules.dashboard.serve import require_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "starlette" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'localrules\[dashboard\]' \(starlette"):
        require_extra()


def test_the_server_answers_leaves_the_database_writable_and_stops_on_ctrl_c(db):
    import urllib.request

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "localrules.cli.main", "dashboard", "--db",
                             db, "--port", str(port)], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        body = _wait_for(f"http://127.0.0.1:{port}/api/experiments", proc)
        assert '"name":"dash"' in body
        from localrules.store import open_store

        with open_store(db) as writer:  # a search goes on writing while a page is open
            trial = writer.reserve("w-live", 60, ["dash"])
            writer.complete("dash", trial.trial_id, trial.attempt,
                            {"objective": 0.42, "diverged": False, "epochs": 3})
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/experiments/dash/trials/"
                                      f"{trial.trial_id}", timeout=10).read().decode()
        assert '"state":"done"' in page
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in err


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited {proc.returncode}: {proc.stderr.read()}")
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"no answer from {url} in {timeout:.0f} s")

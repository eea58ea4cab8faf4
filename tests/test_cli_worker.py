"""``localrules worker`` against a real MongoDB wire-protocol server: it drains the queue and
exits when idle; SIGTERM hands the running trial back and exits 0, and the next worker resumes it
from its checkpoint; bad input exits 2 and a dead database exits 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import free_port, queue_trials, tiny_configs

from localrules.cli.main import main
from localrules.store import open_store


def _queue(url: str, *epochs: int) -> None:
    with open_store(url) as store:
        queue_trials(store, tiny_configs(*epochs))


def worker(url: str, *args: str, log=None) -> subprocess.Popen:
    """A `localrules worker` process; its log goes to ``log`` (a file) when several run at once,
    since an unread pipe fills up and blocks the process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.PIPE if log is None else log
    return subprocess.Popen([sys.executable, "-m", "localrules.cli.main", "worker", "--db", url,
                             "--poll", "0.2", *args], stdout=out, stderr=out, text=True, env=env)


@pytest.mark.slow  # long evidence: `python -m pytest -m slow` (.ci/run) runs it
def test_a_worker_drains_the_queue_and_exits_when_idle(mongodb_database_url, tmp_path):
    _queue(mongodb_database_url, 1, 1)
    proc = worker(mongodb_database_url, "--experiment", "exp", "--idle-exit", "1",
                  "--artifacts", str(tmp_path / "art"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    with open_store(mongodb_database_url) as store:
        trials = store.trials("exp")
    assert [t.state for t in trials] == ["done", "done"]
    assert all(t.result["epochs"] == 1 and t.attempt == 1 for t in trials)
    assert "2 done, 0 failed" in err


@pytest.mark.slow  # a killed or signalled process, or a second strategy: evidence, minutes
def test_sigterm_hands_the_trial_back_and_the_next_worker_resumes_it(mongodb_database_url,
                                                                     tmp_path,
                                                                     sigterm_after_epoch):
    url, art = mongodb_database_url, str(tmp_path / "art")
    _queue(url, 6)
    code, err = sigterm_after_epoch(worker(url, "--artifacts", art, "--lease", "30"), url, "exp",
                                    timeout=120)
    assert code == 0, err[-3000:]
    with open_store(url) as store:
        trial = store.get_trial("exp", 0)
    assert trial.state == "queued" and trial.attempt == 1 and trial.result is None
    assert "handed back" in err or "handing it back" in err

    second = worker(url, "--artifacts", art, "--idle-exit", "0.5")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert "resumed from the checkpoint" in err
    with open_store(url) as store:
        trial = store.get_trial("exp", 0)
    assert trial.state == "done" and trial.attempt == 2 and trial.result["epochs"] == 6


@pytest.mark.parametrize(("args", "message"), [
    (["--lease", "0"], "argument --lease: must be a number in (0, 604800], got '0'"),
    (["--max-trials", "0"], "argument --max-trials: must be an integer in [1, 1000000]"),
    (["--idle-exit", "-1"], "argument --idle-exit: must be a number in [0, "),
    (["--experiment", "bad name"], "invalid experiment name"),
])
def test_worker_bad_input_exits_2(mongodb_database_url, capsys, args, message):
    assert main(["worker", "--db", mongodb_database_url, *args]) == 2
    assert message in capsys.readouterr().err


def test_a_worker_may_start_before_its_experiment_exists(mongodb_database_url, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        assert main(["worker", "--db", mongodb_database_url, "--experiment", "later",
                     "--idle-exit", "0", "--poll", "0.1"]) == 0
    assert "no experiment 'later'" in caplog.text and "waiting for its trials" in caplog.text


def test_worker_with_an_unknown_scheme_or_a_dead_database(capsys):
    assert main(["worker", "--db", "redis://u:pw-123@h/0"]) == 2
    err = capsys.readouterr().err
    assert "unknown database URL scheme" in err and "pw-123" not in err
    dead = f"mongodb://u:pw-456@127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=500"
    assert main(["worker", "--db", dead]) == 1
    err = capsys.readouterr().err
    assert "database error" in err and "pw-456" not in err


@pytest.mark.slow
def test_one_controller_feeds_remote_workers_through_mongodb(mongodb_database_url, tmp_path):
    """The cluster path: `search --workers 0` only queues; two `localrules worker` processes
    (standing in for two VMs) drain the queue; every trial is done exactly once."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    url, art = mongodb_database_url, str(tmp_path / "art")
    logs = [open(tmp_path / f"vm-{i}.log", "w") for i in range(2)]  # noqa: SIM115
    controller = subprocess.Popen(
        [sys.executable, "-m", "localrules.cli.main", "search", "--space", "wm", "--experiment",
         "cluster", "--db", url, "--workers", "0", "--concurrency", "2", "--max-trials", "4",
         "--epochs", "1", "--width", "4", "--poll", "0.3", "--artifacts", art],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    workers = [worker(url, "--experiment", "cluster", "--idle-exit", "10", "--artifacts", art,
                      "--name", f"vm-{i}", log=logs[i]) for i in range(2)]
    try:
        out, err = controller.communicate(timeout=400)
        for w in workers:
            w.wait(timeout=120)
    finally:
        for p in (controller, *workers):
            p.kill()
        for f in logs:
            f.close()
    worker_logs = "".join((tmp_path / f"vm-{i}.log").read_text()[-2000:] for i in range(2))
    assert controller.returncode == 0, err[-3000:] + worker_logs
    assert all(w.returncode == 0 for w in workers), worker_logs
    with open_store(url) as store:
        trials = store.trials("cluster")
    # the bp and fa reference runs are trained by the remote workers too
    assert [t.trial_id for t in trials] == [0, 1, 2, 3, 4, 5]
    assert [(t.reference or {}).get("rule") for t in trials[:2]] == ["bp", "fa"]
    assert all(t.state == "done" and t.attempt == 1 for t in trials)
    assert {t.worker for t in trials} <= {"vm-0", "vm-1"}
    assert "best trial" in out and "references: bp " in out

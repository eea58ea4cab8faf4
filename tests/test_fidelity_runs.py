"""Multi-fidelity searches end to end, with real TensorFlow training (tiny budgets on digits) and
real processes: ``localrules search --fidelity asha`` with local workers on SQLite and on MongoDB
(SecantusDB); a worker killed -9 while it trains a promoted trial, which another worker resumes
from its checkpoint past the rung epoch; a controller killed -9 after some promotions and
restarted, which makes the promotions its predecessor left due.

Evidence checked on every search:
- the promotions follow ASHA's rule: none is left due in the final documents
  (``search.fidelity.promotions``), and each promotion made was in the top 1/η of its rung when
  made, as seen by a thread that watches the store throughout the search;
- every trial finished exactly once: its ``result.rungs`` holds each rung once, from its bracket's
  up to its current one; each reservation trained one rung (attempts = rungs + lease lapses);
  its ``history.jsonl`` has every epoch once, at the steps of an uninterrupted run; and every
  promoted run resumed from the trial's checkpoint at the rung's last step (the workers' log
  line "resumed from the checkpoint in … at step S"), never from step 0.

The space is one task learning rate for backprop (a YAML space): rules that differ at once, so
the rungs rank something, at a few seconds per epoch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from localrules.search.fidelity import Fidelity, promotions, rung_points
from localrules.store import StoreError, Trial, open_store
from localrules.store.urls import sqlite_path

SPACE = """\
name: lr
description: backprop's task learning rate, for multi-fidelity runs
base: bp
fixed: {run.batch_size: 32}
parameters:
  run.task_lr: {loguniform: [1.0e-2, 1.0]}
"""
RESUMED = re.compile(r"resumed from the checkpoint in (\S+) at step (\d+)")
PROMOTED = re.compile(r"trial (\d+) promoted to rung (\d+)")
COMPLETED = re.compile(r"trial (\d+) of 'mf' \(attempt (\d+)\) (?:paused at rung (\d+)|done):")


# --- processes ----------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "localrules.cli.main", *args]


def search_args(tmp_path: Path, url: str, *, epochs: int, min_epochs: int, eta: int,
                trials: int, workers: int, **more: str) -> list[str]:
    """``localrules search`` on digits (width 4) with ASHA, no references, no warm start."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE, encoding="utf-8")
    args = ["search", "--space", str(space), "--experiment", "mf", "--db", url,
            "--epochs", str(epochs), "--width", "4", "--fidelity", "asha",
            "--min-epochs", str(min_epochs), "--reduction-factor", str(eta),
            "--max-trials", str(trials), "--workers", str(workers), "--references", "none",
            "--no-warm-start", "--artifacts", str(tmp_path / "art"), "--poll", "0.3"]
    for flag, value in more.items():
        args += [f"--{flag.replace('_', '-')}", value]
    return args


def start(args: Sequence[str], log: Path) -> subprocess.Popen:
    """A ``localrules`` process logging to a file (an unread pipe would fill up and block it)."""
    with open(log, "a") as out:
        return subprocess.Popen(_command(*args), stdout=out, stderr=subprocess.STDOUT,
                                text=True, env=_env())


def start_worker(tmp_path: Path, url: str, name: str, *more: str) -> subprocess.Popen:
    return start(["worker", "--db", url, "--experiment", "mf", "--name", name, "--poll", "0.2",
                  "--artifacts", str(tmp_path / "art"), "--spool", str(tmp_path / f"spool-{name}"),
                  *more], tmp_path / f"{name}.log")


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def wait_exit(proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> str:
    """Wait for ``proc`` to exit 0; its log."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{log.name} still running after {timeout:.0f} s:\n"
                    f"{log.read_text()[-4000:]}")
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


# --- watching the store -------------------------------------------------------------------------
class Watch:
    """A thread that reads the experiment's trials every ``every`` seconds and keeps each
    snapshot that differs from the last: {trial_id: trial}. ``until(condition)`` waits for a
    snapshot that satisfies ``condition``."""

    def __init__(self, url: str, experiment: str = "mf", every: float = 0.1) -> None:
        self.url, self.experiment, self.every = url, experiment, every
        self.snapshots: list[dict[int, Trial]] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        if self.url.startswith("sqlite:"):
            while not Path(sqlite_path(self.url)).exists() and not self._stop.is_set():
                time.sleep(self.every)
        store = None
        while not self._stop.is_set():
            try:
                store = store or open_store(self.url, read_only=True)
                trials = {t.trial_id: t for t in store.trials(self.experiment)}
            except (StoreError, ValueError):  # not created yet, or busy: look again
                time.sleep(self.every)
                continue
            with self._changed:
                if not self.snapshots or _key(trials) != _key(self.snapshots[-1]):
                    self.snapshots.append(trials)
                    self._changed.notify_all()
            time.sleep(self.every)
        if store is not None:
            store.close()

    def until(self, condition: Callable[[dict[int, Trial]], Any], timeout: float = 240.0,
              what: str = "") -> Any:
        """The first truthy ``condition(snapshot)`` of a snapshot taken from now on."""
        deadline = time.monotonic() + timeout
        seen = len(self.snapshots) - 1 if self.snapshots else 0
        with self._changed:
            while time.monotonic() < deadline:
                while seen < len(self.snapshots):
                    found = condition(self.snapshots[seen])
                    if found:
                        return found
                    seen += 1
                self._changed.wait(0.5)
        pytest.fail(f"no snapshot with {what or condition} in {timeout:.0f} s")


def _key(trials: Mapping[int, Trial]) -> list[tuple]:
    return [(i, t.state, t.attempt, str(t.fidelity), str(t.result), (t.progress or {}).get("epoch"))
            for i, t in sorted(trials.items())]


# --- the evidence -------------------------------------------------------------------------------
def rung_table(snapshot: Mapping[int, Trial], bracket: int, rung: int) -> dict[int, float]:
    """Rung ``rung`` of ``bracket`` in a snapshot: {trial_id: rung objective}."""
    return {i: objective for i, t in snapshot.items()
            if t.fidelity is not None and t.fidelity["bracket"] == bracket
            for r, objective in rung_points(t.result) if r == rung}


def promotion_faults(final: Sequence[Trial], snapshots: Sequence[Mapping[int, Trial]],
                     fidelity: Fidelity, epochs: int) -> tuple[list[str], int]:
    """Where ASHA's rule did not hold, and how many promotions were checked. No promotion may
    be due in the ``final`` documents (``search.fidelity.promotions``), and each promotion the
    watcher's ``snapshots`` show must have been in the top 1/η of its rung when made: between
    the last snapshot before it (rung table ``A``) and the first after it (``B``) the
    controller saw a table between the two, so the promotion is justified if it is in the top
    ⌊n/η⌋ of the most favourable one (``A``, itself, and the results of ``B`` ranked below
    it)."""
    from localrules.store import HistoryEntry

    due = promotions([HistoryEntry.of(t) for t in final], fidelity, epochs)
    faults = [f"trial {e.trial_id} is due for rung {f['rung']}" for e, f in due]
    eta, checked = fidelity.reduction_factor, 0
    for trial in final:
        i, bracket = trial.trial_id, trial.fidelity["bracket"]
        mine = dict(rung_points(trial.result))
        for rung in range(bracket, trial.fidelity["rung"]):
            at = next((n for n, s in enumerate(snapshots)
                       if i in s and s[i].fidelity["rung"] > rung), None)
            if at is None:
                faults.append(f"trial {i}: its promotion past rung {rung} was never seen")
                continue
            before = rung_table(snapshots[at - 1], bracket, rung) if at else {}
            after = rung_table(snapshots[at], bracket, rung)
            me = (-mine[rung], i)
            table = {**before, i: mine[rung],
                     **{j: o for j, o in after.items() if (-o, j) > me}}
            ranked = sorted(table, key=lambda j: (-table[j], j))
            if ranked.index(i) >= len(table) // eta:
                faults.append(f"trial {i} promoted past rung {rung} at rank "
                              f"{ranked.index(i) + 1} of {len(table)} ({table})")
            checked += 1
    return faults, checked


def check_promotions(url: str, snapshots: Sequence[Mapping[int, Trial]], fidelity: Fidelity,
                     epochs: int) -> int:
    """``promotion_faults`` of the stored search: none. Returns the promotions checked."""
    with open_store(url, read_only=True) as store:
        final = store.trials("mf")
    faults, checked = promotion_faults(final, snapshots, fidelity, epochs)
    assert not faults, faults
    return checked


def resumes(log: str) -> dict[int, list[int]]:
    """The steps each trial's runs resumed at, in log order: {trial_id: [step, …]}."""
    found: dict[int, list[int]] = defaultdict(list)
    for path, step in RESUMED.findall(log):
        found[int(re.search(r"trial-(\d+)$", path).group(1))].append(int(step))
    return found


def completions(log: str) -> dict[int, list[tuple[int, int | None]]]:
    """The workers' final writes per trial, by attempt: {trial_id: [(attempt, rung paused at,
    or None for done), …]}."""
    found: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
    for trial, attempt, rung in COMPLETED.findall(log):
        found[int(trial)].append((int(attempt), int(rung) if rung else None))
    return {t: sorted(c) for t, c in found.items()}


def check_completed_once(trial: Trial, completed: Sequence[tuple[int, int | None]]) -> None:
    """The workers wrote one result per rung the trial trained, each from another attempt:
    paused at each rung below its last, then done once (or paused there)."""
    trained = [r["rung"] for r in trial.result["rungs"]]
    attempts = [a for a, _ in completed]
    assert len(set(attempts)) == len(attempts) and attempts[-1] == trial.attempt, completed
    last = None if not trial.result["stopped_early"] else trained[-1]
    assert [r for _, r in completed] == [*trained[:-1], last], (trial.trial_id, completed)


def check_finished_once(trial: Trial, rungs: Sequence[int], artifacts: Path,
                        resumed: Sequence[int] | None) -> int:
    """One trial's evidence (module docstring); ``resumed``: the steps its runs resumed at,
    checked against the rung boundaries when given. Returns its steps per epoch."""
    import json

    result, fidelity, last = trial.result, trial.fidelity, len(rungs) - 1
    assert trial.state == "done", (trial.trial_id, trial.state, trial.error)
    trained = [r["rung"] for r in result["rungs"]]
    assert trained == list(range(fidelity["bracket"], fidelity["rung"] + 1)), result["rungs"]
    assert [r["epochs"] for r in result["rungs"]] == [rungs[k] for k in trained]
    assert result["rung"] == fidelity["rung"] and fidelity["epochs"] == rungs[fidelity["rung"]]
    assert result["epochs"] == result["trial_epochs"] == fidelity["epochs"]
    assert result["stopped_early"] is (fidelity["rung"] < last)
    assert result["rungs"][-1]["objective"] == result["objective"]
    assert trial.attempt == len(trained) + trial.lapses  # a reservation trains one rung
    history = [json.loads(line) for line in
               (artifacts / "mf" / f"trial-{trial.trial_id:05d}" / "history.jsonl").open()]
    per_epoch = history[0]["step"]
    assert [r["epoch"] for r in history] == list(range(1, result["epochs"] + 1))
    assert [r["step"] for r in history] == [e * per_epoch for e in range(1, result["epochs"] + 1)]
    assert result["steps"] == result["epochs"] * per_epoch
    if resumed is not None:  # each promoted run resumed at the end of the rung below
        assert sorted(resumed) == [rungs[k] * per_epoch for k in trained[:-1]], (
            trial.trial_id, resumed)
    return per_epoch


def check_search(url: str, artifacts: Path, log: str, snapshots, *, epochs: int,
                 min_epochs: int, eta: int, trials: int) -> list[Trial]:
    """Every check of a finished search without lapses; its trials."""
    fidelity = Fidelity("asha", min_epochs, eta)
    rungs = fidelity.rungs(epochs)
    with open_store(url, read_only=True) as store:
        final = store.trials("mf")
    assert len(final) == trials and all(t.lapses == 0 for t in final)
    steps, completed = resumes(log), completions(log)
    for trial in final:
        check_finished_once(trial, rungs, artifacts, steps.get(trial.trial_id, []))
        check_completed_once(trial, completed.get(trial.trial_id, []))
    assert set(steps) <= {t.trial_id for t in final}
    paused = [t for t in final if t.fidelity["rung"] == 0]
    finished = [t for t in final if t.fidelity["rung"] == len(rungs) - 1]
    assert paused and all(t.result["stopped_early"] for t in paused)
    assert finished and all(not t.result["stopped_early"] for t in finished)
    assert check_promotions(url, snapshots, fidelity, epochs) >= len(rungs) - 1
    return final


# --- the checker can fail --------------------------------------------------------------------
def _trial(i: int, state: str, rung: int, objectives: Sequence[float]) -> Trial:
    """A trial of an η-2 ASHA search with rungs at 1 and 2 epochs."""
    rungs = [{"rung": k, "epochs": k + 1, "objective": o} for k, o in enumerate(objectives)]
    result = None if not rungs else {"objective": objectives[-1], "rung": len(rungs) - 1,
                                     "stopped_early": len(rungs) < 2, "rungs": rungs}
    return Trial("mf", i, {}, {}, {"idxs": {}, "vals": {}}, state=state, result=result,
                 fidelity={"bracket": 0, "rung": rung, "epochs": rung + 1})


def test_the_promotion_checker_flags_a_promotion_out_of_the_top_and_one_left_due():
    asha = Fidelity("asha", 1, 2)
    two = [_trial(0, "done", 0, [0.3]), _trial(1, "done", 0, [0.5])]
    # Trial 1 (the better) promoted once both had reported: right.
    promoted = [two[0], _trial(1, "queued", 1, [0.5])]
    final = [two[0], _trial(1, "done", 1, [0.5, 0.7])]
    assert promotion_faults(final, [dict(enumerate(two)), dict(enumerate(promoted))], asha,
                            2) == ([], 1)
    # Trial 0 (the worse) promoted instead, and trial 1 left paused though due.
    wrong = [_trial(0, "queued", 1, [0.3]), two[1]]
    final = [_trial(0, "done", 1, [0.3, 0.9]), two[1]]
    faults, checked = promotion_faults(final, [dict(enumerate(two)), dict(enumerate(wrong))],
                                       asha, 2)
    assert checked == 1 and len(faults) == 2
    assert "trial 1 is due for rung 1" in faults[0] and "trial 0 promoted past rung 0" in faults[1]
    # A promotion made before the other result was in (the controller saw one of one): wrong.
    alone = [_trial(0, "done", 0, [0.5])]
    early = [_trial(0, "queued", 1, [0.5])]
    final = [_trial(0, "done", 1, [0.5, 0.9]), _trial(1, "done", 0, [0.3])]
    faults, _ = promotion_faults(final, [{0: alone[0]}, {0: early[0]}], asha, 2)
    assert faults and "rank 1 of 1" in faults[0]


# --- the searches -------------------------------------------------------------------------------
def _search_with_local_workers(tmp_path: Path, url: str, **budget: int) -> list[Trial]:
    log = tmp_path / "search.log"
    with Watch(url) as watch:
        # --log-level info: the workers' per-trial lines, which the checks read (a search
        # hides them by default)
        proc = start(["--log-level", "info", *search_args(tmp_path, url, workers=2, **budget)],
                     log)
        try:
            text = wait_exit(proc, log, timeout=400)
        finally:
            stop(proc)
    assert "best trial" in text and "promoted to rung 1" in text
    return check_search(url, tmp_path / "art", text, watch.snapshots, **budget)


@pytest.mark.slow  # real training in real processes: evidence, minutes
def test_asha_on_sqlite_with_two_workers_pauses_promotes_and_resumes(tmp_path):
    """Rungs at 1, 2 and 4 epochs, η 2, 8 trials: some pause at 1 epoch, some finish all 4."""
    budget = {"epochs": 4, "min_epochs": 1, "eta": 2, "trials": 8}
    final = _search_with_local_workers(tmp_path, f"sqlite:///{tmp_path}/s.db", **budget)
    assert len({t.worker for t in final}) == 2


@pytest.mark.slow
def test_asha_on_mongodb_with_two_workers_pauses_promotes_and_resumes(tmp_path,
                                                                      mongodb_database_url):
    """Rungs at 1 and 2 epochs, η 2, 4 trials, through a MongoDB wire-protocol server."""
    _search_with_local_workers(tmp_path, mongodb_database_url, epochs=2, min_epochs=1, eta=2,
                               trials=4)


@pytest.mark.slow
def test_a_worker_killed_in_a_promoted_trial_is_replaced_from_the_checkpoint(tmp_path):
    """Rungs at 2 and 6 epochs, η 3, two ``localrules worker`` processes with 15 s leases (short,
    yet long enough for a heartbeat on a loaded machine): the worker training a promoted trial
    is killed -9 past epoch 2; once its lease expires the other worker resumes the trial from
    its latest checkpoint (past the rung, not epoch 0) and finishes it; the trial is done once,
    with each epoch in its history once."""
    url, art = f"sqlite:///{tmp_path}/s.db", tmp_path / "art"
    budget = {"epochs": 6, "min_epochs": 2, "eta": 3, "trials": 4}
    fidelity = Fidelity("asha", 2, 3)
    log = tmp_path / "search.log"
    with Watch(url) as watch:
        search = start(search_args(tmp_path, url, workers=0, concurrency="2", **budget), log)
        workers = {name: start_worker(tmp_path, url, name, "--lease", "15")
                   for name in ("vm-0", "vm-1")}
        try:
            def promoted_past_its_rung(snapshot):
                return next((t for t in snapshot.values()
                             if t.state == "running" and t.fidelity["rung"] >= 1
                             and (t.progress or {}).get("epoch", 0) > 2), None)

            victim = watch.until(promoted_past_its_rung, what="a promoted trial past epoch 2")
            workers[victim.worker].send_signal(signal.SIGKILL)
            workers[victim.worker].wait(30)
            survivor = next(n for n in workers if n != victim.worker)
            text = wait_exit(search, log, timeout=400)
            workers[survivor].send_signal(signal.SIGTERM)  # idle by now: it just exits
            wait_exit(workers[survivor], tmp_path / f"{survivor}.log", timeout=60)
        finally:
            stop(search, *workers.values())
    killed_at = victim.progress["epoch"]
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in workers}
    assert f"trial {victim.trial_id} of 'mf': lease expired on attempt {victim.attempt}" in text

    with open_store(url, read_only=True) as store:
        final = store.trials("mf")
    trial = next(t for t in final if t.trial_id == victim.trial_id)
    assert trial.lapses == 1 and trial.attempt == victim.attempt + 1
    assert trial.worker == survivor and trial.fidelity["rung"] == 1
    per_epoch = check_finished_once(trial, fidelity.rungs(6), art, None)
    # The killed run resumed at the rung's end; the survivor at the killed run's last
    # checkpoint, an epoch's end at or past the epoch it had reported, below the last.
    (first,) = resumes(logs[victim.worker])[trial.trial_id]
    (second,) = resumes(logs[survivor])[trial.trial_id]
    assert first == 2 * per_epoch
    assert second % per_epoch == 0 and killed_at * per_epoch <= second < 6 * per_epoch
    completed = completions("".join(logs.values()))
    for other in final:
        check_completed_once(other, completed.get(other.trial_id, []))
        if other.trial_id != trial.trial_id:
            assert other.lapses == 0
            check_finished_once(other, fidelity.rungs(6), art, None)
    assert check_promotions(url, watch.snapshots, fidelity, 6) >= 1


@pytest.mark.slow
def test_a_controller_killed_after_promotions_is_restarted_and_makes_those_due(tmp_path):
    """Rungs at 1, 2 and 4 epochs, η 2, 4 trials queued at once, two ``localrules worker``
    processes. The controller is killed -9 at the first promotion; the workers go on and
    finish what is queued, so promotions fall due with no controller to make them. The same
    command, run again, takes the dead controller's lock over at once, makes exactly the
    promotions due (read from the documents alone) in its first round and finishes the search:
    no trial trains a rung twice or finishes twice."""
    url, art = f"sqlite:///{tmp_path}/s.db", tmp_path / "art"
    budget = {"epochs": 4, "min_epochs": 1, "eta": 2, "trials": 4}
    fidelity = Fidelity("asha", 1, 2)
    args = search_args(tmp_path, url, workers=0, concurrency="4", **budget)
    first_log, second_log = tmp_path / "search-1.log", tmp_path / "search-2.log"
    with Watch(url) as watch:
        search = start(args, first_log)
        workers = [start_worker(tmp_path, url, f"vm-{i}") for i in range(2)]
        try:
            watch.until(lambda s: any(t.fidelity["rung"] >= 1 for t in s.values()),
                        what="a promotion")
            search.send_signal(signal.SIGKILL)
            search.wait(30)

            def settled(snapshot):  # all queued trials trained, none left for the workers
                return len(snapshot) == 4 and all(t.state == "done" for t in snapshot.values())

            watch.until(settled, what="every trial done at its rung")
            with open_store(url, read_only=True) as store:
                entries, _ = store.changes("mf", 0)
            due = {(e.trial_id, f["rung"]) for e, f in promotions(entries, fidelity, 4)}
            # at least one: the second of rung 0's top 2, or the best of rung 1 (module doc)
            assert due, "no promotion due after the controller died"

            search = start(args, second_log)
            text = wait_exit(search, second_log, timeout=400)
            for proc in workers:  # idle by now: they just exit
                proc.send_signal(signal.SIGTERM)
            for i, proc in enumerate(workers):
                wait_exit(proc, tmp_path / f"vm-{i}.log", timeout=60)
        finally:
            stop(search, *workers)
    assert "no longer runs; taking it over" in text
    made = [(int(i), int(r)) for i, r in PROMOTED.findall(text)]
    assert set(made[:len(due)]) == due, (made, due)  # its first round: exactly those due
    logs = "".join((tmp_path / f"vm-{i}.log").read_text() for i in range(2))
    final = check_search(url, art, logs, watch.snapshots, **budget)
    with open_store(url, read_only=True) as store:
        assert store.get_experiment("mf").settings["fidelity"] == fidelity.to_dict()
    # Each promotion, by either controller, trained one more rung.
    made_first = PROMOTED.findall(first_log.read_text())
    assert made_first and sum(len(t.result["rungs"]) for t in final) == 4 + len(made_first) + len(
        made)

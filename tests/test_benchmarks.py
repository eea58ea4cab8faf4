"""The benchmarks' timing machinery: clocks, per-round ratios and their spread, turn-taking.

``benchmarks/`` is not a package; its scripts import their sibling ``timing`` module because the
script's folder leads sys.path, so the tests put it there the same way.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def timing(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("timing")


@pytest.fixture
def bench_train(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_train")


def test_cpu_time_leaves_out_waiting_and_counts_work(timing):
    """The premise of the CPU-time ratios: time the process spends off the CPU (here asleep, on a
    busy host preempted) is in the wall clock only."""
    start = timing.mark()
    time.sleep(0.3)
    idle = timing.since(start)
    assert idle.wall >= 0.3
    assert idle.cpu < 0.1
    start = timing.mark()
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        pass
    busy = timing.since(start)
    assert busy.cpu > 0.15
    assert busy.utilisation > 0.5


def test_cpu_time_counts_every_thread(timing):
    """TensorFlow's pools are threads of the process; their work must be in the CPU clock."""
    def spin() -> None:
        deadline = time.thread_time() + 0.2
        while time.thread_time() < deadline:
            pass

    start = timing.mark()
    worker = threading.Thread(target=spin)
    worker.start()
    worker.join()
    assert timing.since(start).cpu >= 0.19


def test_spread_gives_quartiles_of_the_values(timing):
    assert timing.spread([5.0, 1.0, 3.0, 2.0, 4.0]) == {
        "min": 1.0, "q1": 2.0, "median": 3.0, "q3": 4.0, "max": 5.0}
    assert timing.spread([2.5]) == {"min": 2.5, "q1": 2.5, "median": 2.5, "q3": 2.5, "max": 2.5}
    with pytest.raises(ValueError, match="at least one"):
        timing.spread([])


def test_ratio_report_compares_each_block_with_the_baseline_of_its_round(timing):
    S = timing.Sample
    rounds = [
        # a neighbour slowed round 2's wall clock for everyone; CPU time is unmoved
        {"native": S(wall=10.0, cpu=19.0), "fa": S(wall=11.0, cpu=19.0)},
        {"native": S(wall=20.0, cpu=20.0), "fa": S(wall=21.0, cpu=21.0)},
        {"native": S(wall=10.5, cpu=20.0), "fa": S(wall=10.0, cpu=18.0)},
    ]
    report = timing.ratio_report(rounds, "native")
    assert list(report) == ["fa"]
    assert report["fa"]["cpu"] == {"min": 0.9, "q1": 0.95, "median": 1.0, "q3": 1.025,
                                   "max": 1.05}
    assert report["fa"]["wall"]["min"] == timing.sig4(10.0 / 10.5)
    assert report["fa"]["wall"]["max"] == 1.1
    assert report["fa"]["wall_min"] == 1.0  # fastest fa (10.0) over fastest native (10.0)
    seconds = timing.seconds_report(rounds, "native")
    assert seconds == {"wall_min": 10.0, "wall_median": 10.5, "cpu_median": 20.0,
                       "utilisation": 1.9}  # median of 1.9, 1.0, 1.905


def test_ratio_report_refuses_rounds_that_do_not_match(timing):
    S = timing.Sample
    with pytest.raises(ValueError, match="baseline 'native' is not among"):
        timing.ratio_report([{"fa": S(1.0, 1.0)}], "native")
    with pytest.raises(ValueError, match="round 1 holds"):
        timing.ratio_report([{"native": S(1.0, 1.0), "fa": S(1.0, 1.0)},
                             {"native": S(1.0, 1.0)}], "native")
    with pytest.raises(ValueError, match="at least one round"):
        timing.ratio_report([], "native")


def test_rotated_orders(timing):
    assert [timing.rotated("abc", r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert timing.rotated([], 3) == []


def test_interleaved_jobs_take_turns_one_at_a_time_in_rotating_order(bench_train):
    events: list[tuple[str, int]] = []
    active = []
    overlaps = []

    def job(name: str):
        def run(turns) -> None:
            for turn in range(3):
                active.append(name)
                overlaps.append(len(active))
                time.sleep(0.01)  # a chance for another thread to run, were it allowed to
                events.append((name, turn))
                active.remove(name)
                if turn < 2:
                    turns.end_turn()
        return run

    bench_train.run_interleaved({n: job(n) for n in ("a", "b", "c")}, rounds=3)
    assert events == [("a", 0), ("b", 0), ("c", 0), ("b", 1), ("c", 1), ("a", 1),
                      ("c", 2), ("a", 2), ("b", 2)]
    assert max(overlaps) == 1


def test_interleaved_job_failures_surface_in_the_scheduler(bench_train):
    def ok(turns) -> None:
        turns.end_turn()

    def broken(turns) -> None:
        raise ZeroDivisionError("boom")

    def quits(turns) -> None:
        return None

    with pytest.raises(RuntimeError, match="b failed in turn 1") as caught:
        bench_train.run_interleaved({"a": ok, "b": broken}, rounds=2)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    with pytest.raises(RuntimeError, match="b finished after 1 of 2 turns"):
        bench_train.run_interleaved({"a": ok, "b": quits}, rounds=2)


class _CountingTurns:
    name = "fa"

    def __init__(self) -> None:
        self.ended = 0

    def end_turn(self) -> None:
        self.ended += 1


def test_epoch_clock_brackets_the_steps_and_stops_after_the_timed_epochs(bench_train):
    """The hooks in the Trainer's order: the CPU window ends at the history write (before the
    checkpoint), turns end after every epoch but the last, and the run stops before another."""
    turns = _CountingTurns()
    clock = bench_train.EpochClock(turns, timed=2)
    assert clock.may_write() is True  # the step-0 snapshot, before any epoch: not timed
    bracketed = []
    for epoch in range(3):
        before = time.perf_counter()
        assert clock.should_stop() is False  # before the epoch's first step
        work_until = time.thread_time() + 0.05
        while time.thread_time() < work_until:  # the steps: CPU work
            pass
        assert clock.should_stop() is False  # between steps
        assert clock.may_write() is True  # the epoch's history write
        bracketed.append(time.perf_counter() - before)
        time.sleep(0.2)  # the checkpoint: outside the window
        clock.on_epoch({"seconds": 0.05 + epoch, "diverged": False})
    assert clock.should_stop() is True
    assert turns.ended == 2
    assert [seconds for _, seconds in clock.epochs] == [1.05, 2.05]
    for (window, _), outer in zip(clock.epochs, bracketed[1:], strict=True):
        assert window.cpu >= 0.045
        assert window.wall <= outer  # the sleep after may_write is not in it


def test_epoch_clock_refuses_a_diverged_epoch(bench_train):
    clock = bench_train.EpochClock(_CountingTurns(), timed=1)
    clock.should_stop()
    with pytest.raises(RuntimeError, match="fa diverged in epoch 1"):
        clock.on_epoch({"seconds": 1.0, "diverged": True})


def test_bench_train_refuses_bad_flags(bench_train, capsys):
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--variants", "fa,nope"])
    assert "unknown ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--timed-epochs", "0"])
    assert "--timed-epochs must be >= 1" in capsys.readouterr().err
    assert bench_train.parse_args(["--variants", "fa,native,fa"]).variant_list == ["native", "fa"]


def _run_script(name: str, *flags: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *flags], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


@pytest.mark.slow
def test_bench_train_smoke_prints_one_json_line_with_both_clocks():
    out = _run_script("bench_train.py", "--width", "8", "--steps", "2", "--repeats", "2",
                      "--timed-epochs", "1", "--variants", "fa,ia-tpe")
    assert out["rounds"] == 2
    for variant in ("fa", "ia-tpe"):
        assert out[variant] > 0
        cpu, wall = out["cpu_ratio"][variant], out["wall_ratio"][variant]
        assert 0 < cpu["min"] <= cpu["q1"] <= cpu["median"] <= cpu["q3"] <= cpu["max"]
        assert 0 < wall["min"] <= wall["median"] <= wall["max"]
    assert set(out["seconds"]) == {"native", "fa", "ia-tpe"}
    assert out["seconds"]["native"]["cpu_median"] > 0


@pytest.mark.slow
def test_bench_layers_smoke_prints_one_json_line_with_both_clocks():
    out = _run_script("bench_layers.py", "--width", "8", "--repeats", "3")
    assert out["fa_over_native"] > 0
    assert set(out["cpu_ratio"]) == {"bp", "fa"}
    assert out["cpu_ratio"]["fa"]["min"] <= out["cpu_ratio"]["fa"]["max"]
    assert out["seconds"]["native"]["utilisation"] > 0


@pytest.fixture
def bench_adversarial(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_adversarial")


def test_the_adversarial_pass_finds_what_it_looks_for(bench_adversarial, tmp_path):
    """The judge of bench_adversarial is not blind: a wrong exit, a printed secret, a change to
    a file a refusal must leave alone and an unnamed flag are each a finding."""
    b = bench_adversarial
    findings = b.run_case(b.Case("t", ["rules"], (2,), secrets=["wm"]), tmp_path)
    assert {kind for kind, _ in findings} == {"wrong_exit", "secret_printed"}
    kept = tmp_path / "kept.db"
    kept.touch()  # a worker makes an empty file a store: a change a reader must not make
    changed = b.Case("t", ["worker", "--db", f"sqlite:///{kept}", "--idle-exit", "0"], (0,),
                     [kept], reader=True, after=lambda: "checked after")
    assert {kind for kind, _ in b.run_case(changed, tmp_path)} == {"written", "lost_or_wrong"}
    unnamed = b.Case("t", ["trials", "--experiment", "e", "--limit", "nan"], (2,),
                     mentions="--flag-it-is-not-about")
    assert {kind for kind, _ in b.run_case(unnamed, tmp_path)} == {"unnamed"}
    assert b.run_case(b.Case("t", ["trials", "--experiment", "e", "--limit", "nan"], (2,),
                             mentions="--limit"), tmp_path) == []


def test_the_adversarial_pass_finds_every_numeric_flag(bench_adversarial):
    flags = bench_adversarial.numeric_flags()
    assert "--lease" in flags[("worker",)] and "--gamma" in flags[("search",)]
    assert "--epochs" in flags[("train",)] and "--top-fraction" in flags[("report", "importance")]
    assert sum(map(len, flags.values())) >= 39


@pytest.fixture
def bench_fidelity(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_fidelity")


def test_fidelity_curves_cross_and_peak_at_the_published_rule(bench_fidelity):
    """The synthetic objective is what the benchmark says: deterministic, its optimum (0.98) at
    the published rule, learning curves that rise with the epochs, and a slow good config that
    a fast worse one beats at the first rung and loses to at the budget's epochs."""
    import copy

    objective = bench_fidelity.CurveObjective(seed=0, noise=0.0)
    best = objective.target
    assert objective.quality(best) == pytest.approx(0.98)
    curve = [objective.value(best, e) for e in (1, 3, 9, 10)]
    assert curve == sorted(curve) and curve[-1] < 0.98
    assert objective.value(best, 3) == bench_fidelity.CurveObjective(0, 0.0).value(best, 3)
    slow = copy.deepcopy(best)
    slow["run"]["batch_size"], slow["run"]["delay_epochs"] = 128, 0.444444
    fast = copy.deepcopy(best)
    fast["run"]["batch_size"], fast["run"]["alignment_lr"] = 16, 0.01
    fast["rule"]["ops"]["center_input"] = True  # a heavy op wrong
    assert objective.value(fast, 1) > objective.value(slow, 1)
    assert objective.value(fast, 10) < objective.value(slow, 10)
    noisy = bench_fidelity.CurveObjective(seed=0, noise=0.005)
    assert abs(noisy.value(best, 10) - objective.value(best, 10)) > 0
    assert noisy.value(best, 10) != bench_fidelity.CurveObjective(1, 0.005).value(best, 10)


def test_fidelity_figures_compare_at_equal_trial_epochs(bench_fidelity):
    """A promoted trial adds only the epochs it trains past its rung; best-so-far counts only
    full-budget results; 'reached' and 'worse' are read at equal trial-epochs."""
    ledger = bench_fidelity.Ledger()
    assert ledger.completed(1, {"trial_epochs": 1, "objective": 0.9, "stopped_early": True})
    assert ledger.completed(1, {"trial_epochs": 3, "objective": 0.5, "stopped_early": False})
    assert not ledger.completed(1, {"trial_epochs": 3, "objective": 0.5})
    assert ledger.completed(2, {"trial_epochs": 3, "objective": 0.95, "diverged": True})
    assert ledger.curve == [(1, None), (3, 0.5), (6, 0.5)]
    b = bench_fidelity
    assert b.best_at(ledger.curve, 2) is None and b.best_at(ledger.curve, 100) == 0.5
    assert b.reached_at(ledger.curve, 0.5, 10) == 3
    assert b.reached_at(ledger.curve, 0.5, 2) is None
    plain = {"curve": [(10, 0.5), (20, 0.7), (30, 0.7)], "spent": 30, "trials": 3,
             "full_budget_trials": 3, "max_trials": 3, "n_startup_jobs": 1, "seconds": 1.0}
    fast = {**plain, "curve": [(4, None), (8, 0.72), (31, 0.9)]}
    slow = {**plain, "curve": [(10, 0.4), (30, 0.65)]}
    out = b.summarise({"none": [plain, plain], "asha": [fast, slow]}, budget=30, epochs=10)
    asha = out["asha"]
    assert asha["final_best_runs"] == [0.72, 0.65]  # the 0.9 came after the budget
    assert asha["reach_epochs_runs"] == [8, None] and asha["reach_never"] == 1
    assert asha["reach_epochs_median"] is None  # half never reached it
    assert asha["worse_fraction"] == 0.5 and asha["worse_anywhere_fraction"] == 0.5
    assert out["none"]["reach_epochs_runs"] == [20, 20]
    assert b.goal(out, seeds=20)["met"] is False


def test_fidelity_budget_sizes_the_multi_fidelity_searches(bench_fidelity):
    b = bench_fidelity
    assert b.epochs_per_trial("none", 1, 3, 10) == 10
    assert b.epochs_per_trial("asha", 1, 3, 10) == pytest.approx(1 + 2 / 3 + 6 / 9 + 1 / 27)
    assert 2.37 < b.epochs_per_trial("hyperband", 1, 3, 10) < 10
    with pytest.raises(SystemExit):
        b.parse_args(["--methods", "asha,sha"])
    with pytest.raises(SystemExit):
        b.parse_args(["--min-epochs", "10"])
    with pytest.raises(SystemExit):
        b.parse_args(["--first-seed", "-1"])
    with pytest.raises(SystemExit):
        b.parse_args(["--seeds", "0", "--digits-seeds", "0"])
    assert b.parse_args(["--methods", "hyperband"]).method_list == ["none", "hyperband"]


def test_bench_fidelity_smoke_prints_one_json_line():
    out = _run_script("bench_fidelity.py", "--seeds", "2", "--budget-trials", "3",
                      "--digits-seeds", "0")
    synthetic = out["synthetic"]
    assert synthetic["budget_trial_epochs"] == 30 and "digits" not in out
    for method in ("none", "asha", "hyperband"):
        figures = synthetic[method]
        assert len(figures["final_best_runs"]) == 2
        assert 0.1 <= figures["final_best"] <= 0.98
        assert figures["spent_mean"] >= 30
    assert synthetic["none"]["trials_mean"] == 3 and synthetic["none"]["reach_never"] == 0
    assert synthetic["asha"]["trials_mean"] > 3
    assert out["goal"]["seeds"] == 2 and out["goal"]["met"] is False


def test_bench_query_smoke_prints_one_json_line():
    out = _run_script("bench_query.py", "--trials", "300", "--no-mongo", "--repeats", "1")
    assert "mongodb" not in out and out["repeats"] == 1
    sqlite = out["sqlite"]
    assert sqlite["trials"] == 300 and sqlite["insert_trials_per_s"] > 0
    for query in ("selective", "top10"):
        figures = sqlite[query]
        assert set(figures) == {"pushed_down_s", "load_then_filter_s", "speedup", "rows"}
        assert figures["pushed_down_s"] > 0 and figures["load_then_filter_s"] > 0
    assert sqlite["top10"]["rows"] == 10
    assert set(out["goal"]) == {"trials", "seconds_max", "speedup_min", "met"}


def test_bench_query_refuses_bad_flags(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench_query = importlib.import_module("bench_query")
    for flags in (["--trials", "0"], ["--repeats", "-1"], ["--mongo-trials", "x"]):
        with pytest.raises(SystemExit):
            bench_query.parse_args(flags)
    assert "must be >= 1" in capsys.readouterr().err
    assert bench_query.parse_args([]).trials == 100_000


def test_bench_dashboard_smoke_prints_one_json_line():
    out = _run_script("bench_dashboard.py", "--trials", "300", "--no-mongo", "--repeats", "1")
    sqlite = out["sqlite"]
    assert "mongodb" not in out and sqlite["trials"] == 300
    assert sqlite["importance_analysed"] > 200  # the YAML space's choices were analysed
    for figure in ("trials_page_s", "trials_filtered_s", "trials_deep_s", "experiment_refresh_s",
                   "experiment_cold_s", "experiments_s", "read_every_trial_s"):
        assert sqlite[figure] > 0, figure
    assert out["goal"] == {"trials": 300, "page_seconds_max": 0.3, "met": False}

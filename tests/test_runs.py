"""The run directory (its layout, its history, the one resume policy) and the one result type,
without TensorFlow."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from localrules.config import config_from_preset
from localrules.results import TrainResult, TrialResult
from localrules.runs import ConfigMismatch, RunDirectory, RunExists, trial_dir


def test_the_run_directory_owns_every_path_in_it(tmp_path):
    run = RunDirectory(f"{tmp_path}/r/")
    assert run.path == f"{tmp_path}/r" and str(run) == run.path
    assert [run.config, run.history, run.checkpoints, run.weights, run.tensorboard] == [
        f"{tmp_path}/r/{name}"
        for name in ("config.json", "history.jsonl", "checkpoints", "weights", "tensorboard")]
    assert RunDirectory("gs://bucket/exp/").history == "gs://bucket/exp/history.jsonl"
    trial = SimpleNamespace(experiment="exp", trial_id=7)
    assert trial_dir("gs://b/art/", trial) == "gs://b/art/exp/trial-00007"
    assert trial_dir(tmp_path, trial) == f"{tmp_path}/exp/trial-00007"


def test_one_resume_policy(tmp_path, caplog):
    run = RunDirectory(tmp_path / "run")
    fa, bp = config_from_preset("fa"), config_from_preset("bp")
    with caplog.at_level("INFO", logger="localrules.runs"):
        assert run.resumes(fa, resume=False) is False  # a new run, however it was asked
        assert run.resumes(fa, resume=True) is False
    assert "a new run" in caplog.text
    assert not (tmp_path / "run").exists()  # deciding writes nothing
    run.write_config(fa)
    written = (tmp_path / "run" / "config.json").read_text()
    assert run.read_config() == fa
    with pytest.raises(RunExists, match="already holds a run"):
        run.resumes(fa, resume=False)
    with pytest.raises(RunExists):  # not asked to resume: that is said first
        run.resumes(bp, resume=False)
    with pytest.raises(ConfigMismatch, match="another config; it is not overwritten"):
        run.resumes(bp, resume=True)  # never started over, even when asked to resume
    assert run.resumes(fa, resume=True) is True
    assert (tmp_path / "run" / "config.json").read_text() == written


def test_history_is_read_strictly(tmp_path):
    run = RunDirectory(tmp_path)
    with pytest.raises(FileNotFoundError):
        run.read_history()
    assert run.read_history(missing_ok=True) == []
    (tmp_path / "history.jsonl").write_text('{"epoch": 1, "step": 5}\n\n{"epoch": 2,\n')
    with pytest.raises(ValueError, match=r"history\.jsonl line 3 is not JSON"):
        run.read_history()
    (tmp_path / "history.jsonl").write_text('{"epoch": 1}\n' + "[" * 100_000 + "\n")
    with pytest.raises(ValueError, match=r"history\.jsonl line 2 is not JSON"):
        run.read_history()  # a nesting bomb: not a RecursionError
    (tmp_path / "history.jsonl").write_text('{"epoch": 1, "step": 5}\n\n{"epoch": 2}\n')
    assert [r["epoch"] for r in run.read_history()] == [1, 2]


def test_readers_of_a_run_need_no_tensorflow(tmp_path):
    code = f"""
import sys
from localrules.config import config_from_preset
from localrules.runs import RunDirectory
from localrules.results import TrainResult, TrialResult
from localrules.snapshots import list_snapshots
run = RunDirectory({str(tmp_path)!r})
run.write_config(config_from_preset("sa"))
assert run.read_config() == config_from_preset("sa") and list_snapshots(run.path) == {{}}
assert "tensorflow" not in sys.modules, "tensorflow imported"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


OUTCOME = TrainResult(top1=0.5, top5=0.9, eval_loss=math.nan, diverged=True, interrupted=False,
                      epochs=3, steps=60, weight_angle_deg={"stem": 80.0})


def test_a_workers_result_document():
    """Built from the trainer's outcome, every field of it kept: chance for a diverged run,
    strict JSON, no Ray fields."""
    doc = TrialResult.of_run(OUTCOME, chance=0.1, seconds=12.0, run_dir="art/e/trial-00000"
                             ).to_document()
    json.dumps(doc, allow_nan=False)
    assert doc["objective"] == 0.1 and doc["eval_loss"] is None and doc["top1"] == 0.5
    assert set(doc) >= set(OUTCOME.to_dict()) and doc["weight_angle_deg"] == {"stem": 80.0}
    assert set(doc) == ({f.name for f in dataclasses.fields(TrialResult)}
                        - set(TrialResult.OPTIONAL_FIELDS))
    scored = dataclasses.replace(OUTCOME, diverged=False, eval_loss=1.2)
    assert TrialResult.of_run(scored, chance=0.1, seconds=1.0, run_dir="d").objective == 0.5


def test_the_ray_engines_fields_are_written_when_set():
    result = TrialResult(top1=0.4, top5=0.8, eval_loss=1.0, diverged=False, interrupted=False,
                         epochs=1, steps=45, objective=0.4, chance=0.1, seconds=3.0,
                         run_dir="/ray/r/trial-00002/checkpoint_000000", engine="ray",
                         ray_trial_id="a1b2", stopped_early=True, trial_epochs=1, rung=0)
    doc = result.to_document()
    assert {f.name for f in dataclasses.fields(TrialResult)} - {"rungs"} == set(doc)
    assert (doc["engine"], doc["stopped_early"], doc["weight_angle_deg"]) == ("ray", True, {})

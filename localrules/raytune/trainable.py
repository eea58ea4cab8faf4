"""The Ray Tune trainable: one localrules trial, trained by the same trainer as a worker's.

Each epoch is reported to Tune with its metrics (``objective`` is the latest validated top-1,
chance before a validation or after a divergence — what ASHA and TPE compare) and a checkpoint
through Ray's checkpoint API: the run's files as ``localrules train`` lays them out (config,
history, the latest TensorFlow checkpoint, weight snapshots). Ray persists it to the
experiment's storage. When Ray retries a failed trial (``FailureConfig``) or restores a stopped
experiment, the trainable copies the latest checkpoint back into a fresh run directory and the
trainer resumes from it, mid-search and on any node.

The run directory itself is scratch space on the node; what outlives the trial is in Ray's
storage (``--artifacts``), whose latest checkpoint the store callback records as the trial's
``run_dir``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from localrules.jsonsafe import json_safe
from localrules.raytune import METRIC
from localrules.raytune.callback import REFERENCE_OBJECTIVE
from localrules.raytune.searcher import META
from localrules.runs import RunDirectory, trial_dirname

log = logging.getLogger(__name__)


def stage_checkpoint(run_dir: Path, stage: Path) -> None:
    """Copy what resuming and the reports need into ``stage``: the config, the history, the
    weight snapshots, and only the latest TensorFlow checkpoint (its index and shard files)."""
    import tensorflow as tf

    source, target = RunDirectory(run_dir), RunDirectory(stage)
    for src, dst in ((source.config, target.config), (source.history, target.history)):
        if Path(src).is_file():
            shutil.copy2(src, dst)
    if Path(source.weights).is_dir():
        shutil.copytree(source.weights, target.weights)
    latest = tf.train.latest_checkpoint(source.checkpoints)
    if latest is None:
        return
    Path(target.checkpoints).mkdir()
    prefix = Path(latest).name
    for path in Path(source.checkpoints).iterdir():
        if path.name == "checkpoint" or path.name.startswith(prefix + "."):
            shutil.copy2(path, Path(target.checkpoints, path.name))


def epoch_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """What Tune gets of an epoch record, JSON-safe: its numbers and divergence flag, ``steps``
    and, at a validation, each layer's weight angle (the fields a worker's result carries)."""
    metrics = {k: v for k, v in record.items() if isinstance(v, (int, float)) or k == "diverged"}
    metrics["steps"] = record.get("step")
    if record.get("layers"):
        metrics["weight_angle_deg"] = {name: m["weight_angle_deg"]
                                       for name, m in record["layers"].items()
                                       if "weight_angle_deg" in m}
    return json_safe(metrics)


def scratch_dir(experiment: str, trial_id: int) -> Path:
    """The node-local run directory of a trial, emptied first: a previous attempt on this node
    may have been stopped (ASHA, a retry) before it could clean up."""
    path = Path(tempfile.gettempdir(), "localrules-ray", experiment, trial_dirname(trial_id))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def train_ray_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable (see the module docstring)."""
    from ray import tune

    from localrules.worker.trial_runner import train_trial, validate_config

    meta = config[META]
    trial_config = validate_config(meta["config"])
    run_dir = scratch_dir(meta["experiment"], meta["trial_id"])
    resumed_from = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, run_dir, dirs_exist_ok=True)
        resumed_from = len(RunDirectory(run_dir).read_history())
        log.info("trial %d resumes after epoch %d from Ray's checkpoint", meta["trial_id"],
                 resumed_from)

    def on_epoch(record: dict[str, Any]) -> None:
        metrics = {**epoch_metrics(record), "epochs": trial_config.run.epochs,
                   "resumed_from_epoch": resumed_from}
        if meta.get("reference") is not None:  # not a search trial: ASHA must not rank it
            metrics[REFERENCE_OBJECTIVE] = metrics.pop(METRIC, None)
        with tempfile.TemporaryDirectory() as stage:
            stage_checkpoint(run_dir, Path(stage))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(stage))

    try:
        # Ray runs a function trainable in a thread: no signal handler; Ray stops the actor.
        train_trial(trial_config, str(run_dir), on_epoch=on_epoch, should_stop=lambda: False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

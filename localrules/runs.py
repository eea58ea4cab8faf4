"""The layout of a run directory, in one place for everything that writes or reads one.

A run (``localrules train``, a worker's trial, a Ray trial's checkpoint) holds ``config.json``,
``history.jsonl``, ``checkpoints/`` (TensorFlow's), ``weights/`` (the weight snapshots) and
``tensorboard/``. A search's trials live in ``ARTIFACTS/EXPERIMENT/trial-NNNNN``; a Ray trial's
directory holds its persisted checkpoints as ``checkpoint_NNNNNN/`` subdirectories, each a run
directory of its own.

Standard library only; remote paths (gs://) are listed through ``tf.io.gfile``, imported only
for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG = "config.json"
HISTORY = "history.jsonl"
CHECKPOINTS = "checkpoints"
WEIGHTS = "weights"
RAY_CHECKPOINT_PREFIX = "checkpoint_"


def json_safe(value: Any) -> Any:
    """NaN and ±Inf (a diverged run's losses) as None, through mappings and lists: history lines
    and stored documents are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def trial_dirname(trial_id: int) -> str:
    """A search trial's directory name under ``ARTIFACTS/EXPERIMENT``."""
    return f"trial-{trial_id:05d}"


def is_remote(path: str) -> bool:
    return "://" in path


def listdir(path: str) -> list[str]:
    """The names in a directory, local or remote (directories without a trailing slash); empty
    if it is not a directory."""
    if is_remote(path):
        import tensorflow as tf

        return [n.rstrip("/") for n in tf.io.gfile.listdir(path)] if tf.io.gfile.isdir(path) \
            else []
    folder = Path(path)
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


def run_files_dir(path: str) -> str:
    """Where a trial's run files are: the directory itself (a worker's trial, a run), or a Ray
    trial directory's latest persisted checkpoint."""
    names = listdir(path)
    if HISTORY in names:
        return path
    checkpoints = sorted(n for n in names if n.startswith(RAY_CHECKPOINT_PREFIX))
    return f"{path.rstrip('/')}/{checkpoints[-1]}" if checkpoints else path

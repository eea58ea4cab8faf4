"""A run directory: its layout, its files, and whether a run in it is resumed.

A run (``localrules train``, a worker's trial, a Ray trial's checkpoint) holds ``config.json``,
``history.jsonl``, ``checkpoints/`` (TensorFlow's), ``weights/`` (the weight snapshots) and
``tensorboard/``. ``RunDirectory`` is the one owner of those names: the trainer, the worker, the
Ray trainable, the reports and neural fitting ask it for paths instead of spelling them. A
search's trials live in ``ARTIFACTS/EXPERIMENT/trial-NNNNN``; a Ray trial's directory holds its
persisted checkpoints as ``checkpoint_NNNNNN/`` subdirectories, each a run directory of its own.

Standard library only, so readers (reports, analysis) use it without TensorFlow; remote paths
(gs://) go through ``tf.io.gfile``, imported only for them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from localrules.config import TrialConfig

log = logging.getLogger(__name__)

CONFIG = "config.json"
HISTORY = "history.jsonl"
CHECKPOINTS = "checkpoints"
WEIGHTS = "weights"
TENSORBOARD = "tensorboard"
RAY_CHECKPOINT_PREFIX = "checkpoint_"


class TrialKey(Protocol):
    """What names a search trial's directory (a store ``Trial`` has both)."""

    experiment: str
    trial_id: int


def trial_dirname(trial_id: int) -> str:
    """A search trial's directory name under ``ARTIFACTS/EXPERIMENT``."""
    return f"trial-{trial_id:05d}"


def trial_dir(artifacts: str | os.PathLike[str], trial: TrialKey) -> str:
    """Where a worker writes a search trial's run (checkpoints, history, TensorBoard files)."""
    return f"{os.fspath(artifacts).rstrip('/')}/{trial.experiment}/{trial_dirname(trial.trial_id)}"


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


def read_bytes(path: str) -> bytes:
    """A file's bytes, local or remote; FileNotFoundError if it is not there, ValueError if it
    cannot be read."""
    if is_remote(path):
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            raise FileNotFoundError(path) from None
        except tf.errors.OpError as err:
            raise ValueError(f"cannot read {path}: {err.message}") from None
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IsADirectoryError, PermissionError) as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (local or remote) under a temporary name, then rename it, so
    a reader sees the old file or the new one, never a part."""
    tmp = f"{path}.tmp"
    if is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return
    Path(tmp).write_bytes(data)
    os.replace(tmp, path)


def makedirs(path: str) -> None:
    """Create a directory and its parents, local or remote (nothing if it exists)."""
    if is_remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


class RunExists(ValueError):
    """The directory holds a run and resuming it was not asked for."""


class ConfigMismatch(ValueError):
    """The directory holds a run of another config."""


class RunDirectory:
    """One run's directory (local path or gs:// URI) and the paths of everything in it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        self.path = text.rstrip("/") or text
        self.config = self.file(CONFIG)
        self.history = self.file(HISTORY)
        self.checkpoints = self.file(CHECKPOINTS)
        self.weights = self.file(WEIGHTS)
        self.tensorboard = self.file(TENSORBOARD)

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def __str__(self) -> str:
        return self.path

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"RunDirectory({self.path!r})"

    # --- the run's config -------------------------------------------------------------------
    def read_config(self) -> TrialConfig | None:
        """The run's config, or None when the directory holds no run; ValueError if the file
        is not a valid config."""
        from localrules.config import TrialConfig

        try:
            text = read_bytes(self.config).decode("utf-8")
        except FileNotFoundError:
            return None
        return TrialConfig.from_json(text)

    def write_config(self, config: TrialConfig) -> None:
        makedirs(self.path)
        text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
        write_bytes_atomic(self.config, text.encode("utf-8"))

    def resumes(self, config: TrialConfig, *, resume: bool) -> bool:
        """The one resume policy, for ``localrules train``, workers and (through the worker's
        runner) Ray trials: True if the run here is resumed, False for a new run; reads only.

        - no run here (no config file): a new run;
        - a run here and ``resume`` False: ``RunExists``;
        - a run of another config: ``ConfigMismatch``, even with ``resume`` — never started
          over. Of the two rules this replaced (the CLI refused, a worker started over in the
          same directory, overwriting its checkpoints and history and leaving the other run's
          weight snapshots beside its own) this is the safer: a trial directory holding another
          config is another experiment's (an artifacts directory shared by two experiments of
          one name), and its files are someone's results; the trial fails saying so;
        - the same config and ``resume``: resumed from its latest checkpoint, if it has one.

        Workers always ask to resume: a requeued trial carries on from its checkpoint.
        """
        existing = self.read_config()
        if existing is None:
            log.info("%s: a new run", self.path)
            return False
        if not resume:
            raise RunExists(f"{self.path} already holds a run; resume it or choose another "
                            "directory")
        if existing != config:
            raise ConfigMismatch(f"{self.path} holds a run of another config; it is not "
                                 "overwritten: move it away or choose another directory")
        log.info("%s: resuming its run", self.path)
        return True

    # --- the run's history ------------------------------------------------------------------
    def read_history(self, *, missing_ok: bool = False) -> list[dict[str, Any]]:
        """The epoch records in ``history.jsonl``, in order. A missing file is
        FileNotFoundError (an empty list with ``missing_ok``); a line that is not JSON is a
        ValueError naming it."""
        try:
            text = read_bytes(self.history).decode("utf-8")
        except FileNotFoundError:
            if missing_ok:
                return []
            raise
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except (ValueError, RecursionError) as err:  # not JSON, or nested too deep
                    raise ValueError(f"{self.history} line {number} is not JSON: {err}") \
                        from None
        return records

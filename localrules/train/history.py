"""The run's history: one JSON line per epoch (``history.jsonl``) and TensorBoard scalars.

On resume, records past the checkpoint's step are dropped first, so the file never holds an epoch
twice or one that the restored model never saw. As a callback it writes each epoch's record
before the checkpoint is saved: a crash between the two leaves a line that the next resume drops,
never a checkpointed epoch without its line.
"""

from __future__ import annotations

import json
from typing import Any

import tensorflow as tf

from localrules.jsonsafe import json_safe
from localrules.runs import RunDirectory, makedirs, write_bytes_atomic
from localrules.train.callbacks import Callback, EpochEnd


class RunHistory(Callback):
    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir
        self.records: list[dict[str, Any]] = []
        self.writer: Any = None

    @property
    def last(self) -> dict[str, Any]:
        """The latest record (a run resumed after it finished reports it again); {} if none."""
        return self.records[-1] if self.records else {}

    def on_train_begin(self, step: int) -> None:
        self.records = [r for r in self.run_dir.read_history(missing_ok=True)
                        if r["step"] <= step]
        makedirs(self.run_dir.path)
        self._flush()
        self.writer = tf.summary.create_file_writer(self.run_dir.tensorboard)

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.write(end.record)

    def write(self, record: dict[str, Any]) -> None:
        record = json_safe(record)  # JSON has no NaN/Inf: a diverged value is written as null
        self.records.append(record)
        self._flush()
        step = record["step"]
        with self.writer.as_default():
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tf.summary.scalar(key, value, step=step)
            for layer, metrics in (record.get("layers") or {}).items():
                for key, value in metrics.items():
                    if value is not None:
                        tf.summary.scalar(f"{key}/{layer}", value, step=step)
        self.writer.flush()

    def _flush(self) -> None:
        # Rewritten whole (a few KB; appending is not supported on gs://), under a temporary
        # name and renamed, so a report reading a running trial never sees half a file.
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        write_bytes_atomic(self.run_dir.history, text.encode("utf-8"))

    def on_train_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

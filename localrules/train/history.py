"""The run's history: one JSON line per epoch (``history.jsonl``) and TensorBoard scalars.

On resume, records past the checkpoint's step are dropped first, so the file never holds an epoch
twice or one that the restored model never saw.
"""

from __future__ import annotations

import json
from typing import Any

import tensorflow as tf

from localrules.runs import json_safe


def read_history(out_dir: str) -> list[dict[str, Any]]:
    path = f"{out_dir}/history.jsonl"
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class History:
    def __init__(self, out_dir: str, start_step: int) -> None:
        self.path = f"{out_dir}/history.jsonl"
        self.records = [r for r in read_history(out_dir) if r["step"] <= start_step]
        tf.io.gfile.makedirs(out_dir)
        self._flush()
        self.writer = tf.summary.create_file_writer(f"{out_dir}/tensorboard")

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
        from localrules.snapshots import write_bytes_atomic

        text = "".join(json.dumps(r) + "\n" for r in self.records)
        write_bytes_atomic(self.path, text.encode("utf-8"))

    def close(self) -> None:
        self.writer.close()

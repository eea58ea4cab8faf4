"""Checkpoints of the whole training state, saved and restored as one.

A checkpoint holds the model, both optimizers (slots, step counts), the global step, the data
position (batches consumed), the update-noise generator and every layer's input-noise state, so
a run restored from one continues exactly where it stopped, mid-epoch included, and ends with the
same result as an uninterrupted run (given deterministic ops). TensorFlow's ``CheckpointManager``
keeps the latest two in the run directory's ``checkpoints/``.

As a callback it saves after every epoch whose steps stayed finite (a diverged state is not worth
resuming); the trainer also saves it directly when a stop request comes mid-epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from localrules.train.callbacks import Callback, EpochEnd

log = logging.getLogger(__name__)

KEEP = 2


class Checkpoints(Callback):
    def __init__(self, directory: str, parts: Mapping[str, Any], step: tf.Variable) -> None:
        self.step = step
        self.checkpoint = tf.train.Checkpoint(**parts)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory=directory,
                                                  max_to_keep=KEEP)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> bool:
        """Restore the latest checkpoint if there is one; True if restored."""
        latest = self.latest
        if latest is None:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s at step %d", latest, int(self.step))
        return True

    def save(self) -> None:
        self.manager.save(checkpoint_number=int(self.step))

    def on_epoch_end(self, end: EpochEnd) -> None:
        if end.finite:
            self.save()

"""The training data as one stream of batches across data epochs, from a position.

The loop takes one batch per step that needs data, so the stream's position is a single counter
(batches consumed so far) that the checkpoint keeps; a resumed run reopens the stream at that
position, mid-epoch included (the dataset skips the batches already seen).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import tensorflow as tf


class BatchStream:
    """Batches in order across data epochs, from ``consumed`` batches on."""

    def __init__(self, dataset: Any, batch_size: int, strategy: tf.distribute.Strategy,
                 consumed: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.strategy = strategy
        self.per_epoch = dataset.steps_per_epoch(batch_size)
        self.consumed = consumed
        self._iterator: Iterator | None = None
        self._left = 0

    def _open(self) -> None:
        epoch, offset = divmod(self.consumed, self.per_epoch)
        ds = self.dataset.train(self.batch_size, epoch, skip_batches=offset)
        self._iterator = iter(self.strategy.experimental_distribute_dataset(ds))
        self._left = self.per_epoch - offset

    def next(self) -> Any:
        if self._iterator is None or self._left == 0:
            self._open()
        batch = next(self._iterator)
        self._left -= 1
        self.consumed += 1
        return batch

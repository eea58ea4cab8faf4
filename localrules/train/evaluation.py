"""Validation at the configured epochs: evaluation metrics and, for rules with a backward weight
of their own, each layer's weight metrics, added to the epoch's record (paper-spec §H).

A callback placed before the history in the trainer's list, so the record it completes is the
one written; the weight measurement it takes is handed on (``EpochEnd.samples``) to the weight
snapshots. An epoch whose steps diverged is not validated; a non-finite validation loss marks
the record diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from localrules.train.callbacks import Callback, EpochEnd
from localrules.train.metrics import WeightProbe
from localrules.train.steps import TrainSteps


def evaluate(dataset, batch_size: int, strategy: tf.distribute.Strategy,
             steps: TrainSteps) -> dict[str, float]:
    """Mean loss, top-1 and top-5 over the dataset's evaluation split."""
    totals = np.zeros(4)
    for x, y in strategy.experimental_distribute_dataset(dataset.eval(batch_size)):
        totals += np.array([float(v) for v in steps.evaluate(x, y)])
    loss, top1, top5, count = totals
    return {"eval_loss": loss / count, "top1": top1 / count, "top5": top5 / count}


class Validation(Callback):
    def __init__(self, evaluate: Callable[[], dict[str, float]], every: int, epochs: int,
                 probe: WeightProbe | None) -> None:
        self.evaluate = evaluate
        self.every = every
        self.epochs = epochs
        self.probe = probe
        self.until: int | None = None
        """The epoch this run stops at, when it stops early (a multi-fidelity rung)."""

    def due(self, epoch: int) -> bool:
        """Every ``eval_every`` epochs, at the last and where the run stops (``epoch``
        1-based)."""
        return epoch % self.every == 0 or epoch in (self.epochs, self.until)

    def on_epoch_end(self, end: EpochEnd) -> None:
        if not end.finite or not self.due(end.epoch):
            return
        record = end.record
        record.update(self.evaluate())
        if self.probe is not None:
            metrics, end.samples = self.probe.measure()
            record["layers"] = {
                name: {**m, "alignment_loss": loss}
                for (name, m), loss in zip(metrics.items(), end.alignment_means, strict=True)
            }
        if not math.isfinite(record["eval_loss"]):
            record["diverged"] = True

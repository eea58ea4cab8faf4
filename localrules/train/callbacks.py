"""The trainer's callbacks: what happens around the loop, each part on its own (Keras-style).

The loop (``trainer.Trainer.fit``) calls every callback in its list, in order, at five points:
``on_train_begin(step)`` (the step the run starts or resumes at), ``on_epoch_begin(epoch, steps)``,
``on_step_end()``, ``on_epoch_end(end)`` and ``on_train_end()`` (always, also after an error). An
epoch's end is an ``EpochEnd``: its history record, which callbacks earlier in the list may add to
(validation adds its metrics) before later ones write it, and what the later ones need. The order
of the trainer's list is the order of the writes: the history line, then the checkpoint, then the
weight snapshot, then the caller's callbacks, so a snapshot or a reported epoch is always one a
restart can resume from, and a history line is never missing for a checkpointed epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localrules.runs import RunDirectory
from localrules.snapshots import LayerSample, write_snapshot
from localrules.train.metrics import WeightProbe


@dataclass
class EpochEnd:
    """One finished task epoch, as ``on_epoch_end`` sees it."""

    epoch: int
    """1-based, as in the record."""
    step: int
    """The global step after the epoch's last step."""
    record: dict[str, Any]
    finite: bool
    """Every training step's losses stayed finite: the state is worth a checkpoint."""
    alignment_means: list[float | None]
    """Each layer's mean alignment loss over the epoch (None without alignment steps)."""
    samples: list[LayerSample] | None = None
    """Each layer's weight snapshot entry, set by the validation when it measured them."""


class Callback:
    """Does nothing at every point; a callback overrides the points it needs."""

    def on_train_begin(self, step: int) -> None:
        pass

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        pass

    def on_step_end(self) -> None:
        pass

    def on_epoch_end(self, end: EpochEnd) -> None:
        pass

    def on_train_end(self) -> None:
        pass


class EpochFunction(Callback):
    """A caller's ``on_epoch(record)`` function (a worker's progress report, Ray's ``report``),
    called last, once the epoch is checkpointed."""

    def __init__(self, function: Callable[[dict[str, Any]], None]) -> None:
        self.function = function

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.function(end.record)


class Progress(Callback):
    """A progress bar over each epoch's steps (tqdm, imported only when enabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, unit="step")

    def on_step_end(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, end: EpochEnd) -> None:
        self._close()

    def on_train_end(self) -> None:
        self._close()  # a stop or an error mid-epoch

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class WeightSnapshots(Callback):
    """``weights/epoch-NNNN.npz`` (``localrules.snapshots``): the initial weights when a run
    starts at step 0 (Figs. S3/S4's starting point), then every validation's measurement. Only
    for rules with a backward weight of their own (bp's B would be an unused random matrix)."""

    def __init__(self, run_dir: RunDirectory, probe: WeightProbe) -> None:
        self.run_dir = run_dir
        self.probe = probe

    def on_train_begin(self, step: int) -> None:
        if step == 0:
            write_snapshot(self.run_dir, 0, 0, self.probe.measure()[1])

    def on_epoch_end(self, end: EpochEnd) -> None:
        if end.samples is not None:
            write_snapshot(self.run_dir, end.epoch, end.step, end.samples)

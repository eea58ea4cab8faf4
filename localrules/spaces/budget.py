"""The budget: what every run of an experiment trains on, and the one rule that maps the paper's
schedule onto a dataset. ``localrules train`` and ``localrules search`` share it.

The paper's searches trained each trial for 45 ImageNet epochs of the +AD schedule: a linear
warm-up of 6 epochs, ×0.1 drops at 30/60/80 (only the one at 30 falls inside 45), batch sizes
{256, 1024, 2048, 4096} at lr = |B|/2048 (paper-spec §E.2, §F). A budget keeps that schedule's
shape and moves it onto a dataset:

- **Fractions of training.** Warm-up, drops and the delay land at the same fractions of the
  budget's epochs as in a 45-epoch paper trial: warm-up 6/45 of training, the drop at 30/45, a
  delay of ``de`` paper epochs at ``de``/45. Every trial gets the same epochs (examples seen), as
  in the paper; ``--epochs`` stretches or shrinks the whole schedule.
- **Learning rate linear in the batch**, from a reference measured per dataset: ``lr`` at
  ``batch_size`` (digits: 0.1 at 64), lr(B) = lr · B / batch_size. On ImageNet that is the
  paper's |B|/2048 (0.125 at 256); elsewhere it replaces it (docs/search.md says so).
- **Batch-size choices per dataset** (the +AD searches' |B|), chosen so that every one of them
  learns under the budget; ``batch_size`` is the standard batch, the paper's 256, used by
  ``train``, by the reference runs and by the warm starts.

The numbers behind each dataset's defaults are in ``DEFAULT_BUDGETS`` and docs/science.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localrules.rules.presets import Preset, RunParams, epoch_count, get_preset
from localrules.validation import (
    BATCH_SIZE,
    EPOCHS,
    IMAGE_SIZE,
    WIDTH,
    Limit,
    check_str,
    dataclass_from_dict,
    shown,
)

PAPER_TRIAL_EPOCHS = 45
"""Epochs of one trial of the paper's searches (appendix B.1)."""
PAPER_TRIAL = RunParams(epochs=PAPER_TRIAL_EPOCHS, warmup_epochs=6.0, drop_epochs=(30.0,))
"""The +AD schedule as a 45-epoch trial saw it: 6 warm-up epochs, the drop at 30 (60 and 80 fall
after the trial). A budget stretches it to its own epochs (``RunParams.stretched``)."""
PAPER_BATCH_SIZES: tuple[int, ...] = (256, 1024, 2048, 4096)
LEARNING_RATE = Limit(0, 1e12, low_open=True)
MAX_BATCH_CHOICES = 64


@dataclass(frozen=True)
class Budget:
    """Dataset, model and training length shared by every run of one experiment."""

    dataset: str = "imagenet"
    model: str = "resnet18"
    width: int = 64
    epochs: int = PAPER_TRIAL_EPOCHS
    batch_size: int = 256
    """The standard batch (the paper's 256): ``train``, reference runs and warm starts use it."""
    batch_sizes: tuple[int, ...] = PAPER_BATCH_SIZES
    """The batch-size choices of the paper spaces' +AD searches."""
    lr: float = 0.125
    """The Nesterov learning rate at ``batch_size``; at batch B it is ``lr · B / batch_size``."""
    image_size: int | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_str("budget dataset", self.dataset)
        check_str("budget model", self.model)
        WIDTH.check("width", self.width)
        EPOCHS.check("epochs", self.epochs)
        BATCH_SIZE.check("batch_size", self.batch_size)
        if not isinstance(self.batch_sizes, (list, tuple)) \
                or not 0 < len(self.batch_sizes) <= MAX_BATCH_CHOICES:
            raise ValueError(f"batch_sizes must be a list of 1 to {MAX_BATCH_CHOICES} batch "
                             f"sizes, got {shown(self.batch_sizes)}")
        sizes = tuple(BATCH_SIZE.check("batch_sizes", b) for b in self.batch_sizes)
        if list(sizes) != sorted(set(sizes)):
            raise ValueError(f"batch_sizes must be distinct and increasing, got {list(sizes)}")
        object.__setattr__(self, "batch_sizes", sizes)
        LEARNING_RATE.check("lr", self.lr)
        if self.data_dir is not None:
            check_str("data_dir", self.data_dir)
        if self.image_size is not None:
            IMAGE_SIZE.check("image_size", self.image_size)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        if isinstance(data, Mapping) and "batch_divisor" in data:
            # an experiment stored before budgets took fractions
            data = _from_divisor(data)
        return dataclass_from_dict(cls, data, "budget")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    # --- the schedule ---------------------------------------------------------------------------
    @property
    def time_scale(self) -> float:
        """Budget epochs per paper-trial epoch."""
        return self.epochs / PAPER_TRIAL_EPOCHS

    def warmup_epochs(self) -> float:
        return PAPER_TRIAL.stretched(self.epochs).warmup_epochs

    def drop_epochs(self) -> tuple[float, ...]:
        """The paper's drop that falls inside a trial (30 of 45), scaled to the budget."""
        return PAPER_TRIAL.stretched(self.epochs).drop_epochs

    def delay_epochs(self, paper_epochs: float) -> float:
        """A delay of ``paper_epochs`` (of a 45-epoch trial) on this budget."""
        return epoch_count(paper_epochs * self.time_scale)

    def task_lr(self, batch_size: int) -> float:
        return self.lr * batch_size / self.batch_size

    def closest_batch(self, batch_size: int) -> int:
        """The batch-size choice nearest to ``batch_size`` on a log scale."""
        return min(self.batch_sizes, key=lambda b: (abs(math.log(b / batch_size)), b))

    def run(self, base: RunParams) -> RunParams:
        """A rule's run settings on this budget: the budget's epochs, schedule, standard batch
        and learning-rate rule; the rule's own η, η schedule, optimizer, alternation, momentum
        and weight decay; its delay scaled as a paper trial's (``base.delay_epochs`` paper
        epochs)."""
        trial = dataclasses.replace(
            base, epochs=PAPER_TRIAL.epochs, warmup_epochs=PAPER_TRIAL.warmup_epochs,
            drop_epochs=PAPER_TRIAL.drop_epochs, batch_size=self.batch_size, task_lr=self.lr,
            lr_reference_batch=self.batch_size)
        return trial.stretched(self.epochs)

    def settings(self) -> dict[str, Any]:
        """Config keys the budget fixes (dotted, for ``config.set_keys``): dataset, model and
        the schedule; a space's parameters (batch size, delay, …) come on top."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "width": self.width,
            "data_dir": self.data_dir,
            "image_size": self.image_size,
            **{f"run.{k}": v for k, v in self.run(RunParams()).to_dict().items()
               if k in _SCHEDULE_KEYS},
        }

    def preset_config(self, preset: str | Preset, seed: int = 0):
        """The validated TrialConfig of a preset trained on this budget (``run``)."""
        from localrules.config import TrialConfig, set_keys

        p = get_preset(preset) if isinstance(preset, str) else preset
        data = set_keys(TrialConfig().to_dict(), {
            **self.settings(), "rule": p.rule.to_dict(), "run": self.run(p.run).to_dict(),
            "seed": seed})
        return TrialConfig.from_dict(data)

    def describe(self, batches: bool = True) -> str:
        """What the budget trains and how it maps the paper's schedule; ``batches=False`` for
        spaces that list their own batch sizes (YAML spaces)."""
        drops = "/".join(f"{d:g}" for d in self.drop_epochs())
        text = (f"{self.model} (width {self.width}) on {self.dataset}"
                + (f" at {self.image_size}px" if self.image_size else "")
                + f", {self.epochs} epochs per trial; the paper's 45-epoch trial schedule by "
                f"fractions: warmup {self.warmup_epochs():g}, ×0.1 at {drops}; lr "
                f"{self.lr:g} at batch {self.batch_size}, linear in the batch")
        if batches:
            text += f"; batch choices {{{', '.join(map(str, self.batch_sizes))}}}"
        return text


_SCHEDULE_KEYS = ("epochs", "warmup_epochs", "drop_epochs", "batch_size", "task_lr",
                  "lr_reference_batch")


def _from_divisor(data: Mapping[str, Any]) -> dict[str, Any]:
    """A budget stored as ``batch_divisor`` (before fractions): the same batches and lr rule."""
    data = dict(data)
    divisor = Limit(1, 256, integer=True).check("budget batch_divisor", data.pop("batch_divisor"))
    data.setdefault("batch_size", 256 // divisor)
    data.setdefault("batch_sizes", [b // divisor for b in PAPER_BATCH_SIZES])
    data.setdefault("lr", 0.125)
    return data


DEFAULT_BUDGETS: Mapping[str, Budget] = {
    # The paper's search trial: 45 epochs, its batch choices, lr = |B|/2048 (not measured here).
    "imagenet": Budget("imagenet"),
    # CIFAR-10 (not measured here): the paper's ResNet-18 with the small-image stem, lr 0.1 at
    # 128 (He et al.'s CIFAR setting), 30 epochs per trial, batches 64–512 (98–782 steps/epoch).
    "cifar10": Budget("cifar10", epochs=30, batch_size=128, batch_sizes=(64, 128, 256, 512),
                      lr=0.1),
    # digits (measured, docs/science.md): width 16 at the native 8×8, 10 epochs, lr 0.1 at 64.
    # bp ends at 0.97–0.98 top-1 at every batch choice 16–128 (256 gets 56 steps and 0.77).
    "digits": Budget("digits", width=16, epochs=10, batch_size=64, batch_sizes=(16, 32, 64, 128),
                     lr=0.1),
    # synthetic: for tests and benchmarks, a tiny budget that finishes in seconds.
    "synthetic": Budget("synthetic", width=8, epochs=2, batch_size=16, batch_sizes=(16, 32),
                        lr=0.1),
}


def default_budget(dataset: str, **overrides: Any) -> Budget:
    """The default budget for a dataset with some fields replaced (None values are ignored)."""
    base = DEFAULT_BUDGETS.get(dataset, Budget(dataset))
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})

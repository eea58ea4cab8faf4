"""One task epoch's running sums over its steps, and the history record made from them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from localrules.train.schedule import StepPlan


class EpochSums:
    """Running sums over one epoch's steps (each step's output from ``Trainer.run_step``)."""

    def __init__(self, num_layers: int) -> None:
        self.task_steps = 0
        self.align_steps = 0
        self.loss = 0.0
        self.ce = 0.0
        self.correct = 0.0
        self.examples = 0
        self.alignment = np.zeros(num_layers)
        self.finite = True

    def add(self, out: dict[str, Any], batch: int) -> None:
        if "loss" in out:
            self.task_steps += 1
            self.loss += out["loss"]
            self.ce += out["ce"]
            self.correct += out["correct"]
            self.examples += batch
            self.finite &= math.isfinite(out["loss"])
        if "alignment" in out:
            self.align_steps += 1
            self.alignment += out["alignment"]
            self.finite &= bool(np.all(np.isfinite(out["alignment"])))

    def alignment_means(self) -> list[float | None]:
        if not self.align_steps:
            return [None] * len(self.alignment)
        return [float(v) for v in self.alignment / self.align_steps]

    def summary(self) -> dict[str, Any]:
        n = max(self.task_steps, 1)
        return {
            "train_loss": self.loss / n if self.task_steps else None,
            "train_ce": self.ce / n if self.task_steps else None,
            "train_top1": self.correct / self.examples if self.examples else None,
            "alignment_loss": (float(self.alignment.sum() / self.align_steps)
                               if self.align_steps else None),
            "task_steps": self.task_steps,
            "alignment_steps": self.align_steps,
        }

    def record(self, epoch: int, step: int, plan: StepPlan, seconds: float) -> dict[str, Any]:
        """The epoch's history record before validation (``epoch`` 1-based; the rates are the
        ones of the epoch's last step)."""
        last = max(step - 1, 0)
        return {
            "epoch": epoch,
            "step": step,
            "task_lr": plan.task_lr(last),
            "alignment_lr": plan.alignment_lr(last),
            "examples_per_s": self.examples / seconds if seconds > 0 else None,
            "seconds": seconds,
            **self.summary(),
            "diverged": not self.finite,
        }

"""What happens at each global step: which loss is optimised, at which learning rates.

Pure arithmetic on the global step g (paper-spec §E.2–E.3, DESIGN.md decisions 3 and 4), so it is
tested without TensorFlow. With S batches per data epoch:

- step-epochs e = g / S; with per-step alternation (k = 1) every epoch threshold — warm-up and
  drops — is stretched ×2, so "E epochs" means E task epochs of J updates and 2·E·S global steps;
- during the first ``delay_epochs`` step-epochs only R is optimised (every step), and the task
  schedule starts counting after them (e_J = max(0, e − de));
- alternation: step g is an alignment (R) step when g is even, a task (J) step when odd;
- η follows the task schedule when ``alignment_schedule == "task"``: the same warm-up if there is no
  delay (the paper's de = 0), no warm-up and drops shifted by de if there is one; with
  ``"drops"`` it starts at η (no warm-up) and drops with the task rate (appendix B.3); or it stays
  constant.

Epoch counts may be fractional (a budget scales the paper's schedule by fractions of training).
Under the ``joint`` optimizer there is one rate, the task rate, on every step.
"""

from __future__ import annotations

from dataclasses import dataclass

from localrules.rules.presets import RunParams

ALIGN, TASK, BOTH = "align", "task", "both"


@dataclass(frozen=True)
class StepPlan:
    run: RunParams
    steps_per_epoch: int
    trains_alignment: bool
    """Whether the rule has an alignment loss (otherwise every step is a task step)."""

    @property
    def period(self) -> int:
        """Global steps per task step: 2 with alternation, else 1."""
        return 2 if self.run.alternate and self.trains_alignment else 1

    @property
    def steps_per_task_epoch(self) -> int:
        return self.period * self.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.run.epochs * self.steps_per_task_epoch

    @property
    def delay(self) -> float:
        return self.run.delay_epochs if self.trains_alignment else 0

    def step_epoch(self, step: int) -> float:
        return step / self.steps_per_epoch

    def kind(self, step: int) -> str:
        """ALIGN, TASK or BOTH (simultaneous) for global step ``step``."""
        if not self.trains_alignment:
            return TASK
        if self.step_epoch(step) < self.delay:
            return ALIGN
        if self.period == 2:
            return ALIGN if step % 2 == 0 else TASK
        return BOTH

    def _piecewise(self, base: float, epoch: float, warmup: float, drops: list[float]) -> float:
        if epoch < warmup:
            return base * epoch / warmup
        passed = sum(1 for d in drops if epoch >= d)
        return base * self.run.drop_factor**passed

    def task_lr(self, step: int) -> float:
        k = self.period
        epoch = max(0.0, self.step_epoch(step) - self.delay)
        drops = [d * k for d in self.run.drop_epochs]
        return self._piecewise(
            self.run.effective_task_lr, epoch, self.run.warmup_epochs * k, drops
        )

    def alignment_lr(self, step: int) -> float:
        if self.run.optimizer == "joint" and self.trains_alignment:
            return self.task_lr(step)  # one SGD, one rate
        eta = self.run.alignment_lr or 0.0
        if not self.trains_alignment or self.run.alignment_schedule == "constant":
            return eta
        k = self.period
        if self.delay > 0 or self.run.alignment_schedule == "drops":
            drops = [d * k + self.delay for d in self.run.drop_epochs]
            return self._piecewise(eta, self.step_epoch(step), 0.0, drops)
        drops = [d * k for d in self.run.drop_epochs]
        return self._piecewise(eta, self.step_epoch(step), self.run.warmup_epochs * k, drops)

    def needs_batch(self, step: int, noise_only_alignment: bool) -> bool:
        """An alignment step whose rule replaces every input by noise needs no data."""
        return not (self.kind(step) == ALIGN and noise_only_alignment)

    def task_epoch(self, step: int) -> int:
        """The 0-based task epoch that global step ``step`` belongs to."""
        return step // self.steps_per_task_epoch

    def epoch_end(self, epoch: int) -> int:
        """The global step at which task epoch ``epoch`` (0-based) ends."""
        return min(self.total_steps, (epoch + 1) * self.steps_per_task_epoch)

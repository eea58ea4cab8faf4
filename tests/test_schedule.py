"""Step kinds and learning rates per global step (paper-spec §E.2–E.3, DESIGN.md 3 and 4)."""

from __future__ import annotations

import dataclasses

import pytest

from localrules.rules import PRESETS, RunParams
from localrules.train.schedule import ALIGN, BOTH, TASK, StepPlan

S = 5004  # ImageNet steps per epoch at |B| = 256


def test_ia_tpe_worked_example():
    """paper-spec §E.2: 1,000,800 steps; J lr 0 for one step-epoch, warm-up over the next 12, drops
    at step-epochs 61, 121, 161; η constant until 61, then the same drops."""
    plan = StepPlan(PRESETS["ia-tpe"].run, S, trains_alignment=True)
    assert plan.total_steps == 1_000_800
    assert plan.kind(0) == ALIGN and plan.kind(S - 1) == ALIGN  # the delay: R every step
    assert plan.kind(S) == ALIGN and plan.kind(S + 1) == TASK  # then alternation, step 0 is R
    assert plan.task_lr(S - 1) == 0.0
    assert plan.task_lr(S + 6 * S) == pytest.approx(0.125 * 6 / 12)
    assert plan.task_lr(13 * S) == pytest.approx(0.125)
    assert plan.task_lr(61 * S - 1) == pytest.approx(0.125)
    assert plan.task_lr(61 * S) == pytest.approx(0.0125)
    assert plan.task_lr(121 * S) == pytest.approx(0.00125)
    assert plan.task_lr(161 * S) == pytest.approx(0.000125)
    eta = 0.009785729149984566
    assert plan.alignment_lr(0) == eta and plan.alignment_lr(61 * S - 1) == eta
    assert plan.alignment_lr(61 * S) == pytest.approx(eta * 0.1)
    assert plan.alignment_lr(161 * S) == pytest.approx(eta * 1e-3)


def test_no_delay_warms_eta_up_like_the_task_rate():
    """Decision 4: delay_epochs = 0 means no delay and η warmed up with the task rate."""
    plan = StepPlan(PRESETS["wm-ad-tpe"].run, S, trains_alignment=True)
    eta = 0.005268466140227959
    assert plan.kind(0) == ALIGN and plan.kind(1) == TASK
    assert plan.alignment_lr(0) == 0.0
    assert plan.alignment_lr(6 * S) == pytest.approx(eta / 2)
    assert plan.alignment_lr(12 * S) == pytest.approx(eta)
    assert plan.task_lr(6 * S) == pytest.approx(0.125 / 2)
    assert plan.alignment_lr(60 * S) == pytest.approx(eta / 10)
    assert plan.total_steps == 200 * S


def test_table4_schedule_is_simultaneous_and_eta_can_drop_with_the_task_rate():
    """SA/AA: η constant at 1e-3 (B.2 is silent; the code's default); with ``drops`` (B.3's
    schedule) it starts at 1e-3 without warm-up and drops with the task rate."""
    plan = StepPlan(dataclasses.replace(PRESETS["sa"].run, alignment_schedule="drops"), S,
                    trains_alignment=True)
    assert plan.total_steps == 450_360  # the SA checkpoint's step count
    assert all(plan.kind(g) == BOTH for g in (0, 1, 2, S * 40))
    assert plan.task_lr(0) == 0.0 and plan.task_lr(5 * S) == pytest.approx(0.1)
    assert plan.task_lr(30 * S) == pytest.approx(0.01)
    assert plan.task_lr(80 * S) == pytest.approx(1e-4)
    assert plan.alignment_lr(0) == plan.alignment_lr(30 * S - 1) == 1e-3
    assert plan.alignment_lr(30 * S) == pytest.approx(1e-4)
    assert plan.alignment_lr(85 * S) == pytest.approx(1e-6)
    constant = StepPlan(PRESETS["sa"].run, S, trains_alignment=True)
    assert constant.alignment_lr(0) == constant.alignment_lr(85 * S) == 1e-3


def test_fractional_schedule_epochs():
    """A budget's schedule lands between epochs: warm-up to 1.333, the drop at 6.667."""
    run = RunParams(batch_size=64, task_lr=0.1, epochs=10, warmup_epochs=1.333333,
                    drop_epochs=(6.666667,), alignment_lr=1e-3, alignment_schedule="task",
                    delay_epochs=0.222222, alternate=True)
    steps = 22
    plan = StepPlan(run, steps, trains_alignment=True)
    assert plan.total_steps == 10 * 2 * steps
    delay_steps = round(0.222222 * steps)  # R only for the first 0.22 data epochs
    assert all(plan.kind(g) == ALIGN for g in range(delay_steps))
    assert {plan.kind(delay_steps), plan.kind(delay_steps + 1)} == {ALIGN, TASK}
    task_epoch = 2 * steps  # global steps per task epoch under alternation
    assert plan.task_lr(delay_steps + round(6.6 * task_epoch)) == pytest.approx(0.1)
    assert plan.task_lr(delay_steps + round(6.7 * task_epoch)) == pytest.approx(0.01)


def test_joint_optimizer_has_one_rate():
    run = dataclasses.replace(PRESETS["wm-tpe"].run, optimizer="joint", alignment_lr=None)
    plan = StepPlan(run, S, trains_alignment=True)
    for g in (0, 3 * S, 50 * S, 95 * S):
        assert plan.alignment_lr(g) == plan.task_lr(g)
    with pytest.raises(ValueError, match="delay_epochs must be 0"):
        dataclasses.replace(run, delay_epochs=1)
    with pytest.raises(ValueError, match="optimizer"):
        dataclasses.replace(run, optimizer="adam")


def test_rules_without_alignment_loss_only_take_task_steps():
    run = dataclasses.replace(PRESETS["ia-tpe"].run, alternate=True, delay_epochs=2)
    plan = StepPlan(run, 10, trains_alignment=False)
    assert plan.period == 1 and plan.delay == 0
    assert {plan.kind(g) for g in range(50)} == {TASK}
    assert plan.total_steps == run.epochs * 10


def test_epoch_boundaries_and_data_needs():
    plan = StepPlan(RunParams(epochs=3, alternate=True, alignment_lr=1e-3), 4, True)
    assert plan.steps_per_task_epoch == 8 and plan.total_steps == 24
    assert [plan.task_epoch(g) for g in (0, 7, 8, 23)] == [0, 0, 1, 2]
    assert plan.epoch_end(2) == 24
    assert not plan.needs_batch(0, noise_only_alignment=True)
    assert plan.needs_batch(0, noise_only_alignment=False)
    assert plan.needs_batch(1, noise_only_alignment=True)

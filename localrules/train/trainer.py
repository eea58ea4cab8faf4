"""One trial, end to end: the training loop, with its parts around it.

The loop walks global steps (``schedule.StepPlan`` says what each one does), taking one batch per
step that needs data from a ``stream.BatchStream``; ``state.TrainState`` holds the network, the
optimizers and the counters; ``checkpoints.Checkpoints`` saves and restores all of it; the rest
(validation, history, checkpoints after an epoch, weight snapshots, the progress bar, the caller's
``on_epoch``) are callbacks (``callbacks``). A run restored from a checkpoint continues exactly
where it stopped, mid-epoch included, and ends with the same result as an uninterrupted one
(given deterministic ops).

SIGTERM (a preempted VM) saves a checkpoint after the current step and stops with
``interrupted: true``; the next run that resumes carries on. ``start_run`` applies the one
resume policy (``runs.RunDirectory.resumes``) for ``localrules train`` and workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from localrules.config import TrialConfig
from localrules.results import TrainResult
from localrules.runs import RunDirectory
from localrules.train.callbacks import Callback, EpochEnd, EpochFunction, Progress, WeightSnapshots
from localrules.train.checkpoints import Checkpoints
from localrules.train.epoch import EpochSums
from localrules.train.evaluation import Validation, evaluate
from localrules.train.history import RunHistory
from localrules.train.metrics import WeightProbe
from localrules.train.schedule import ALIGN, TASK, StepPlan
from localrules.train.signals import StopSignal
from localrules.train.state import build_state
from localrules.train.strategy import make_strategy
from localrules.train.stream import BatchStream
from localrules.validation import EPOCHS


class RunAbandoned(RuntimeError):
    """``fit``'s ``may_write`` refused a write: the run stopped without touching its files."""


class Trainer:
    """Trains one TrialConfig into a run directory (local path or gs://).

    ``dataset`` replaces the config's dataset with an already loaded one (benchmarks use a sized
    synthetic set); ``native=True`` builds the network from native Keras layers, the baseline of
    the benchmarks (backprop only).
    """

    def __init__(self, config: TrialConfig, out_dir: str | Path | RunDirectory, *,
                 progress: bool = False, dataset: Any = None, native: bool = False) -> None:
        from localrules.data import load_dataset

        self.config, run = config, config.run
        self.run_dir = out_dir if isinstance(out_dir, RunDirectory) else RunDirectory(out_dir)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        if native and config.rule.spec.uses_backward_kernel:
            raise ValueError("native layers train by backprop only; use rule 'bp'")
        self.dataset = dataset or load_dataset(
            config.dataset, config.data_dir, image_size=config.image_size, seed=config.seed,
            **config.dataset_options)
        self.plan = StepPlan(run, self.dataset.steps_per_epoch(run.batch_size),
                             config.rule.has_alignment_loss)
        self.strategy = make_strategy(config.strategy)
        if run.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(f"batch size {run.batch_size} is not divisible by the "
                             f"{self.strategy.num_replicas_in_sync} replicas")
        self.state = build_state(config, self.dataset.info, self.strategy, native=native)
        self.step = self.state.step
        self.checkpoints = Checkpoints(self.run_dir.checkpoints, self.state.checkpoint_parts(),
                                       self.step)
        self.history = RunHistory(self.run_dir)
        # Backprop sends errors through Wᵀ: its runs report no B–W angles, norm ratios or
        # weight snapshots (an unused random B would read ~90°).
        probe = (WeightProbe(self.state.layers, config.weight_samples, config.seed)
                 if config.rule.spec.uses_backward_kernel else None)
        self.validation = validation = Validation(
            lambda: evaluate(self.dataset, run.batch_size, self.strategy, self.state.steps),
            config.eval_every, run.epochs, probe)
        snapshots = [WeightSnapshots(self.run_dir, probe)] if probe is not None else []
        self.callbacks: list[Callback] = [Progress(progress), validation, self.history,
                                          self.checkpoints, *snapshots]
        """In the order of their writes (see ``callbacks``); ``fit``'s ``on_epoch`` comes last."""

    def run_step(self, step: int, stream: BatchStream) -> dict[str, Any]:
        """One global step as the plan says: its kind and, by kind, its losses."""
        plan, state = self.plan, self.state
        kind = plan.kind(step)
        state.task_optimizer.learning_rate = plan.task_lr(step)
        if state.alignment_optimizer is not None:
            state.alignment_optimizer.learning_rate = plan.alignment_lr(step)
        out: dict[str, Any] = {"kind": kind}
        if kind == ALIGN:
            noise_only = self.config.rule.noise is not None
            x = stream.next()[0] if plan.needs_batch(step, noise_only) else None
            out["alignment"] = state.steps.align(x).numpy()
        else:
            x, y = stream.next()
            if kind == TASK:
                loss, ce, correct = state.steps.task(x, y)
            else:
                loss, ce, correct, per_layer = state.steps.joint(x, y)
                out["alignment"] = per_layer.numpy()
            out.update(loss=float(loss), ce=float(ce), correct=float(correct))
        return out

    def fit(self, on_epoch: Callable[[dict[str, Any]], None] | None = None, *,
            should_stop: Callable[[], bool] | None = None,
            may_write: Callable[[], bool] | None = None,
            until_epoch: int | None = None) -> TrainResult:
        """Train to the configured number of epochs (or until divergence or a stop request).

        ``until_epoch`` stops the run once that epoch is trained, validated and checkpointed
        (a multi-fidelity rung): the schedule stays the configured run's, so a later ``fit``
        of the restored run continues exactly as an uninterrupted one would.

        A stop request (SIGTERM, or ``should_stop()`` returning True; with ``should_stop`` the
        caller owns SIGTERM and no handler is installed) is honoured after the current step:
        mid-epoch the run checkpoints and stops with ``interrupted: true``; after an epoch's last
        step that epoch is recorded first. ``may_write`` is asked before the run's files are
        first touched and before every epoch's and every stop's writes: False raises
        ``RunAbandoned`` and nothing more is written (a worker whose lease has passed to another
        must not touch the trial's files). ``on_epoch`` gets each epoch's record once it is
        checkpointed (an epoch reported is an epoch a restart can resume from).
        """
        def check_write() -> None:
            if may_write is not None and not may_write():
                raise RunAbandoned(f"{self.run_dir}: writes refused, run abandoned")

        plan, batch = self.plan, self.config.run.batch_size
        last = plan.total_steps
        if until_epoch is not None:
            EPOCHS.check("until_epoch", until_epoch)
            if until_epoch > self.config.run.epochs:
                raise ValueError(f"until_epoch {until_epoch} is past the run's "
                                 f"{self.config.run.epochs} epochs")
            last = plan.epoch_end(until_epoch - 1)
        self.validation.until = until_epoch
        callbacks = [*self.callbacks, *([EpochFunction(on_epoch)] if on_epoch else [])]
        stream = BatchStream(self.dataset, batch, self.strategy, int(self.state.consumed))
        diverged = interrupted = False
        check_write()
        try:
            for callback in callbacks:
                callback.on_train_begin(int(self.step))
            record = self.history.last  # a run resumed after it finished reports it again
            with StopSignal(install=should_stop is None) as signal_stop:
                def stopping() -> bool:
                    return signal_stop.requested or (should_stop is not None and should_stop())

                while int(self.step) < last and not (diverged or interrupted):
                    if stopping():  # between epochs: the last epoch's checkpoint stands
                        interrupted = True
                        break
                    epoch = plan.task_epoch(int(self.step))
                    end = plan.epoch_end(epoch)
                    sums, started = EpochSums(len(self.state.layers)), time.perf_counter()
                    for callback in callbacks:
                        callback.on_epoch_begin(epoch, end - int(self.step))
                    while int(self.step) < end:
                        sums.add(self.run_step(int(self.step), stream), batch)
                        self.step.assign_add(1)
                        self.state.consumed.assign(stream.consumed)
                        for callback in callbacks:
                            callback.on_step_end()
                        if not sums.finite:
                            diverged = True
                            break
                        if int(self.step) < end and stopping():
                            interrupted = True
                            break
                    check_write()
                    if interrupted:
                        self.checkpoints.save()
                        break
                    step = int(self.step)
                    record = sums.record(epoch + 1, step, plan, time.perf_counter() - started)
                    done = EpochEnd(epoch + 1, step, record, sums.finite, sums.alignment_means())
                    for callback in callbacks:
                        callback.on_epoch_end(done)
        finally:
            for callback in callbacks:
                callback.on_train_end()
        return self._result(record, diverged, interrupted)

    def _result(self, record: dict[str, Any], diverged: bool, interrupted: bool) -> TrainResult:
        step = int(self.step)
        angles = {name: m["weight_angle_deg"] for name, m in record.get("layers", {}).items()}
        return TrainResult(
            top1=record.get("top1"), top5=record.get("top5"), eval_loss=record.get("eval_loss"),
            diverged=diverged or bool(record.get("diverged")), interrupted=interrupted,
            epochs=self.plan.task_epoch(max(step - 1, 0)) + 1 if step else 0, steps=step,
            weight_angle_deg=angles)


def start_run(config: TrialConfig, out_dir: str | Path, *, resume: bool,
              may_write: Callable[[], bool] | None = None,
              **options: Any) -> tuple[Trainer, bool]:
    """A trainer for the run in ``out_dir`` under the one resume policy
    (``RunDirectory.resumes``, which raises ``RunExists`` or ``ConfigMismatch``): checked before
    anything is built; a new run's config written once the trainer is built (so bad input
    writes nothing) and ``may_write`` allows it (else ``RunAbandoned``, as in ``fit``); a
    resumed run restored from its latest checkpoint. Returns the trainer and whether a
    checkpoint was restored. ``options`` go to ``Trainer``."""
    run_dir = RunDirectory(out_dir)
    resuming = run_dir.resumes(config, resume=resume)
    trainer = Trainer(config, run_dir, **options)
    if not resuming:
        if may_write is not None and not may_write():
            raise RunAbandoned(f"{run_dir}: writes refused, run abandoned")
        run_dir.write_config(config)
        return trainer, False
    return trainer, trainer.checkpoints.restore()

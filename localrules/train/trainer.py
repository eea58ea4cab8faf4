"""One trial, end to end: build, train with two optimizers, validate, checkpoint, resume.

The loop walks global steps (``schedule.StepPlan`` says what each one does); the data stream is
one batch per step that needs data, so its position is a single counter that the checkpoint keeps
with the model, both optimizers, the step, the update-noise generator and every layer's
input-noise state. A run restored from a checkpoint continues exactly where it stopped, mid-epoch
included, and ends with the same result as an uninterrupted one (given deterministic ops).

SIGTERM (a preempted VM) saves a checkpoint after the current step and stops with
``interrupted: true``; the next run with ``resume=True`` carries on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from localrules import runs
from localrules.config import TrialConfig
from localrules.snapshots import (
    SNAPSHOT_DIR,
    LayerSample,
    layer_sample,
    pack_snapshot,
    sample_positions,
    snapshot_name,
    write_bytes_atomic,
)
from localrules.train.history import History
from localrules.train.metrics import layer_weights, weight_metrics
from localrules.train.schedule import ALIGN, TASK, StepPlan
from localrules.train.steps import TrainSteps
from localrules.train.strategy import make_strategy

log = logging.getLogger(__name__)

ADAM_EPSILON = 1e-8
"""TF1's Adam default, which the reference used (Keras's default is 1e-7)."""


@dataclass
class TrainResult:
    top1: float | None
    top5: float | None
    eval_loss: float | None
    diverged: bool
    interrupted: bool
    epochs: int
    steps: int
    weight_angle_deg: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _BatchStream:
    """Batches in order across data epochs, from a position (batches consumed so far)."""

    def __init__(self, dataset, batch_size: int, strategy, consumed: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.strategy = strategy
        self.per_epoch = dataset.steps_per_epoch(batch_size)
        self.consumed = consumed
        self._iterator: Iterator | None = None

    def _open(self) -> None:
        epoch, offset = divmod(self.consumed, self.per_epoch)
        ds = self.dataset.train(self.batch_size, epoch, skip_batches=offset)
        self._iterator = iter(self.strategy.experimental_distribute_dataset(ds))
        self._left = self.per_epoch - offset

    def next(self):
        if self._iterator is None or self._left == 0:
            self._open()
        batch = next(self._iterator)
        self._left -= 1
        self.consumed += 1
        return batch


class RunAbandoned(RuntimeError):
    """``fit``'s ``may_write`` refused a write: the run stopped without touching its files."""


class _StopSignal:
    """Turns SIGTERM into a flag checked between steps (only in the main thread, and only when
    ``install``; otherwise the caller handles signals and ``requested`` stays False)."""

    def __init__(self, install: bool = True) -> None:
        self.requested = False
        self.install = install
        self._previous = None

    def __enter__(self) -> _StopSignal:
        if not self.install:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: checkpointing after this step and stopping")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """Trains one TrialConfig into ``out_dir`` (local path or gs://).

    ``dataset`` replaces the config's dataset with an already loaded one (benchmarks use a sized
    synthetic set); ``native=True`` builds the network from native Keras layers, the baseline of
    the benchmarks (backprop only).
    """

    def __init__(
        self,
        config: TrialConfig,
        out_dir: str | Path,
        *,
        progress: bool = False,
        dataset: Any = None,
        native: bool = False,
    ) -> None:
        from localrules.data import load_dataset
        from localrules.models import asymmetric_layers, build

        self.config = config
        self.out_dir = str(out_dir)
        self.progress = progress
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        if native and config.rule.spec.uses_backward_kernel:
            raise ValueError("native layers train by backprop only; use rule 'bp'")
        self.dataset = dataset or load_dataset(
            config.dataset, config.data_dir, image_size=config.image_size, seed=config.seed,
            **config.dataset_options)
        run = config.run
        self.plan = StepPlan(run, self.dataset.steps_per_epoch(run.batch_size),
                             config.rule.has_alignment_loss)
        self.strategy = make_strategy(config.strategy)
        if run.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(f"batch size {run.batch_size} is not divisible by the "
                             f"{self.strategy.num_replicas_in_sync} replicas")
        info = self.dataset.info
        with self.strategy.scope():
            self.model = build(config.model, info.num_classes, info.image_shape, config.rule,
                               width=config.width, weight_decay=run.weight_decay, seed=config.seed,
                               native=native)
            self.layers = asymmetric_layers(self.model)
            backward = {id(layer.backward_kernel) for layer in self.layers}
            tied = config.rule.spec.tied_gradient
            # The joint optimizer trains B with the forward weights in one SGD.
            joint = run.optimizer == "joint" and config.rule.has_alignment_loss
            self.task_variables = [v for v in self.model.trainable_variables
                                   if tied or joint or id(v) not in backward]
            self.alignment_variables = ([layer.backward_kernel for layer in self.layers]
                                        if config.rule.has_alignment_loss else [])
            self.task_optimizer = keras.optimizers.SGD(
                learning_rate=0.0, momentum=run.momentum, nesterov=True)
            self.task_optimizer.build(self.task_variables)
            self.alignment_optimizer = None
            if self.alignment_variables and not joint:
                self.alignment_optimizer = keras.optimizers.Adam(
                    learning_rate=0.0, epsilon=ADAM_EPSILON)
                self.alignment_optimizer.build(self.alignment_variables)
        # Host-side counters, outside the strategy's scope (plain variables, not mirrored).
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.consumed = tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_consumed")
        self.noise_rng = tf.random.Generator.from_seed(config.seed + 7919)
        rule = config.rule
        self.noise_only_alignment = rule.noise is not None
        self.steps = TrainSteps(
            strategy=self.strategy, model=self.model, layers=self.layers,
            task_optimizer=self.task_optimizer, alignment_optimizer=self.alignment_optimizer,
            task_variables=self.task_variables, alignment_variables=self.alignment_variables,
            task_noise_variables=self._task_noise_variables(),
            global_batch=run.batch_size, update_noise=config.update_noise,
            noise_rng=self.noise_rng, noise_only_alignment=self.noise_only_alignment,
            joint=joint,
        )
        noise_states = {layer.name: layer.noise_state for layer in self.layers}
        checkpoint_parts: dict[str, Any] = dict(
            model=self.model, task_optimizer=self.task_optimizer, step=self.step,
            consumed=self.consumed, update_noise_rng=self.noise_rng,
            input_noise=noise_states,
        )
        if self.alignment_optimizer is not None:
            checkpoint_parts["alignment_optimizer"] = self.alignment_optimizer
        self.checkpoint = tf.train.Checkpoint(**checkpoint_parts)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory=f"{self.out_dir}/{runs.CHECKPOINTS}", max_to_keep=2)
        self._positions: dict[str, np.ndarray] = {}
        self.compares_weights = config.rule.spec.uses_backward_kernel
        """Whether B means anything: backprop sends errors through Wᵀ, so its runs report no
        B–W angles, norm ratios or weight snapshots (an unused random B would read ~90°)."""

    def _task_noise_variables(self) -> list:
        """What task-side update noise perturbs: the task optimizer's list, which in the
        reference also holds every B (with a zero gradient), so noisy task updates move B too
        (paper-spec §E.5, §I.13)."""
        held = {id(v) for v in self.task_variables}
        extra = [layer.backward_kernel for layer in self.layers
                 if self.config.rule.spec.uses_backward_kernel
                 and id(layer.backward_kernel) not in held]
        return [*self.task_variables, *extra]

    # --- persistence ------------------------------------------------------------------------
    def restore(self) -> bool:
        """Restore the latest checkpoint if there is one; True if restored."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s at step %d", latest, int(self.step))
        return True

    def _save(self) -> None:
        self.manager.save(checkpoint_number=int(self.step))

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        totals = np.zeros(4)
        batch = self.config.run.batch_size
        for x, y in self.strategy.experimental_distribute_dataset(self.dataset.eval(batch)):
            totals += np.array([float(v) for v in self.steps.evaluate(x, y)])
        loss, top1, top5, count = totals
        return {"eval_loss": loss / count, "top1": top1 / count, "top5": top5 / count}

    # --- training ---------------------------------------------------------------------------
    def _run_step(self, step: int, stream: _BatchStream) -> dict[str, Any]:
        plan = self.plan
        kind = plan.kind(step)
        self.task_optimizer.learning_rate = plan.task_lr(step)
        if self.alignment_optimizer is not None:
            self.alignment_optimizer.learning_rate = plan.alignment_lr(step)
        out: dict[str, Any] = {"kind": kind}
        if kind == ALIGN:
            x = stream.next()[0] if plan.needs_batch(step, self.noise_only_alignment) else None
            out["alignment"] = self.steps.align(x).numpy()
        else:
            x, y = stream.next()
            if kind == TASK:
                loss, ce, correct = self.steps.task(x, y)
            else:
                loss, ce, correct, per_layer = self.steps.joint(x, y)
                out["alignment"] = per_layer.numpy()
            out.update(loss=float(loss), ce=float(ce), correct=float(correct))
        return out

    def fit(
        self,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        may_write: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train to the configured number of epochs (or until divergence or a stop request).

        A stop request (SIGTERM, or ``should_stop()`` returning True; with ``should_stop`` the
        caller owns SIGTERM and no handler is installed) is honoured after the current step:
        mid-epoch the run checkpoints and stops with ``interrupted: true``; after an epoch's last
        step that epoch is recorded first. ``may_write`` is asked before every checkpoint and
        history write: False raises ``RunAbandoned`` and nothing more is written (a worker whose
        lease has passed to another must not touch the trial's files).
        """
        plan, run = self.plan, self.config.run
        history = History(self.out_dir, start_step=int(self.step))
        stream = _BatchStream(self.dataset, run.batch_size, self.strategy, int(self.consumed))
        # A run resumed after it finished reports its last record again.
        record: dict[str, Any] = history.records[-1] if history.records else {}
        diverged = interrupted = False

        def check_write() -> None:
            if may_write is not None and not may_write():
                raise RunAbandoned(f"{self.out_dir}: writes refused, run abandoned")

        try:
            if int(self.step) == 0 and self.compares_weights:  # Figs. S3/S4's starting point
                check_write()
                self._write_snapshot(0, self._weight_metrics()[1])
            with _StopSignal(install=should_stop is None) as signal_stop:
                def stopping() -> bool:
                    return signal_stop.requested or (should_stop is not None and should_stop())

                while int(self.step) < plan.total_steps and not (diverged or interrupted):
                    if stopping():  # between epochs: the last epoch's checkpoint stands
                        interrupted = True
                        break
                    epoch = plan.task_epoch(int(self.step))
                    end = plan.epoch_end(epoch)
                    sums = _EpochSums(len(self.layers))
                    started = time.perf_counter()
                    bar = _progress(self.progress, end - int(self.step), f"epoch {epoch + 1}")
                    while int(self.step) < end:
                        out = self._run_step(int(self.step), stream)
                        self.step.assign_add(1)
                        self.consumed.assign(stream.consumed)
                        sums.add(out, run.batch_size)
                        bar.update(1)
                        if not sums.finite:
                            diverged = True
                            break
                        if int(self.step) < end and stopping():
                            interrupted = True
                            break
                    bar.close()
                    if interrupted:
                        check_write()
                        self._save()
                        break
                    record, samples = self._epoch_record(epoch, sums,
                                                         time.perf_counter() - started, diverged)
                    check_write()
                    history.write(record)
                    if not diverged:
                        self._save()
                        if samples is not None:  # after the save: only resumable epochs
                            self._write_snapshot(epoch + 1, samples)
                    # After the save: an epoch reported is an epoch a restart can resume from.
                    if on_epoch is not None:
                        on_epoch(record)
        finally:
            history.close()
        return self._result(record, diverged, interrupted)

    def _epoch_record(self, epoch: int, sums: _EpochSums, seconds: float,
                      diverged: bool) -> tuple[dict[str, Any], list | None]:
        """The epoch's history record, and each layer's snapshot entry if it was a validation
        point."""
        step = int(self.step)
        validated = None
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "task_lr": self.plan.task_lr(max(step - 1, 0)),
            "alignment_lr": self.plan.alignment_lr(max(step - 1, 0)),
            "examples_per_s": sums.examples / seconds if seconds > 0 else None,
            "seconds": seconds,
            **sums.summary(),
            "diverged": diverged,
        }
        last = epoch + 1 == self.config.run.epochs
        if not diverged and ((epoch + 1) % self.config.eval_every == 0 or last):
            record.update(self.evaluate())
            if self.compares_weights:
                metrics, validated = self._weight_metrics()
                record["layers"] = {
                    name: {**m, "alignment_loss": loss}
                    for (name, m), loss in zip(metrics.items(), sums.alignment_means(),
                                               strict=True)
                }
            if not math.isfinite(record["eval_loss"]):
                record["diverged"] = True
        return record, validated

    def _weight_metrics(self) -> tuple[dict[str, dict[str, float]], list[LayerSample]]:
        """Every layer's weight metrics and its snapshot entry, one layer's tensors at a time."""
        metrics: dict[str, dict[str, float]] = {}
        samples: list[LayerSample] = []
        for i, layer in enumerate(self.layers):
            w, b = layer_weights(layer)
            metrics[layer.name] = weight_metrics(w, b)
            if layer.name not in self._positions:
                self._positions[layer.name] = sample_positions(
                    w.size, self.config.weight_samples, self.config.seed, i)
            samples.append(layer_sample(layer.name, w, b, self._positions[layer.name],
                                        metrics[layer.name]))
        return metrics, samples

    def _write_snapshot(self, epoch: int, samples: list[LayerSample]) -> None:
        """``weights/epoch-NNNN.npz``: every layer's metrics and sampled (W_ij, B_ji) pairs."""
        folder = f"{self.out_dir}/{SNAPSHOT_DIR}"
        tf.io.gfile.makedirs(folder)
        write_bytes_atomic(f"{folder}/{snapshot_name(epoch)}",
                           pack_snapshot(epoch, int(self.step), samples))

    def _result(self, record: dict[str, Any], diverged: bool, interrupted: bool) -> TrainResult:
        diverged = diverged or bool(record.get("diverged"))
        angles = {name: m["weight_angle_deg"] for name, m in record.get("layers", {}).items()}
        return TrainResult(
            top1=record.get("top1"), top5=record.get("top5"), eval_loss=record.get("eval_loss"),
            diverged=diverged, interrupted=interrupted,
            epochs=self.plan.task_epoch(max(int(self.step) - 1, 0)) + 1 if int(self.step) else 0,
            steps=int(self.step), weight_angle_deg=angles,
        )


class _EpochSums:
    """Running sums over one epoch's steps, for the history record."""

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


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="step")


def write_config(config: TrialConfig, out_dir: str) -> None:
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(f"{out_dir}/config.json", "w") as f:
        f.write(json.dumps(config.to_dict(), indent=2, sort_keys=True))


def read_config(out_dir: str) -> TrialConfig | None:
    path = f"{out_dir}/config.json"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return TrialConfig.from_json(f.read())

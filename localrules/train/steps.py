"""The compiled training and evaluation steps, one ``tf.function`` per kind of step.

- task step: forward pass, J = cross-entropy + L2 (the model's regularizer losses), Nesterov update
  of the task variables; the alignment optimizer applies a zero update (Adam's moments and step
  count move, as in the reference; DESIGN.md decision 3);
- alignment step: R only. When the rule's noise replaces every layer input, no forward pass at all
  (decision 6); otherwise a forward pass records each layer's R_l. Adam updates B; the task
  optimizer applies a zero update (momentum keeps moving W);
- joint step (simultaneous mode): one forward pass, both losses, both updates.

With ``joint=True`` (the ``joint`` optimizer: one Nesterov SGD on J + R for every weight, as in the
reference code's default path) B is among the task variables and every update goes through the
task optimizer: R's gradient reaches B, J's reaches the forward weights, and the other side gets
a zero gradient in the same update.

Losses are scaled for the global batch: cross-entropy summed per replica and divided by the global
batch, regularizers and R divided by the number of replicas, so the optimizers' cross-replica sum
gives the means. Update noise (appendix B.3) is added in cross-replica context with one generator,
so replicas stay identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from localrules.config import UpdateNoise


class TrainSteps:
    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        layers: Sequence,
        task_optimizer: keras.optimizers.Optimizer,
        alignment_optimizer: keras.optimizers.Optimizer | None,
        task_variables: Sequence[tf.Variable],
        alignment_variables: Sequence[tf.Variable],
        task_noise_variables: Sequence[tf.Variable],
        global_batch: int,
        update_noise: UpdateNoise,
        noise_rng: tf.random.Generator,
        noise_only_alignment: bool,
        joint: bool = False,
    ) -> None:
        self.strategy = strategy
        self.model = model
        self.layers = list(layers)
        self.task_optimizer = task_optimizer
        self.alignment_optimizer = alignment_optimizer
        self.task_variables = list(task_variables)
        self.alignment_variables = list(alignment_variables)
        self.task_noise_variables = list(task_noise_variables)
        self.global_batch = global_batch
        self.replicas = strategy.num_replicas_in_sync
        self.update_noise = update_noise
        self.noise_rng = noise_rng
        self.noise_only_alignment = noise_only_alignment
        self.joint_optimizer = joint
        self.task = tf.function(self._task)
        self.align = tf.function(self._align)
        self.joint = tf.function(self._joint)
        self.evaluate = tf.function(self._evaluate, reduce_retracing=True)

    # --- losses -----------------------------------------------------------------------------
    def _task_loss(self, x, y):
        logits = self.model(x, training=True)
        ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        ce = tf.reduce_sum(tf.cast(ce, tf.float32)) / self.global_batch
        reg = self.model.losses
        reg = tf.add_n([tf.cast(r, tf.float32) for r in reg]) / self.replicas if reg else 0.0
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                                 tf.cast(y, tf.int32)), tf.float32))
        return ce + reg, ce, correct

    def _recorded_alignment(self) -> tf.Tensor:
        return tf.stack([tf.cast(layer.last_alignment_loss, tf.float32) for layer in self.layers])

    def _noise_alignment(self) -> tf.Tensor:
        per_replica = self.global_batch // self.replicas
        return tf.stack([tf.cast(layer.noise_alignment_loss(per_replica), tf.float32)
                         for layer in self.layers])

    # --- updates ----------------------------------------------------------------------------
    @staticmethod
    def _apply(optimizer, grads, variables) -> None:
        pairs = zip(grads, variables, strict=True)
        optimizer.apply_gradients([(tf.zeros_like(v) if g is None else g, v) for g, v in pairs])

    @staticmethod
    def _zero_update(optimizer, variables) -> None:
        if optimizer is not None and variables:
            optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])

    def _add_update_noise(self, optimizer, variables, variance: float) -> None:
        """lr_t · ε on every variable of that optimizer, ε with the given variance."""
        if variance <= 0 or optimizer is None:
            return
        lr = tf.cast(optimizer.learning_rate, tf.float32)
        std = math.sqrt(variance)
        for v in variables:
            if self.update_noise.distribution == "normal":
                eps = self.noise_rng.normal(v.shape, stddev=std)
            else:
                half = math.sqrt(3.0) * std
                eps = self.noise_rng.uniform(v.shape, -half, half)
            v.assign_add(tf.cast(lr * eps, v.dtype))

    def _noise_after(self, task: bool, align: bool) -> None:
        if task:
            self._add_update_noise(self.task_optimizer, self.task_noise_variables,
                                   self.update_noise.task_variance)
        if align:
            self._add_update_noise(self.alignment_optimizer, self.alignment_variables,
                                   self.update_noise.alignment_variance)

    # --- replica bodies ---------------------------------------------------------------------
    def _task_replica(self, x, y):
        with tf.GradientTape() as tape:
            loss, ce, correct = self._task_loss(x, y)
        self._apply(self.task_optimizer, tape.gradient(loss, self.task_variables),
                    self.task_variables)
        self._zero_update(self.alignment_optimizer, self.alignment_variables)
        return loss, ce, correct

    def _align_replica(self, x):
        with tf.GradientTape() as tape:
            if self.noise_only_alignment:
                per_layer = self._noise_alignment()
            else:
                self.model(x, training=True)
                per_layer = self._recorded_alignment()
            r = tf.reduce_sum(per_layer) / self.replicas
        if self.joint_optimizer:  # B's R-gradient, zeros for the rest, in one SGD update
            self._apply(self.task_optimizer, tape.gradient(r, self.task_variables),
                        self.task_variables)
            return per_layer / self.replicas
        self._apply(self.alignment_optimizer, tape.gradient(r, self.alignment_variables),
                    self.alignment_variables)
        self._zero_update(self.task_optimizer, self.task_variables)
        return per_layer / self.replicas

    def _joint_replica(self, x, y):
        with tf.GradientTape(persistent=True) as tape:
            loss, ce, correct = self._task_loss(x, y)
            per_layer = self._recorded_alignment()
            r = tf.reduce_sum(per_layer) / self.replicas
            total = loss + r  # on the tape: the joint optimizer's one loss
        if self.joint_optimizer:
            self._apply(self.task_optimizer, tape.gradient(total, self.task_variables),
                        self.task_variables)
            del tape
            return loss, ce, correct, per_layer / self.replicas
        self._apply(self.task_optimizer, tape.gradient(loss, self.task_variables),
                    self.task_variables)
        self._apply(self.alignment_optimizer, tape.gradient(r, self.alignment_variables),
                    self.alignment_variables)
        del tape
        return loss, ce, correct, per_layer / self.replicas

    def _sum(self, value):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

    # --- compiled steps (cross-replica) ------------------------------------------------------
    def _task(self, x, y):
        out = self.strategy.run(self._task_replica, args=(x, y))
        self._noise_after(task=True, align=False)
        return tuple(self._sum(v) for v in out)

    def _align(self, x):
        out = self.strategy.run(self._align_replica, args=(x,))
        self._noise_after(task=False, align=True)
        return self._sum(out)

    def _joint(self, x, y):
        out = self.strategy.run(self._joint_replica, args=(x, y))
        self._noise_after(task=True, align=True)
        return tuple(self._sum(v) for v in out)

    def _eval_replica(self, x, y):
        logits = tf.cast(self.model(x, training=False), tf.float32)
        y = tf.cast(y, tf.int32)
        ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        top1 = tf.math.in_top_k(y, logits, 1)
        k5 = min(5, int(logits.shape[-1]))
        top5 = tf.math.in_top_k(y, logits, k5)
        count = tf.cast(tf.shape(y)[0], tf.float32)
        return (tf.reduce_sum(ce), tf.reduce_sum(tf.cast(top1, tf.float32)),
                tf.reduce_sum(tf.cast(top5, tf.float32)), count)

    def _evaluate(self, x, y):
        out = self.strategy.run(self._eval_replica, args=(x, y))
        return tuple(self._sum(v) for v in out)

"""The training state of one trial: the network, its two optimizers and what they update, the
host-side counters, and the compiled steps over them.

Which variables each optimizer owns is where the rules differ (paper-spec §E, DESIGN.md decision
3): the task optimizer (Nesterov SGD) trains the forward weights, and also B when the rule ties B
to W's gradient (Kolen–Pollack) or under the ``joint`` optimizer (one SGD on J + R); otherwise
Adam trains B on the alignment loss. Everything here is what a checkpoint holds
(``checkpoint_parts``), so a restored state is the whole state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from localrules.config import TrialConfig
from localrules.train.steps import TrainSteps

ADAM_EPSILON = 1e-8
"""TF1's Adam default, which the reference used (Keras's default is 1e-7)."""


@dataclass
class TrainState:
    model: keras.Model
    layers: list
    """The asymmetric layers, in model order."""
    task_variables: list
    alignment_variables: list
    task_optimizer: keras.optimizers.Optimizer
    alignment_optimizer: keras.optimizers.Optimizer | None
    """None when B is not trained by an optimizer of its own."""
    step: tf.Variable
    consumed: tf.Variable
    """Batches taken from the data stream so far: its position."""
    noise_rng: tf.random.Generator
    steps: TrainSteps

    def checkpoint_parts(self) -> dict[str, Any]:
        parts: dict[str, Any] = dict(
            model=self.model, task_optimizer=self.task_optimizer, step=self.step,
            consumed=self.consumed, update_noise_rng=self.noise_rng,
            input_noise={layer.name: layer.noise_state for layer in self.layers},
        )
        if self.alignment_optimizer is not None:
            parts["alignment_optimizer"] = self.alignment_optimizer
        return parts


def build_state(config: TrialConfig, info: Any, strategy: tf.distribute.Strategy, *,
                native: bool = False) -> TrainState:
    """The state for ``config`` on a dataset described by ``info``, under ``strategy``."""
    from localrules.models import asymmetric_layers, build

    run, rule = config.run, config.rule
    with strategy.scope():
        model = build(config.model, info.num_classes, info.image_shape, rule,
                      width=config.width, weight_decay=run.weight_decay, seed=config.seed,
                      native=native)
        layers = asymmetric_layers(model)
        backward = {id(layer.backward_kernel) for layer in layers}
        tied = rule.spec.tied_gradient
        # The joint optimizer trains B with the forward weights in one SGD.
        joint = run.optimizer == "joint" and rule.has_alignment_loss
        task_variables = [v for v in model.trainable_variables
                          if tied or joint or id(v) not in backward]
        alignment_variables = ([layer.backward_kernel for layer in layers]
                               if rule.has_alignment_loss else [])
        task_optimizer = keras.optimizers.SGD(learning_rate=0.0, momentum=run.momentum,
                                              nesterov=True)
        task_optimizer.build(task_variables)
        alignment_optimizer = None
        if alignment_variables and not joint:
            alignment_optimizer = keras.optimizers.Adam(learning_rate=0.0,
                                                        epsilon=ADAM_EPSILON)
            alignment_optimizer.build(alignment_variables)
    # Host-side counters, outside the strategy's scope (plain variables, not mirrored).
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    consumed = tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_consumed")
    noise_rng = tf.random.Generator.from_seed(config.seed + 7919)
    steps = TrainSteps(
        strategy=strategy, model=model, layers=layers,
        task_optimizer=task_optimizer, alignment_optimizer=alignment_optimizer,
        task_variables=task_variables, alignment_variables=alignment_variables,
        task_noise_variables=_task_noise_variables(config, layers, task_variables),
        global_batch=run.batch_size, update_noise=config.update_noise,
        noise_rng=noise_rng, noise_only_alignment=rule.noise is not None, joint=joint,
    )
    return TrainState(model, layers, task_variables, alignment_variables, task_optimizer,
                      alignment_optimizer, step, consumed, noise_rng, steps)


def _task_noise_variables(config: TrialConfig, layers: list, task_variables: list) -> list:
    """What task-side update noise perturbs: the task optimizer's list, which in the reference
    also holds every B (with a zero gradient), so noisy task updates move B too (paper-spec
    §E.5, §I.13)."""
    held = {id(v) for v in task_variables}
    extra = [layer.backward_kernel for layer in layers
             if config.rule.spec.uses_backward_kernel and id(layer.backward_kernel) not in held]
    return [*task_variables, *extra]

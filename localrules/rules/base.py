"""What every asymmetric layer shares: the two kernels, the rule, the alignment loss.

A subclass says how it projects (``_project``), reconstructs (``_reconstruct``) and runs the
custom-gradient op (``_asymmetric``), and how its backward kernel maps to the forward kernel's
layout (``_backward_as_forward``). Everything else — bias, activation, regularizers, recording R_l
in training calls, serialisation of the rule — is here once.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from localrules.rules.alignment import alignment_loss
from localrules.rules.presets import resolve_rule
from localrules.rules.spec import Rule


def independent_initializer(initializer: Any) -> keras.initializers.Initializer:
    """A copy of ``initializer`` that draws different values.

    Keras 3 initializers seeded with an int (or unseeded, which fixes a seed at construction)
    return the same values on every call, so reusing W's initializer for B would make B == W.
    """
    init = keras.initializers.get(initializer)
    config = init.get_config()
    if "seed" in config:
        seed = config["seed"]
        if isinstance(seed, int):
            config["seed"] = seed + 1_000_003
        elif seed is None:
            config["seed"] = None
    return init.__class__.from_config(config)


class AsymmetricLayer(keras.layers.Layer):
    """Base class of ``AsymmetricDense`` and ``AsymmetricConv2D``; not used on its own."""

    def __init__(
        self,
        *,
        rule: Rule | str | dict | None = None,
        output_relu: bool = False,
        seed: int | None = None,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.rule = resolve_rule(rule)
        self.output_relu = bool(output_relu)
        self.seed = seed
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._last_alignment_loss = None

    # --- what subclasses provide -------------------------------------------------------------
    def _project(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _reconstruct(self, y: tf.Tensor, kernel: tf.Tensor, input_shape: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _asymmetric(self, x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _backward_as_forward(self, b: tf.Tensor) -> tf.Tensor:
        return b

    # --- shared machinery --------------------------------------------------------------------
    @property
    def feeds_relu(self) -> bool:
        """Whether the layer's output goes through a ReLU (the alignment ReLU flags apply)."""
        return self.output_relu or self.activation is keras.activations.relu

    def _add_kernels(self, input_shape: tuple[int | None, ...], forward_shape: tuple[int, ...],
                     backward_transposed: bool, bias_size: int) -> None:
        self._example_shape = tuple(input_shape[1:])
        self.forward_kernel = self.add_weight(
            name="forward_kernel",
            shape=forward_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        b_init = independent_initializer(self.kernel_initializer)
        if backward_transposed:
            # Drawn in W's layout, so fan-in/fan-out based scales match W's, then transposed.
            def b_init(shape, dtype=None, _init=b_init):
                return tf.transpose(_init(tuple(reversed(shape)), dtype=dtype))
            backward_shape = tuple(reversed(forward_shape))
        else:
            backward_shape = forward_shape
        self.backward_kernel = self.add_weight(
            name="backward_kernel",
            shape=backward_shape,
            initializer=b_init,
            trainable=self.rule.spec.trains_backward,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(bias_size,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        # Always present, so every rule's layers have the same weights and checkpoints line up.
        self._noise_seed = keras.random.SeedGenerator(self.seed, name="noise_seed")

    def _tensor(self, variable: Any) -> tf.Tensor:
        t = tf.convert_to_tensor(variable.value)
        return t if t.dtype == self.compute_dtype else tf.cast(t, self.compute_dtype)

    def _input(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        return inputs if inputs.dtype == self.compute_dtype else tf.cast(inputs, self.compute_dtype)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        inputs = self._input(inputs)
        w = self._tensor(self.forward_kernel)
        if self.rule.spec.uses_backward_kernel:
            y = self._asymmetric(inputs, w, self._tensor(self.backward_kernel))
        else:
            y = self._project(inputs, w)
        if training and self.rule.has_alignment_loss:
            # Recorded for the trainer; the forward projection is reused rather than recomputed.
            # A step that does not read it (an alternating J step) has these ops pruned, except
            # the noise seed's (stateful, cheap) increment.
            self._last_alignment_loss = self.alignment_loss(inputs, forward_projection=y)
        if self.bias is not None:
            y = tf.nn.bias_add(y, self._tensor(self.bias))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def alignment_loss(
        self, inputs: tf.Tensor, forward_projection: tf.Tensor | None = None
    ) -> tf.Tensor:
        """R_l for the batch ``inputs`` (the layer's input). Its gradient reaches B only.

        With input noise only the shape of ``inputs`` matters (see ``noise_alignment_loss``). A
        rule without primitives (bp, fa) gives a constant 0.
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        inputs = self._input(inputs)
        return alignment_loss(
            self.rule,
            inputs,
            tf.convert_to_tensor(self.forward_kernel.value),
            self.backward_as_forward(),
            None if self.bias is None else self._tensor(self.bias),
            project=self._project,
            reconstruct=self._reconstruct,
            relu=self.feeds_relu,
            seed=self._noise_seed,
            forward_projection=forward_projection,
        )

    def noise_alignment_loss(self, batch_size: int) -> tf.Tensor:
        """R_l for a batch of noise inputs, without any real input or forward pass.

        The rule's noise replaces the layer input, so a trainer's alignment step needs only the
        input's shape (DESIGN.md decision 6): no forward pass through the network at all.
        """
        if self.rule.noise is None:
            raise ValueError(f"{self.name}: rule {self.rule.kind!r} has no input noise")
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before asking for its alignment loss")
        placeholder = tf.zeros((batch_size, *self._example_shape), self.compute_dtype)
        return self.alignment_loss(placeholder)

    @property
    def noise_state(self) -> tf.Variable:
        """The input-noise generator's state: a trainer checkpoints it so a resumed run draws the
        same noise as an uninterrupted one (tf.train.Checkpoint does not track Keras seeds)."""
        return self._noise_seed.state.value

    def backward_as_forward(self) -> tf.Tensor:
        """B in W's layout (a dense layer's B transposed), for weight metrics."""
        return self._backward_as_forward(tf.convert_to_tensor(self.backward_kernel.value))

    @property
    def last_alignment_loss(self) -> tf.Tensor | None:
        """R_l recorded by the latest training call (None before one, or if R ≡ 0).

        Inside a ``tf.function`` this is a symbolic tensor: read it in the same traced function,
        right after the forward pass (as the trainer does), never afterwards.
        """
        return self._last_alignment_loss

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            rule=self.rule.to_dict(),
            output_relu=self.output_relu,
            seed=self.seed,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            activity_regularizer=keras.regularizers.serialize(self.activity_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config

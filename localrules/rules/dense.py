"""``AsymmetricDense``: keras.layers.Dense whose input gradient flows through B, not Wᵀ."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from localrules.rules.base import AsymmetricLayer
from localrules.rules.ops import asymmetric_matmul
from localrules.rules.spec import Rule


@keras.saving.register_keras_serializable(package="localrules")
class AsymmetricDense(AsymmetricLayer):
    """A dense layer with forward kernel W ``(in, units)`` and backward kernel B ``(units, in)``.

    Takes keras.layers.Dense's arguments plus ``rule`` (a Rule, a kind name such as ``"fa"``, or a
    preset name), ``output_relu`` (whether the output goes through a ReLU later, so the rule's ReLU
    path operations apply) and ``seed`` (for the rule's input noise). The input gradient is
    ``dy·B``; under ``rule="bp"`` it is exact backpropagation. B is drawn with W's initializer,
    independently.
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        rule: Rule | str | dict | None = None,
        output_relu: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        super().__init__(
            rule=rule, output_relu=output_relu, seed=seed, activation=activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
        )
        self.units = units

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: AsymmetricDense needs input of rank >= 2 with a known last "
                f"dimension, got shape {tuple(input_shape)}"
            )
        in_dim = int(input_shape[-1])
        self._add_kernels(input_shape, (in_dim, self.units), backward_transposed=True,
                          bias_size=self.units)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: in_dim})

    def _project(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.tensordot(x, kernel, axes=[[-1], [0]])

    def _reconstruct(self, y: tf.Tensor, kernel: tf.Tensor, input_shape: tf.Tensor) -> tf.Tensor:
        return tf.tensordot(y, kernel, axes=[[-1], [1]])

    def _asymmetric(self, x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return asymmetric_matmul(x, w, b, tied=self.rule.spec.tied_gradient)

    def _backward_as_forward(self, b: tf.Tensor) -> tf.Tensor:
        return tf.transpose(b)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}

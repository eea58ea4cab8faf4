"""``AsymmetricConv2D``: keras.layers.Conv2D whose input gradient is a transposed convolution
with B (same shape and layout as W), not with W."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from localrules.rules.base import AsymmetricLayer
from localrules.rules.ops import asymmetric_conv2d, conv2d_input_gradient
from localrules.rules.spec import Rule
from localrules.validation import check_choice


def _pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return (int(pair[0]), int(pair[1]))


@keras.saving.register_keras_serializable(package="localrules")
class AsymmetricConv2D(AsymmetricLayer):
    """A 2-D convolution (NHWC) with forward kernel W and backward kernel B, both
    ``(kh, kw, in, filters)``.

    Takes keras.layers.Conv2D's arguments (``groups`` must be 1; channels-last only) plus ``rule``,
    ``output_relu`` and ``seed`` as AsymmetricDense. The input gradient is the transposed
    convolution of the upstream error with B at the layer's stride, padding and dilation.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = (1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: int | tuple[int, int] = (1, 1),
        groups: int = 1,
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
        if isinstance(filters, bool) or not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"filters must be a positive integer, got {filters!r}")
        if groups != 1:
            raise ValueError(f"groups must be 1 (grouped convolutions are not supported), "
                             f"got {groups!r}")
        data_format = data_format or keras.config.image_data_format()
        check_choice("data_format", data_format, ("channels_last",))
        padding = padding.lower() if isinstance(padding, str) else padding
        check_choice("padding", padding, ("valid", "same"))
        kernel_size = _pair("kernel_size", kernel_size)
        strides = _pair("strides", strides)
        dilation_rate = _pair("dilation_rate", dilation_rate)
        if max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError("strides > 1 together with dilation_rate > 1 is not supported")
        super().__init__(
            rule=rule, output_relu=output_relu, seed=seed, activation=activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
        )
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.data_format = data_format
        self.dilation_rate = dilation_rate
        self.groups = groups

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: AsymmetricConv2D needs NHWC input of rank 4 with a known channel "
                f"count, got shape {tuple(input_shape)}"
            )
        channels = int(input_shape[-1])
        self._add_kernels(input_shape, (*self.kernel_size, channels, self.filters),
                          backward_transposed=False, bias_size=self.filters)
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def _nn_args(self) -> dict[str, Any]:
        return {"strides": [1, *self.strides, 1], "padding": self.padding.upper(),
                "dilations": [1, *self.dilation_rate, 1]}

    def _project(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.nn.conv2d(x, kernel, **self._nn_args())

    def _reconstruct(self, y: tf.Tensor, kernel: tf.Tensor, input_shape: tf.Tensor) -> tf.Tensor:
        return conv2d_input_gradient(y, kernel, input_shape, **self._nn_args())

    def _asymmetric(self, x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return asymmetric_conv2d(
            x, w, b, strides=self.strides, padding=self.padding,
            dilations=self.dilation_rate, tied=self.rule.spec.tied_gradient,
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        spatial = []
        for size, k, s, d in zip(input_shape[1:3], self.kernel_size, self.strides,
                                 self.dilation_rate, strict=True):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(-(-size // s))
            else:
                spatial.append((size - (k - 1) * d - 1) // s + 1)
        return (input_shape[0], *spatial, self.filters)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
        }

"""Per-layer weight metrics at validation points (paper-spec §H, appendix C).

The weight angle is the angle in degrees between the flattened W and B (B in W's layout): 0° is
exact symmetry, i.e. backprop; feedback alignment stays near 90°. The norm ratio is ‖B‖_F/‖W‖_F.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from localrules.snapshots import LayerSample, layer_sample, sample_positions

L2_EPSILON = 1e-12


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two tensors flattened to vectors, in degrees (normalised with ε = 1e-12)."""
    a = np.ravel(a).astype(np.float64)
    b = np.ravel(b).astype(np.float64)
    a = a / max(np.linalg.norm(a), L2_EPSILON)
    b = b / max(np.linalg.norm(b), L2_EPSILON)
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


def layer_weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """(W, B in W's layout) of one asymmetric layer, as float64 NumPy arrays."""
    return (np.asarray(layer.forward_kernel.numpy(), np.float64),
            np.asarray(layer.backward_as_forward().numpy(), np.float64))


def weight_metrics(w: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """{"weight_angle_deg", "norm_ratio"} of a layer's W and B (B in W's layout)."""
    return {
        "weight_angle_deg": angle_degrees(w, b),
        "norm_ratio": float(np.linalg.norm(b) / max(np.linalg.norm(w), L2_EPSILON)),
    }


class WeightProbe:
    """Measures every asymmetric layer's weight metrics and its snapshot entry, one layer's
    tensors at a time. Each layer's sampled positions are drawn once (from the seed and the
    layer's index), so a dot in one snapshot is the same weight in the next."""

    def __init__(self, layers: Sequence, samples: int, seed: int) -> None:
        self.layers = list(layers)
        self.samples = samples
        self.seed = seed
        self._positions: dict[str, np.ndarray] = {}

    def measure(self) -> tuple[dict[str, dict[str, float]], list[LayerSample]]:
        metrics: dict[str, dict[str, float]] = {}
        samples: list[LayerSample] = []
        for i, layer in enumerate(self.layers):
            w, b = layer_weights(layer)
            metrics[layer.name] = weight_metrics(w, b)
            if layer.name not in self._positions:
                self._positions[layer.name] = sample_positions(w.size, self.samples, self.seed, i)
            samples.append(layer_sample(layer.name, w, b, self._positions[layer.name],
                                        metrics[layer.name]))
        return metrics, samples

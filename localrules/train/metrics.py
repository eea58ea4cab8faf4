"""Per-layer weight metrics at validation points (paper-spec §H, appendix C).

The weight angle is the angle in degrees between the flattened W and B (B in W's layout): 0° is
exact symmetry, i.e. backprop; feedback alignment stays near 90°. The norm ratio is ‖B‖_F/‖W‖_F.
"""

from __future__ import annotations

import numpy as np

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

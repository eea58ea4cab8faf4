"""Images from outside any dataset (the stimuli of a neural fit): what is accepted, without TF.

Kept apart from the pipelines, like ``info``, so that the CLI can refuse a bad stimulus file in
milliseconds, before TensorFlow loads. Accepted: (N, H, W) grayscale or (N, H, W, C) arrays,
either uint8 (0–255) or floating point in [0, 1]. The pixel unit is fixed rather than guessed
from the values: an image that happens to be dark must not be rescaled differently from a bright
one.
"""

from __future__ import annotations

import numpy as np

CHUNK = 256
"""Images checked at a time, so a memory-mapped stimulus file is never read whole."""


def check_stimuli(images: np.ndarray, what: str = "stimuli") -> None:
    """Raise a ValueError saying what is wrong with ``images`` and what is accepted."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{what} must be a NumPy array, got {type(images).__name__}")
    if images.ndim not in (3, 4) or 0 in images.shape:
        raise ValueError(f"{what} must have shape (images, height, width) or (images, height, "
                         f"width, channels), got {images.shape}")
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{what} must be uint8 (0–255) or floating point in [0, 1], got dtype "
                         f"{images.dtype}")
    low, high = np.inf, -np.inf
    for start in range(0, len(images), CHUNK):
        chunk = np.asarray(images[start:start + CHUNK])
        if not np.isfinite(chunk).all():
            raise ValueError(f"{what} contain NaN/Inf (from image {start} on); pixels must be "
                             "finite")
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if low < 0 or high > 1:
        raise ValueError(f"floating-point {what} must be in [0, 1], got values in [{low:g}, "
                         f"{high:g}]; divide 0–255 images by 255 or save them as uint8")


def channels(images: np.ndarray) -> int:
    """Channels of a checked stimulus array (1 for (N, H, W))."""
    return 1 if images.ndim == 3 else int(images.shape[3])


def check_channels(stimulus_channels: int, model_channels: int, what: str = "stimuli") -> None:
    """Which conversions ``features`` makes: equal counts pass, grayscale is repeated to any
    count, RGB becomes grayscale for a 1-channel model; anything else is refused."""
    if stimulus_channels == model_channels or stimulus_channels == 1 \
            or (stimulus_channels == 3 and model_channels == 1):
        return
    raise ValueError(f"{what} have {stimulus_channels} channels but the model takes "
                     f"{model_channels}; give {model_channels}-channel or 1-channel (grayscale) "
                     "images")

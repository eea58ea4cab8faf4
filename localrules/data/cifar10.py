"""``cifar10``: the official python-version CIFAR-10 batches from a directory.

``data_dir`` holds ``data_batch_1`` … ``data_batch_5`` and ``test_batch`` (the "CIFAR-10 python
version" download), either directly or inside a ``cifar-10-batches-py/`` subdirectory. Each file
is a pickled dict with ``b"data"`` (uint8, N×3072, each row the red, green, then blue 32×32 planes
in row-major order) and ``b"labels"`` (N ints in 0–9). Sizes come from the files, so a trimmed copy
works and ``info.train_examples`` is what was found.

The files are pickles, which can run code when loaded, so they are read with an unpickler that
only resolves the handful of NumPy and codec globals an array needs; anything else is refused.

Training augmentation is the standard one for CIFAR ResNets: pad 4 pixels of zeros (black) on
every side, take a random 32×32 crop, flip left-right with probability ½. Images are then scaled to
[0, 1] and normalised per channel with the mean and std of the training images found.
"""

from __future__ import annotations

import io
import pickle
import posixpath
import warnings

import numpy as np
import tensorflow as tf

from localrules.data.base import (
    ArrayDataset,
    check_native_size,
    pad_and_crop,
    require_data_dir,
)
from localrules.data.info import DatasetInfo

OPTIONS: tuple[str, ...] = ()
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
EVAL_FILE = "test_batch"
SUBDIRECTORY = "cifar-10-batches-py"
NUM_CLASSES = 10
PAD = 4
EXPECTED = ("a directory with the CIFAR-10 python batches data_batch_1..data_batch_5 and "
            f"test_batch, directly or under {SUBDIRECTORY}/")

# What a pickled NumPy array may reference (old files say numpy.core, NumPy 2 writes numpy._core).
_ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),  # NumPy integers in a labels list
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays, and nothing that could run other code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core under NumPy 2
            return super().find_class(module, name)


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (N, 32, 32, 3) uint8 images and (N,) int32 labels; ValueError naming it."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"CIFAR-10 file {path} does not exist; expected {EXPECTED}")
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a corrupt pickle can raise almost anything
        raise ValueError(f"{path} is not a CIFAR-10 python batch (cannot unpickle it: {e})") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR-10 python batch: expected a dict with keys "
                         f"b'data' and b'labels', got {keys}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {got}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: b'labels' must be {data.shape[0]} integers (one per image), "
                         f"got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows → NHWC
    return np.ascontiguousarray(images), labels.astype(np.int32)


def find_batches(data_dir: str) -> str:
    """The directory that holds the batch files: ``data_dir`` or its ``cifar-10-batches-py``."""
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(f"CIFAR-10 data_dir {data_dir} is not a directory; expected {EXPECTED}")
    for candidate in (data_dir, posixpath.join(data_dir, SUBDIRECTORY)):
        if tf.io.gfile.exists(posixpath.join(candidate, TRAIN_FILES[0])):
            return candidate
    nested = posixpath.join(data_dir, SUBDIRECTORY)
    base = nested if tf.io.gfile.isdir(nested) else data_dir
    raise ValueError(f"CIFAR-10 file {posixpath.join(base, TRAIN_FILES[0])} does not exist; "
                     f"expected {EXPECTED}")


class Cifar10(ArrayDataset):
    """The CIFAR-10 arrays with pad-crop-flip augmentation."""

    def _augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = pad_and_crop(image, PAD, crop_seed)
        return tf.image.stateless_random_flip_left_right(image, flip_seed)


def load(data_dir: str | None, *, image_size: int | None, seed: int) -> Cifar10:
    """Read and check the six batch files under ``data_dir``."""
    data_dir = require_data_dir("cifar10", data_dir, EXPECTED)
    check_native_size("cifar10", image_size, 32)
    directory = find_batches(data_dir)
    parts = [read_batch(posixpath.join(directory, name)) for name in TRAIN_FILES]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    eval_images, eval_labels = read_batch(posixpath.join(directory, EVAL_FILE))
    mean, std = channel_stats(train_images)
    info = DatasetInfo("cifar10", NUM_CLASSES, (32, 32, 3), len(train_labels), len(eval_labels))
    return Cifar10(info, seed, (train_images, train_labels), (eval_images, eval_labels), mean, std,
                   pixel_scale=255.0)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images, in pixel units (0–255).

    Computed from a 256-bin histogram per channel: exact, and no float copy of 150 MB of pixels.
    Normalising raw pixels with these equals scaling to [0, 1] and normalising with them / 255.
    """
    values = np.arange(256, dtype=np.float64)
    mean, std = np.empty(3), np.empty(3)
    for c in range(3):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        p = counts / counts.sum()
        mean[c] = p @ values
        std[c] = np.sqrt(max(p @ np.square(values - mean[c]), 1e-12))
    return mean, std

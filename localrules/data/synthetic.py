"""``synthetic``: random images and labels for benchmarks, made on the fly from the seed.

Example ``i`` of a split is generated from the stateless seed ``(key(seed, split), i)``: a standard
normal image (already "normalised") and a uniform label. Nothing is materialised, so any size is
free, and the same seed gives the same dataset in every process. The images carry no signal about
the labels; this dataset measures throughput, not learning. The epoch order is still a fresh
permutation per epoch, so the input pipeline does the same work as a real one.

Options: ``image_shape`` (H, W, C), default (32, 32, 3) — ``image_size`` if given replaces H and
W; ``num_classes`` (10); ``train_examples`` (50,000); ``eval_examples`` (10,000).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from localrules.data.base import (
    EVAL_DATA,
    TRAIN_DATA,
    IndexedDataset,
    derive_seed,
    example_seed,
    refuse_data_dir,
)
from localrules.data.info import DatasetInfo
from localrules.validation import check_int

OPTIONS: tuple[str, ...] = ("image_shape", "num_classes", "train_examples", "eval_examples")


class Synthetic(IndexedDataset):
    """Examples generated from (split key, index); nothing is stored."""

    def __init__(self, info: DatasetInfo, seed: int) -> None:
        super().__init__(info, seed)
        self._keys = {"train": derive_seed(seed, TRAIN_DATA), "eval": derive_seed(seed, EVAL_DATA)}

    def _example(self, split: str, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(example_seed(self._keys[split], index), 2)
        image = tf.random.stateless_normal(self._info.image_shape, seed=seeds[0])
        label = tf.random.stateless_uniform([], seed=seeds[1], minval=0,
                                            maxval=self._info.num_classes, dtype=tf.int32)
        return image, label

    def _normalise(self, image: tf.Tensor) -> tf.Tensor:
        return image


def load(
    data_dir: str | None,
    *,
    image_size: int | None,
    seed: int,
    image_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    train_examples: int = 50_000,
    eval_examples: int = 10_000,
) -> Synthetic:
    """Check the options; generating happens lazily in the pipelines."""
    refuse_data_dir("synthetic", data_dir)
    if not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3:
        raise ValueError(f"synthetic image_shape must be (height, width, channels), "
                         f"got {image_shape!r}")
    shape = tuple(check_int(f"synthetic image_shape[{i}]", v, minimum=1)
                  for i, v in enumerate(image_shape))
    if image_size is not None:
        shape = (image_size, image_size, shape[2])
    check_int("synthetic num_classes", num_classes, minimum=1)
    check_int("synthetic train_examples", train_examples, minimum=1)
    check_int("synthetic eval_examples", eval_examples, minimum=1)
    info = DatasetInfo("synthetic", num_classes, shape, train_examples, eval_examples)
    return Synthetic(info, seed)

"""What every dataset shares: the train/eval contract, seed derivation, and indexed pipelines.

Determinism is the point of this module. A trial that is preempted resumes mid-epoch in another
process (maybe on another machine) and must see exactly the batches it would have seen, so nothing
here reads TensorFlow's global or op-level random state:

- the order of an epoch is a permutation drawn from NumPy's legacy ``RandomState`` (its streams
  are frozen across NumPy versions) seeded from ``(seed, epoch)``;
- augmentation uses stateless ops whose per-example seed is ``(key(seed, epoch), example id)``;
- ``tf.data`` maps run with ``deterministic=True``.

``Dataset.shuffle(seed=...)`` is deliberately not used: its order also depends on the global seed
(``tf.random.set_seed``), so two processes with different global seeds would disagree.

Batch sizes are global; the trainer splits batches across replicas with
``strategy.experimental_distribute_dataset``.
"""

from __future__ import annotations

import abc

import numpy as np
import tensorflow as tf

from localrules.data.info import DatasetInfo
from localrules.validation import check_int

AUTOTUNE = tf.data.AUTOTUNE

# Independent random streams, so that e.g. the shuffle of epoch 3 never equals the crops of epoch 3.
SHUFFLE = 1
AUGMENT = 2
FILES = 3
WINDOW = 4
TRAIN_DATA = 5
EVAL_DATA = 6
SPLIT = 7


def derive_seed(*words: int) -> int:
    """A 32-bit seed from any non-negative integers, the same in every process and on every host.

    NumPy's ``SeedSequence`` hashes the words, so nearby inputs ((0, 1) and (1, 0)) give unrelated
    seeds.
    """
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint32)[0])


def permutation(n: int, key: int) -> np.ndarray:
    """A permutation of ``range(n)`` as int64, fixed by ``key`` (a 32-bit seed)."""
    return np.random.RandomState(key).permutation(n).astype(np.int64)


def example_seed(key: int, index: tf.Tensor) -> tf.Tensor:
    """The shape-[2] int64 seed of one example for stateless random ops."""
    return tf.stack([tf.constant(key, tf.int64), tf.cast(index, tf.int64)])


def normalise(image: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """``(image - mean) / std`` in float32; ``mean`` and ``std`` broadcast over the channels."""
    image = tf.cast(image, tf.float32)
    return (image - tf.cast(mean, tf.float32)) / tf.cast(std, tf.float32)


def refuse_data_dir(name: str, data_dir: str | None) -> None:
    """Built-in datasets read no files; a data_dir for them is a configuration mistake."""
    if data_dir is not None:
        raise ValueError(f"dataset {name!r} is generated in memory and takes no data_dir, "
                         f"got {data_dir!r}")


def require_data_dir(name: str, data_dir: str | None, expected: str) -> str:
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir: {expected}")
    return data_dir


def check_native_size(name: str, image_size: int | None, native: int) -> None:
    """Datasets stored at one resolution are not resized: a different size is refused."""
    if image_size is not None and image_size != native:
        raise ValueError(f"dataset {name!r} has {native}x{native} images; image_size must be "
                         f"{native} or unset, got {image_size}")


class ImageDataset(abc.ABC):
    """One dataset ready for training: epochs of batches on demand, and the evaluation set.

    ``train`` yields ``(images, labels)``: float32 NHWC normalised images and int32 labels, in
    batches of exactly ``batch_size``, ``steps_per_epoch(batch_size)`` of them per epoch (the
    remainder is dropped). ``eval`` yields every evaluation example exactly once, unaugmented, in a
    fixed order; its last batch may be smaller.
    """

    def __init__(self, info: DatasetInfo, seed: int) -> None:
        self._info = info
        self.seed = seed

    @property
    def info(self) -> DatasetInfo:
        return self._info

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch: ``train_examples // batch_size``, at least 1."""
        check_int("batch_size", batch_size, minimum=1)
        steps = self._info.train_examples // batch_size
        if steps < 1:
            raise ValueError(
                f"batch_size {batch_size} is larger than the {self._info.train_examples} training "
                f"examples of {self._info.name!r}; use at most {self._info.train_examples}"
            )
        return steps

    def _check_train(self, batch_size: int, epoch: int, skip_batches: int) -> int:
        """Validate ``train``'s arguments; returns the steps per epoch."""
        steps = self.steps_per_epoch(batch_size)
        check_int("epoch", epoch, minimum=0)
        check_int("skip_batches", skip_batches, minimum=0)
        if skip_batches > steps:
            raise ValueError(f"skip_batches {skip_batches} exceeds the {steps} batches of an epoch "
                             f"at batch_size {batch_size}")
        return steps

    @abc.abstractmethod
    def train(self, batch_size: int, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """Epoch ``epoch``'s batches from batch ``skip_batches`` on, the same in every process."""

    @abc.abstractmethod
    def eval(self, batch_size: int) -> tf.data.Dataset:
        """Every evaluation example once, in a fixed order, without augmentation."""

    @abc.abstractmethod
    def normalise_unit(self, images: tf.Tensor) -> tf.Tensor:
        """Float images with pixel values in [0, 1] (any leading batch shape, channels last) as
        the model sees them: the evaluation pipeline's normalisation, nothing else.

        For images from outside the dataset (the stimuli of a neural fit), which arrive in one
        common unit whatever each dataset stores (digits keep [0, 1], CIFAR-10 keeps 0–255).
        Resizing and cropping are the caller's business.
        """


class IndexedDataset(ImageDataset):
    """A dataset whose examples are fetched by index: an epoch is a permutation of the indices.

    Subclasses give ``_example`` (the raw image and label of one index), ``_augment`` (training
    only; identity by default) and ``_normalise``. Because an epoch's order is a NumPy array,
    skipping batches to resume costs nothing: the skipped indices are simply never read.
    """

    @abc.abstractmethod
    def _example(self, split: str, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Image (any dtype) and int32 label of example ``index`` of ``split`` ("train"/"eval")."""

    def _augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return image

    @abc.abstractmethod
    def _normalise(self, image: tf.Tensor) -> tf.Tensor:
        """The float32 image the model sees."""

    pixel_scale: float = 1.0
    """What a full-intensity pixel holds in the units ``_normalise`` expects (1 for [0, 1])."""

    def normalise_unit(self, images: tf.Tensor) -> tf.Tensor:
        return self._normalise(tf.cast(images, tf.float32) * self.pixel_scale)

    def train(self, batch_size: int, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        steps = self._check_train(batch_size, epoch, skip_batches)
        order = permutation(self._info.train_examples, derive_seed(self.seed, epoch, SHUFFLE))
        order = order[skip_batches * batch_size:steps * batch_size]
        key = derive_seed(self.seed, epoch, AUGMENT)

        def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image, label = self._example("train", index)
            # Keyed by the example's id, not its position, so skipping changes nothing that follows.
            image = self._augment(image, example_seed(key, index))
            return self._normalise(image), label

        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)

    def eval(self, batch_size: int) -> tf.data.Dataset:
        check_int("batch_size", batch_size, minimum=1)

        def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image, label = self._example("eval", index)
            return self._normalise(image), label

        ds = tf.data.Dataset.range(self._info.eval_examples)
        ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.batch(batch_size).prefetch(AUTOTUNE)


class ArrayDataset(IndexedDataset):
    """Examples held in memory as arrays (digits, CIFAR-10), normalised per channel.

    Images are kept in their stored dtype (uint8 for CIFAR-10) and gathered one at a time inside
    the pipeline, so an epoch never copies the whole array.
    """

    def __init__(
        self,
        info: DatasetInfo,
        seed: int,
        train_split: tuple[np.ndarray, np.ndarray],
        eval_split: tuple[np.ndarray, np.ndarray],
        mean: np.ndarray,
        std: np.ndarray,
        pixel_scale: float = 1.0,
    ) -> None:
        """``mean`` and ``std`` are in stored units; ``pixel_scale`` is what a stored pixel of
        full intensity holds (1 for images kept in [0, 1], 255 for uint8)."""
        super().__init__(info, seed)
        self.pixel_scale = float(pixel_scale)
        self._arrays = {
            "train": (tf.constant(train_split[0]), tf.constant(train_split[1], tf.int32)),
            "eval": (tf.constant(eval_split[0]), tf.constant(eval_split[1], tf.int32)),
        }
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def _example(self, split: str, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = self._arrays[split]
        return tf.gather(images, index), tf.gather(labels, index)

    def _normalise(self, image: tf.Tensor) -> tf.Tensor:
        return normalise(image, self.mean, self.std)


def pad_and_crop(image: tf.Tensor, pad: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift ``image`` by up to ``pad`` pixels each way, filling with zeros (stateless)."""
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, [height, width, channels], seed=seed)

"""``digits``: scikit-learn's bundled 8×8 handwritten digits, the offline default dataset.

1,797 grayscale images with values 0–16, shipped inside scikit-learn, so a demo or a test trains
without a network or a data directory.

Split: a stratified 80/20 train/eval split drawn once with a fixed seed (``SPLIT_SEED``) that does
not depend on the trial's seed, so every trial of a search is scored on the same 359 examples and
their accuracies are comparable. Each class contributes round(20%) of its examples to eval.

Normalisation: pixels are scaled to [0, 1], then standardised with the mean and standard
deviation of all training pixels (one channel, so one mean and one std).

Augmentation: a random shift of up to one pixel each way, with zero padding (zero is the digits'
background). The training set is only 1,438 images, so some augmentation pays; one pixel of eight
is about the share CIFAR's 4-of-32 crop uses, and larger shifts push strokes off the tiny frame.
No flips: mirrored digits are different digits (or none).

Size: the native 8×8 by default. With ``image_size`` (e.g. 16) every image, augmented at 8×8, is
upsampled bilinearly before normalisation. At 8×8 a ResNet-18's last group sees 1×1 maps, so only
the centre tap of its 3×3 kernels is ever driven by data: data-driven alignment (WM, IA) cannot
bring those kernels' angles below about 70° (SA, which uses weights only, can). Upsampling to 16
gives the last group 2×2 maps and every tap data, at about four times the compute
(docs/science.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from localrules.data.base import ArrayDataset, pad_and_crop, refuse_data_dir
from localrules.data.info import DatasetInfo
from localrules.validation import check_int

OPTIONS: tuple[str, ...] = ()
SPLIT_SEED = 0
EVAL_FRACTION = 0.2
SHIFT = 1
NUM_CLASSES = 10
NATIVE_SIZE = 8


def stratified_split(labels: np.ndarray, eval_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and eval indices; each class puts round(fraction·count) examples in eval."""
    rng = np.random.RandomState(seed)
    train, evaluation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_eval = int(np.floor(len(members) * eval_fraction + 0.5))
        evaluation.append(members[:n_eval])
        train.append(members[n_eval:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(evaluation))


class Digits(ArrayDataset):
    """The digits arrays, shifted by up to one pixel during training (at 8×8), then upsampled
    to ``size`` when it is not the native 8."""

    size = NATIVE_SIZE

    def _augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return pad_and_crop(image, SHIFT, seed)

    def _normalise(self, image: tf.Tensor) -> tf.Tensor:
        if self.size != NATIVE_SIZE:
            image = tf.image.resize(image, (self.size, self.size), method="bilinear")
        return super()._normalise(image)


def load(data_dir: str | None, *, image_size: int | None, seed: int) -> Digits:
    """Split and standardise the bundled digits (no files, no network)."""
    refuse_data_dir("digits", data_dir)
    size = NATIVE_SIZE if image_size is None else check_int("image_size", image_size,
                                                             minimum=NATIVE_SIZE)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    labels = np.asarray(bunch.target, np.int32)
    train_idx, eval_idx = stratified_split(labels, EVAL_FRACTION, SPLIT_SEED)
    train_images = images[train_idx]
    mean = np.array([train_images.mean()], np.float32)
    std = np.array([train_images.std()], np.float32)
    info = DatasetInfo("digits", NUM_CLASSES, (size, size, 1), len(train_idx), len(eval_idx))
    digits = Digits(info, seed, (train_images, labels[train_idx]),
                    (images[eval_idx], labels[eval_idx]), mean, std)
    digits.size = size
    return digits

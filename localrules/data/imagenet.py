"""``imagenet``: ILSVRC-2012 from the standard TFRecord shards, with Inception-style training crops.

Files: ``train-*-of-*`` and ``validation-*-of-*`` in ``data_dir`` (a local path or ``gs://``), as
written by the common TF conversion scripts. Each record is a ``tf.train.Example`` with
``image/encoded`` (JPEG bytes), ``image/class/label`` (int64) and optionally the bounding boxes
``image/object/bbox/{xmin,ymin,xmax,ymax}`` (float lists, relative coordinates). Those scripts
number the classes 1..1000 and keep 0 for "background", so ``label_offset=1`` is subtracted to give
0..999; pass ``label_offset=0`` for shards with 0-based labels. Loading opens every shard and
parses its first record (in parallel threads, so ``gs://`` stays quick), and a bad shard or an
out-of-range label is a ValueError naming the file. Corruption deeper inside a shard surfaces
later as TensorFlow's own ``DataLossError``.

Counting 1.28 M records would take minutes, so the sizes are options: ``train_examples``
(default 1,281,167) and ``eval_examples`` (50,000). A training epoch is exactly
``train_examples // batch`` batches: shards that hold fewer records wrap around, extra ones are
left for later epochs. ``eval`` stops after ``eval_examples`` records, so a smaller value
evaluates on a fixed subset.

Training (the Inception recipe the paper's code used, paper-spec §D.4): sample a crop covering
8–100 % of the area with aspect ratio 3/4–4/3 that keeps at least 10 % of a labelled box (the whole
image when the record has none), 10 attempts; if all fail the sampler returns the whole image and
a central crop of ``image_size/resize`` of the shorter side is used instead. The crop is decoded
directly (``decode_and_crop_jpeg``), resized to ``image_size`` (224; 299 for v2 models), flipped
left-right with probability ½, scaled to [0, 1] and normalised with the ImageNet mean and std.
Evaluation: resize the shorter side to ``round(image_size·256/224)`` (256 for 224, 342 for 299)
keeping the aspect ratio, take the central ``image_size`` square, normalise.

Order: each epoch shuffles the shard list with NumPy, interleaves ``cycle_length`` shards
deterministically, and permutes consecutive windows of ``shuffle_window`` records with a stateless
shuffle. That replaces ``Dataset.shuffle``, whose order also depends on TensorFlow's global seed
(base.py); the conversion scripts already shuffle records before sharding, so shard order plus a
windowed permutation mixes well. Resuming with ``skip_batches`` reads the skipped records but does
not decode them.
"""

from __future__ import annotations

import math
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from localrules.data.base import (
    AUGMENT,
    AUTOTUNE,
    FILES,
    SHUFFLE,
    ImageDataset,
    derive_seed,
    example_seed,
    normalise,
    permutation,
    require_data_dir,
)
from localrules.data.info import DatasetInfo
from localrules.validation import check_int

OPTIONS: tuple[str, ...] = (
    "train_examples", "eval_examples", "label_offset", "shuffle_window", "cycle_length",
)
TRAIN_PATTERN = "train-*-of-*"
EVAL_PATTERN = "validation-*-of-*"
NUM_CLASSES = 1000
DEFAULT_IMAGE_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
MIN_OBJECT_COVERED = 0.1
READ_BUFFER = 8 * 1024 * 1024  # per open shard; large reads matter on gs://
EXPECTED = (f"a directory with ImageNet TFRecord shards {TRAIN_PATTERN} and {EVAL_PATTERN} "
            "(from the standard conversion script)")

_KEY_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
_BOX_KEYS = ("ymin", "xmin", "ymax", "xmax")  # the order the box sampler wants
_TRAIN_FEATURES = {
    **_KEY_FEATURES,
    **{f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32) for k in _BOX_KEYS},
}


def resize_size(image_size: int) -> int:
    """Shorter side before the central eval crop: 256 for 224, in proportion otherwise."""
    return math.floor(image_size * 256 / 224 + 0.5)


def _first_line(error: Exception) -> str:
    """TensorFlow's reason without the function-node and op decorations around it."""
    message = (getattr(error, "message", None) or str(error)).strip()
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.DOTALL)
    return message.splitlines()[0] if message else type(error).__name__


def check_shard(path: str, label_offset: int) -> None:
    """Open ``path`` and parse its first record; ValueError naming the file if anything is off."""
    try:
        record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise ValueError(f"ImageNet shard {path} is not a readable TFRecord file "
                         f"({_first_line(e)})") from e
    if record is None:
        raise ValueError(f"ImageNet shard {path} is empty")
    try:
        features = tf.io.parse_single_example(record, _KEY_FEATURES)
        tf.io.extract_jpeg_shape(features["image/encoded"])
    except tf.errors.OpError as e:
        raise ValueError(f"the first record of ImageNet shard {path} is not an ImageNet example "
                         "(needs JPEG bytes in image/encoded and an int64 image/class/label): "
                         f"{_first_line(e)}") from e
    label = int(features["image/class/label"])
    if not 0 <= label - label_offset < NUM_CLASSES:
        raise ValueError(
            f"ImageNet shard {path}: label {label} minus label_offset {label_offset} is outside "
            f"0..{NUM_CLASSES - 1}; the standard shards number classes 1..{NUM_CLASSES} "
            "(label_offset=1), pass label_offset=0 for 0-based labels"
        )


def _central_window(shape: tf.Tensor, fraction: float) -> tf.Tensor:
    """[y, x, h, w] of the central square covering ``fraction`` of the shorter side."""
    height, width = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * fraction, tf.int32)
    side = tf.maximum(side, 1)
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


class ImageNet(ImageDataset):
    """Streams the shards; see the module docstring for the crops, the order and the sizes."""

    def __init__(
        self,
        info: DatasetInfo,
        seed: int,
        train_files: list[str],
        eval_files: list[str],
        label_offset: int,
        shuffle_window: int,
        cycle_length: int,
    ) -> None:
        super().__init__(info, seed)
        self.train_files = train_files
        self.eval_files = eval_files
        self.label_offset = label_offset
        self.shuffle_window = shuffle_window
        self.cycle_length = cycle_length
        self.image_size = info.image_shape[0]
        self._mean = tf.constant(MEAN, tf.float32)
        self._std = tf.constant(STD, tf.float32)

    # --- records ----------------------------------------------------------------------------
    def _records(self, files: list[str], repeat: bool = False) -> tf.data.Dataset:
        """Records of ``files``, ``cycle_length`` shards at a time, in a fixed order."""
        paths = tf.data.Dataset.from_tensor_slices(files)
        if repeat:
            paths = paths.repeat()
        return paths.interleave(
            lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER),
            cycle_length=min(self.cycle_length, len(files)), block_length=1,
            num_parallel_calls=AUTOTUNE, deterministic=True,
        )

    def _label(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.cast(features["image/class/label"] - self.label_offset, tf.int32)

    def _finish(self, image: tf.Tensor) -> tf.Tensor:
        return normalise(image / 255.0, self._mean, self._std)

    def normalise_unit(self, images: tf.Tensor) -> tf.Tensor:
        return self._finish(tf.cast(images, tf.float32) * 255.0)

    # --- one example ------------------------------------------------------------------------
    def _train_example(self, record: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(record, _TRAIN_FEATURES)
        encoded = features["image/encoded"]
        boxes = tf.stack([tf.sparse.to_dense(features[f"image/object/bbox/{k}"])
                          for k in _BOX_KEYS], axis=-1)[None]  # [1, boxes, 4]
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        shape = tf.io.extract_jpeg_shape(encoded)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, boxes, seed=crop_seed, min_object_covered=MIN_OBJECT_COVERED,
            aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA, max_attempts=CROP_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        # The sampler signals failure by returning the whole image: use a central crop instead.
        failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
        sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
        central = _central_window(shape, self.image_size / resize_size(self.image_size))
        window = tf.where(failed, central, sampled)
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
        image = tf.image.resize(image, [self.image_size, self.image_size], method="bilinear")
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        image = tf.ensure_shape(image, (self.image_size, self.image_size, 3))
        return self._finish(image), self._label(features)

    def _eval_example(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(record, _KEY_FEATURES)
        image = tf.io.decode_jpeg(features["image/encoded"], channels=3)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = resize_size(self.image_size) / tf.reduce_min(shape)
        new_shape = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, new_shape, method="bilinear")
        side = self.image_size
        image = tf.image.crop_to_bounding_box(
            image, (new_shape[0] - side) // 2, (new_shape[1] - side) // 2, side, side)
        image = tf.ensure_shape(image, (side, side, 3))
        return self._finish(image), self._label(features)

    # --- pipelines --------------------------------------------------------------------------
    def train(self, batch_size: int, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        steps = self._check_train(batch_size, epoch, skip_batches)
        order = permutation(len(self.train_files), derive_seed(self.seed, epoch, FILES))
        files = [self.train_files[i] for i in order]
        window_key = derive_seed(self.seed, epoch, SHUFFLE)
        augment_key = derive_seed(self.seed, epoch, AUGMENT)

        # Repeating the shard list makes an epoch exactly steps·batch records whatever they hold.
        records = self._records(files, repeat=True).take(steps * batch_size)
        records = records.batch(self.shuffle_window).enumerate().map(
            lambda i, window: tf.random.experimental.stateless_shuffle(
                window, seed=example_seed(window_key, i)),
        ).unbatch()
        # Positions are fixed before skipping, so a resumed epoch crops exactly as the original.
        examples = records.enumerate().skip(skip_batches * batch_size)
        examples = examples.map(
            lambda i, record: self._train_example(record, example_seed(augment_key, i)),
            num_parallel_calls=AUTOTUNE, deterministic=True,
        )
        return examples.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)

    def eval(self, batch_size: int) -> tf.data.Dataset:
        check_int("batch_size", batch_size, minimum=1)
        records = self._records(self.eval_files).take(self._info.eval_examples)
        examples = records.map(self._eval_example, num_parallel_calls=AUTOTUNE,
                               deterministic=True)
        return examples.batch(batch_size).prefetch(AUTOTUNE)


def _list_shards(data_dir: str, pattern: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(posixpath.join(data_dir, pattern)))
    if not files:
        raise ValueError(f"no ImageNet shards matching {pattern} in {data_dir}; expected "
                         f"{EXPECTED}")
    return files


def load(
    data_dir: str | None,
    *,
    image_size: int | None,
    seed: int,
    train_examples: int = 1_281_167,
    eval_examples: int = 50_000,
    label_offset: int = 1,
    shuffle_window: int = 4096,
    cycle_length: int = 16,
) -> ImageNet:
    """Find and check the shards; options as in the module docstring."""
    data_dir = require_data_dir("imagenet", data_dir, EXPECTED)
    check_int("imagenet train_examples", train_examples, minimum=1)
    check_int("imagenet eval_examples", eval_examples, minimum=1)
    check_int("imagenet label_offset", label_offset, minimum=0)
    check_int("imagenet shuffle_window", shuffle_window, minimum=1)
    check_int("imagenet cycle_length", cycle_length, minimum=1)
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(f"ImageNet data_dir {data_dir} is not a directory; expected {EXPECTED}")
    train_files = _list_shards(data_dir, TRAIN_PATTERN)
    eval_files = _list_shards(data_dir, EVAL_PATTERN)
    shards = train_files + eval_files
    with ThreadPoolExecutor(max_workers=min(16, len(shards))) as pool:
        # list() re-raises the first failure, in file order.
        list(pool.map(lambda path: check_shard(path, label_offset), shards))
    info = DatasetInfo("imagenet", NUM_CLASSES, (image_size, image_size, 3),
                       train_examples, eval_examples)
    return ImageNet(info, seed, train_files, eval_files, label_offset, shuffle_window,
                    cycle_length)

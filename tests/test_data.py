"""Datasets: shapes, normalisation, deterministic epochs, resuming, and errors that name the file.

CIFAR-10 and ImageNet run on tiny files written here (a few random images), never on real data.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from localrules.data import DATASETS, DatasetInfo, load_dataset

# ---------------------------------------------------------------------------------------------
# helpers


def collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All batches of ``ds`` concatenated, plus a check of the dtypes."""
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        assert x.dtype == np.float32 and y.dtype == np.int32
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(ds.as_numpy_iterator())


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_unknown_dataset():
    assert DATASETS == ("digits", "cifar10", "imagenet", "synthetic")
    with pytest.raises(ValueError) as e:
        load_dataset("x")
    assert str(e.value) == "unknown dataset 'x'; valid: cifar10, digits, imagenet, synthetic"


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown synthetic option 'colour'"):
        load_dataset("synthetic", colour=True)
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset("digits", train_examples=5)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        load_dataset("digits", seed=-1)


# ---------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=3)


def test_digits_info_and_stratified_split(digits):
    from sklearn.datasets import load_digits

    from localrules.data.digits import SPLIT_SEED, stratified_split

    assert digits.info == DatasetInfo("digits", 10, (8, 8, 1), 1438, 359)
    labels = load_digits().target
    train_idx, eval_idx = stratified_split(labels, 0.2, SPLIT_SEED)
    assert len(np.intersect1d(train_idx, eval_idx)) == 0
    assert len(train_idx) + len(eval_idx) == len(labels)
    for c in range(10):
        count = np.sum(labels == c)
        assert abs(np.sum(labels[eval_idx] == c) - 0.2 * count) <= 0.5
    # The split does not depend on the trial's seed.
    other = load_dataset("digits", seed=99)
    np.testing.assert_array_equal(collect(other.eval(359))[0], collect(digits.eval(359))[0])


def test_digits_eval_is_every_example_once_standardised(digits):
    from sklearn.datasets import load_digits

    from localrules.data.digits import SPLIT_SEED, stratified_split

    bunch = load_digits()
    train_idx, eval_idx = stratified_split(bunch.target, 0.2, SPLIT_SEED)
    scaled = bunch.images.astype(np.float32) / 16
    mean, std = scaled[train_idx].mean(), scaled[train_idx].std()
    images, labels = collect(digits.eval(100))
    assert [len(y) for _, y in batches(digits.eval(100))] == [100, 100, 100, 59]
    np.testing.assert_array_equal(labels, bunch.target[eval_idx])
    np.testing.assert_allclose(images[..., 0], (scaled[eval_idx] - mean) / std, atol=1e-5)
    assert abs(images.mean()) < 0.1 and 0.9 < images.std() < 1.1


def test_digits_train_epoch_shape_and_coverage(digits):
    assert digits.steps_per_epoch(100) == 14
    epoch = batches(digits.train(100, epoch=0))
    assert len(epoch) == 14 and all(x.shape == (100, 8, 8, 1) for x, _ in epoch)
    # One batch of everything: every training example exactly once.
    (_, y), = batches(digits.train(1438, epoch=0))
    _, eval_labels = collect(digits.eval(1000))
    counts = np.bincount(y, minlength=10) + np.bincount(eval_labels, minlength=10)
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(counts, np.bincount(load_digits().target))


def test_train_is_deterministic_across_loads_and_varies_by_epoch_and_seed(digits):
    again = load_dataset("digits", seed=3)
    assert_same_batches(batches(digits.train(64, epoch=2)), batches(again.train(64, epoch=2)))
    _, y2 = collect(digits.train(64, epoch=2))
    _, y3 = collect(digits.train(64, epoch=3))
    _, y2_other_seed = collect(load_dataset("digits", seed=4).train(64, epoch=2))
    assert not np.array_equal(y2, y3)
    assert not np.array_equal(y2, y2_other_seed)


def test_augmentation_shifts_by_at_most_one_pixel(digits):
    (x0, y0), = batches(digits.train(1438, epoch=0))
    (x1, y1), = batches(digits.train(1438, epoch=1))
    # Same examples, different order and shifts: the multiset of labels is unchanged.
    np.testing.assert_array_equal(np.sort(y0), np.sort(y1))
    # A shift pads with the background (0 → -mean/std), which is the minimum value.
    background = x0.min()
    assert np.isclose(background, x1.min())
    assert not np.array_equal(np.sort(x0.ravel()), np.sort(x1.ravel()))


def test_skip_batches_resumes_the_same_epoch(digits):
    full = batches(digits.train(100, epoch=5))
    resumed = batches(digits.train(100, epoch=5, skip_batches=9))
    assert_same_batches(resumed, full[9:])
    assert batches(digits.train(100, epoch=5, skip_batches=14)) == []


def test_batch_and_epoch_arguments_are_checked(digits):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        digits.steps_per_epoch(0)
    with pytest.raises(ValueError, match="larger than the 1438 training examples of 'digits'"):
        digits.steps_per_epoch(2000)
    with pytest.raises(ValueError, match="skip_batches 15 exceeds the 14 batches"):
        digits.train(100, epoch=0, skip_batches=15)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        digits.train(100, epoch=-1)
    with pytest.raises(ValueError, match="takes no data_dir"):
        load_dataset("digits", "/tmp")
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        load_dataset("digits", image_size=4)


def test_digits_upsampled_keep_their_content():
    """image_size 16: the same examples, bilinearly upsampled from the augmented 8×8 image, so
    averaging each 2×2 block gives back (nearly) the native pixels."""
    native = load_dataset("digits", seed=3)
    big = load_dataset("digits", image_size=16, seed=3)
    assert big.info.image_shape == (16, 16, 1)
    x8, y8 = next(iter(native.eval(32)))
    x16, y16 = next(iter(big.eval(32)))
    np.testing.assert_array_equal(y8.numpy(), y16.numpy())
    assert x16.shape == (32, 16, 16, 1)
    pooled = x16.numpy().reshape(32, 8, 2, 8, 2, 1).mean(axis=(2, 4))
    assert np.corrcoef(pooled.ravel(), x8.numpy().ravel())[0, 1] > 0.95
    xt, _ = next(iter(big.train(16, epoch=0)))
    assert xt.shape == (16, 16, 16, 1)


# ---------------------------------------------------------------------------------------------
# cifar10

PER_FILE = 20


def write_cifar(directory, rng, per_file=PER_FILE):
    """Fake python-version batches; returns {file name: (uint8 rows, labels)}."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, size=per_file))  # NumPy ints in the test batch
        if name != "test_batch":
            labels = [int(v) for v in labels]  # Python ints, as in the official files
        with open(directory / name, "wb") as f:
            pickle.dump({b"batch_label": b"fake", b"labels": labels, b"data": data}, f, protocol=2)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "cifar-10-batches-py"])
def test_cifar10_from_batch_files(tmp_path, rng, nested):
    written = write_cifar(tmp_path / "cifar-10-batches-py" if nested else tmp_path, rng)
    ds = load_dataset("cifar10", tmp_path, seed=1)
    assert ds.info == DatasetInfo("cifar10", 10, (32, 32, 3), 5 * PER_FILE, PER_FILE)

    # Eval: the test batch in order, rows CHW → HWC, normalised per channel with train stats.
    data, labels = written["test_batch"]
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_hwc = train.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    mean, std = train_hwc.mean(axis=(0, 1, 2)), train_hwc.std(axis=(0, 1, 2))
    expected = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0 - mean) / std
    images, got_labels = collect(ds.eval(7))
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(images, expected, atol=1e-4)
    # Outside images in [0, 1] (a neural fit's stimuli) get the same normalisation.
    unit = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    np.testing.assert_allclose(ds.normalise_unit(unit).numpy(), expected, atol=1e-4)

    # Train: exact batches, every example once, deterministic across loads.
    epoch = batches(ds.train(10, epoch=0))
    assert len(epoch) == 10 and all(x.shape == (10, 32, 32, 3) for x, _ in epoch)
    all_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(np.sort(np.concatenate([y for _, y in epoch])),
                                  np.sort(all_labels))
    assert_same_batches(epoch, batches(load_dataset("cifar10", tmp_path, seed=1).train(10, 0)))
    assert_same_batches(batches(ds.train(10, 0, skip_batches=4)), epoch[4:])


def test_cifar10_augmentation_pads_with_black(tmp_path, rng):
    write_cifar(tmp_path, rng)
    ds = load_dataset("cifar10", tmp_path)
    x, _ = collect(ds.train(100, epoch=0))
    black = (0 - ds.mean) / ds.std  # a zero pixel after normalisation, per channel
    is_black = np.all(np.isclose(x, black, atol=1e-4), axis=-1)
    # Random pixels are almost never black; padding makes whole border rows or columns black.
    assert is_black.mean() > 0.05


def test_cifar10_missing_file_is_named(tmp_path, rng):
    write_cifar(tmp_path, rng)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"data_batch_3 does not exist"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match=r"not a directory"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"needs data_dir"):
        load_dataset("cifar10")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty/data_batch_1 does not exist"):
        load_dataset("cifar10", empty)


def test_cifar10_malformed_files_are_named(tmp_path, rng):
    write_cifar(tmp_path, rng)
    (tmp_path / "data_batch_2").write_bytes(b"\x00garbage, not a pickle" * 10)
    with pytest.raises(ValueError, match=r"data_batch_2 is not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)

    write_cifar(tmp_path, rng)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, f)
    with pytest.raises(ValueError, match=r"test_batch: b'data' must be a uint8 array of shape"):
        load_dataset("cifar10", tmp_path)

    write_cifar(tmp_path, rng)
    with open(tmp_path / "data_batch_5", "wb") as f:
        pickle.dump({b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"data_batch_5 is not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_refuses_pickles_that_reference_code(tmp_path, rng, capsys):
    write_cifar(tmp_path, rng)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Payload(), b"labels": []}, f)
    with pytest.raises(ValueError, match=r"data_batch_1 .*refusing to load global builtins.print"):
        load_dataset("cifar10", tmp_path)
    assert "must never run" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# imagenet

TRAIN_PER_SHARD = 6
EVAL_RECORDS = 5


def _example(rng, label, with_box):
    height, width = (30, 40) if rng.random() < 0.5 else (40, 30)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_jpeg(pixels).numpy()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    if with_box:
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (0.1, 0.2, 0.8, 0.9),
                              strict=True):
            feature[f"image/object/bbox/{key}"] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path, rng, labels):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, label in enumerate(labels):
            writer.write(_example(rng, int(label), with_box=i % 2 == 0))


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """Two training shards and one validation shard; labels 1..1000 as the scripts write them."""
    rng = np.random.default_rng(7)
    directory = tmp_path_factory.mktemp("imagenet")
    train_labels = rng.integers(1, 1001, size=2 * TRAIN_PER_SHARD)
    train_labels[0] = 1000  # the top class must survive the offset
    for shard in range(2):
        labels = train_labels[shard * TRAIN_PER_SHARD:(shard + 1) * TRAIN_PER_SHARD]
        write_shard(directory / f"train-{shard:05d}-of-00002", rng, labels)
    eval_labels = rng.integers(1, 1001, size=EVAL_RECORDS)
    write_shard(directory / "validation-00000-of-00001", rng, eval_labels)
    return directory, train_labels, eval_labels


def _imagenet(directory, **options):
    options = {"image_size": 32, "train_examples": 2 * TRAIN_PER_SHARD,
               "eval_examples": EVAL_RECORDS, "shuffle_window": 5, **options}
    return load_dataset("imagenet", directory, **options)


def test_imagenet_train_and_eval(imagenet_dir):
    directory, train_labels, eval_labels = imagenet_dir
    ds = _imagenet(directory, seed=2)
    assert ds.info == DatasetInfo("imagenet", 1000, (32, 32, 3), 12, 5)
    low, high = (0 - 0.485) / 0.229, (1 - 0.406) / 0.225  # the normalised extremes

    epoch = batches(ds.train(4, epoch=0))
    assert len(epoch) == 3 and all(x.shape == (4, 32, 32, 3) for x, _ in epoch)
    x, y = collect(ds.train(4, epoch=0))
    np.testing.assert_array_equal(np.sort(y), np.sort(train_labels - 1))
    assert low - 1e-3 <= x.min() and x.max() <= high + 1e-3 and x.std() > 0.3

    images, labels = collect(ds.eval(2))
    assert images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(labels, eval_labels - 1)  # one shard: file order
    assert low - 1e-3 <= images.min() and images.max() <= high + 1e-3


def test_imagenet_epochs_are_deterministic_and_resumable(imagenet_dir):
    directory, _, _ = imagenet_dir
    first = batches(_imagenet(directory, seed=2).train(3, epoch=1))
    again = batches(_imagenet(directory, seed=2).train(3, epoch=1))
    assert_same_batches(first, again)
    assert_same_batches(batches(_imagenet(directory, seed=2).train(3, 1, skip_batches=2)),
                        first[2:])
    other = batches(_imagenet(directory, seed=2).train(3, epoch=2))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_imagenet_epoch_length_comes_from_train_examples(imagenet_dir):
    directory, _, _ = imagenet_dir
    ds = _imagenet(directory, train_examples=20)  # more than the 12 records: wraps around
    assert len(batches(ds.train(4, epoch=0))) == 5
    assert len(collect(_imagenet(directory, eval_examples=3).eval(2))[1]) == 3


def test_imagenet_eval_sizes():
    from localrules.data.imagenet import resize_size

    assert resize_size(224) == 256 and resize_size(299) == 342


def test_imagenet_default_size_and_v2_size(imagenet_dir):
    directory, _, _ = imagenet_dir
    assert _imagenet(directory, image_size=None).info.image_shape == (224, 224, 3)
    (x, _), = batches(_imagenet(directory, image_size=299).eval(5))
    assert x.shape == (5, 299, 299, 3)


def test_imagenet_missing_dir_and_shards(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere is not a directory"):
        load_dataset("imagenet", tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"no ImageNet shards matching train-\*-of-\* in "):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match=r"needs data_dir"):
        load_dataset("imagenet")


def test_imagenet_bad_shards_are_named(tmp_path, rng):
    write_shard(tmp_path / "train-00000-of-00002", rng, [1, 2])
    write_shard(tmp_path / "validation-00000-of-00001", rng, [3])
    (tmp_path / "train-00001-of-00002").write_bytes(b"this is not a TFRecord file at all" * 5)
    with pytest.raises(ValueError, match=r"train-00001-of-00002 is not a readable TFRecord"):
        load_dataset("imagenet", tmp_path)

    (tmp_path / "train-00001-of-00002").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train-00001-of-00002 is empty"):
        load_dataset("imagenet", tmp_path)

    with tf.io.TFRecordWriter(str(tmp_path / "train-00001-of-00002")) as writer:
        writer.write(b"a record, but not an Example")
    with pytest.raises(ValueError, match=r"record of ImageNet shard .*train-00001-of-00002 is not"):
        load_dataset("imagenet", tmp_path)

    write_shard(tmp_path / "train-00001-of-00002", rng, [0])  # 0-based label, offset 1
    with pytest.raises(ValueError, match=r"train-00001-of-00002: label 0 minus label_offset 1"):
        load_dataset("imagenet", tmp_path)
    ds = load_dataset("imagenet", tmp_path, label_offset=0, image_size=16, train_examples=3)
    assert sorted(collect(ds.train(3, 0))[1]) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# another process


_DIGESTS = """
import hashlib
from localrules.data import load_dataset

def digests(imagenet_dir):
    result = {}
    for name, data_dir, options in [
        ("digits", None, {}),
        ("synthetic", None, {"train_examples": 48}),
        ("imagenet", imagenet_dir, {"image_size": 32, "train_examples": 12, "shuffle_window": 5}),
    ]:
        ds = load_dataset(name, data_dir, seed=11, **options)
        digest = hashlib.sha256()
        for x, y in ds.train(6, epoch=3, skip_batches=1).as_numpy_iterator():
            digest.update(x.tobytes())
            digest.update(y.tobytes())
        result[name] = digest.hexdigest()
    return result
"""


def test_epochs_are_identical_in_another_process(imagenet_dir):
    directory = str(imagenet_dir[0])
    namespace: dict = {}
    exec(_DIGESTS, namespace)
    ours = namespace["digests"](directory)
    # The other process also sets a global seed, which must not matter.
    script = (_DIGESTS + "import json, sys\nimport tensorflow as tf\n"
              "tf.random.set_seed(12345)\nprint(json.dumps(digests(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", script, directory],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ours
    assert set(ours) == {"digits", "synthetic", "imagenet"}


# ---------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_shapes_and_determinism():
    ds = load_dataset("synthetic", seed=5, train_examples=40, eval_examples=10)
    assert ds.info == DatasetInfo("synthetic", 10, (32, 32, 3), 40, 10)
    epoch = batches(ds.train(8, epoch=0))
    assert len(epoch) == 5 and all(x.shape == (8, 32, 32, 3) for x, _ in epoch)
    again = load_dataset("synthetic", seed=5, train_examples=40, eval_examples=10)
    assert_same_batches(epoch, batches(again.train(8, epoch=0)))
    assert_same_batches(batches(ds.eval(4)), batches(again.eval(4)))
    assert_same_batches(batches(ds.train(8, 0, skip_batches=3)), epoch[3:])
    # Epoch 1 is a reordering of the same examples.
    x0, y0 = collect(ds.train(8, epoch=0))
    x1, y1 = collect(ds.train(8, epoch=1))
    assert not np.array_equal(y0, y1)
    np.testing.assert_allclose(np.sort(x0.ravel()), np.sort(x1.ravel()))
    other = load_dataset("synthetic", seed=6, train_examples=40)
    assert not np.array_equal(collect(other.eval(1000))[0][:10], collect(ds.eval(4))[0])


def test_synthetic_options():
    ds = load_dataset("synthetic", image_shape=(8, 6, 1), num_classes=3, train_examples=30)
    x, y = collect(ds.eval(1000))
    assert x.shape == (10_000, 8, 6, 1) and set(np.unique(y)) == {0, 1, 2}
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert load_dataset("synthetic", image_size=64).info.image_shape == (64, 64, 3)
    with pytest.raises(ValueError, match="image_shape must be"):
        load_dataset("synthetic", image_shape=(8, 8))
    with pytest.raises(ValueError, match="takes no data_dir"):
        load_dataset("synthetic", "/tmp")

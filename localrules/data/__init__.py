"""Datasets for trials: built-in ``digits``, CIFAR-10 files, ImageNet TFRecords, ``synthetic``.

Every dataset is loaded through :func:`load_dataset`, which checks the name, the options and the
files up front (a missing or malformed file is a ValueError naming it) and returns an
:class:`~localrules.data.base.ImageDataset`: ``info``, ``steps_per_epoch(batch)``,
``train(batch, epoch, skip_batches)`` and ``eval(batch)``, all ``tf.data`` pipelines.

Batch sizes are global. The trainer hands each dataset to
``strategy.experimental_distribute_dataset``, which splits every global batch across the replicas,
so nothing here is per replica. Data are read by one host; multi-host input sharding is not done.

Importing this package does not import TensorFlow; :func:`load_dataset` does.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from localrules.data.info import DatasetInfo
from localrules.validation import check_choice, check_int, check_keys

if TYPE_CHECKING:
    from localrules.data.base import ImageDataset

DATASETS: tuple[str, ...] = ("digits", "cifar10", "imagenet", "synthetic")
"""Dataset names; each has a module ``localrules.data.<name>`` with ``OPTIONS`` and ``load``."""

__all__ = ["DATASETS", "DatasetInfo", "ImageDataset", "load_dataset"]


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    image_size: int | None = None,
    seed: int = 0,
    **options: Any,
) -> ImageDataset:
    """Load dataset ``name`` and check everything it needs before any training starts.

    ``data_dir`` is required by ``cifar10`` and ``imagenet`` (a local path or, through
    ``tf.io.gfile``, a ``gs://`` URL) and refused by the built-in ones. ``image_size`` is the side
    of the square images the model sees (ImageNet: 224 by default, 299 for v2 models; synthetic:
    any; digits: 8, or larger by bilinear upsampling; CIFAR-10: only its native 32). ``seed``
    fixes the shuffling and the augmentation of every epoch. ``options`` are per dataset (see
    each module's ``OPTIONS``), e.g. ``train_examples`` for ImageNet.
    """
    check_choice("dataset", name, DATASETS)
    check_int("seed", seed, minimum=0)
    if image_size is not None:
        check_int("image_size", image_size, minimum=1)
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"data_dir must be a path, got {data_dir!r}")
        data_dir = os.fspath(data_dir)
    module = importlib.import_module(f"localrules.data.{name}")
    if options and not module.OPTIONS:
        raise ValueError(f"dataset {name!r} takes no options, got {', '.join(sorted(options))}")
    check_keys(f"{name} option", options, module.OPTIONS)
    return module.load(data_dir, image_size=image_size, seed=seed, **options)


def __getattr__(attr: str) -> Any:
    if attr == "ImageDataset":
        from localrules.data.base import ImageDataset

        return ImageDataset
    raise AttributeError(f"module 'localrules.data' has no attribute {attr!r}")

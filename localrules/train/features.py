"""Layer activations of a trained run for images from outside its dataset (neural fitting).

A run directory written by ``localrules train`` holds ``config.json`` and ``checkpoints/``. The
network is rebuilt from the config exactly as the trainer builds it (same name, classes, input
shape, rule, width and seed), and only its weights are restored from the latest checkpoint: the
optimizers, step counters and noise states in the checkpoint are not needed to compute features.
The restore is verified twice — every variable of the model must have a value in the checkpoint
(``assert_existing_objects_matched``), and the weights must actually differ from the freshly
built ones — so a checkpoint of another network, or a restore that silently matched nothing,
is an error rather than features of an untrained model.

Stimuli are preprocessed the way the dataset's evaluation pipeline treats its own images, through
the dataset's ``normalise_unit``: pixels are taken to [0, 1] (uint8 / 255, floats as they are),
resized to the model's input size (bilinear, antialiased, the whole image — no crop, since a
stimulus's objects may sit near its edges; non-square stimuli are stretched), grayscale repeated to
the model's channels (RGB turned to luma by ``tf.image.rgb_to_grayscale`` for a one-channel model),
then normalised. The dataset is loaded for this because its normalisation can depend on its
training data (CIFAR-10's per-channel statistics); for ``digits`` that is the in-memory
scikit-learn set, for CIFAR-10 and ImageNet the files must be reachable (``data_dir`` overrides
the config's).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from localrules.data.stimuli import channels, check_channels
from localrules.runs import CHECKPOINTS, CONFIG, RunDirectory

log = logging.getLogger(__name__)

POOL_LAYER = "pool"
"""The global average pool: the penultimate features every ResNet here ends with."""


def resolve_run(path: str) -> tuple[str, str]:
    """(run directory, latest checkpoint prefix) for a run directory or its ``checkpoints/``.

    Every way this can fail is a ValueError naming the path that was looked at.
    """
    path = str(path).rstrip("/") or "/"
    if not tf.io.gfile.exists(path):
        raise ValueError(f"checkpoint path {path} does not exist; give a run directory written "
                         f"by `localrules train` or its {CHECKPOINTS}/ subdirectory")
    run = RunDirectory(path)
    head, _, tail = path.rpartition("/")
    if tail == CHECKPOINTS and head and tf.io.gfile.exists(RunDirectory(head).config):
        run = RunDirectory(head)
    if not tf.io.gfile.exists(run.config):
        raise ValueError(f"{run} holds no {CONFIG}; give a run directory written by "
                         f"`localrules train` or its {CHECKPOINTS}/ subdirectory")
    if not tf.io.gfile.isdir(run.checkpoints):
        raise ValueError(f"{run.checkpoints} does not exist: the run has no checkpoint yet (one "
                         "is written after every epoch)")
    latest = tf.train.latest_checkpoint(run.checkpoints)
    if latest is None:
        raise ValueError(f"no checkpoint in {run.checkpoints} (expected a `checkpoint` index "
                         "file and ckpt-N files written by `localrules train`)")
    return run.path, latest


class TrainedRun:
    """The network of one run, rebuilt from its config; ``restore`` loads the trained weights.

    Building and restoring are separate so that a caller can check layer names and stimuli
    against the built model before reading the checkpoint or computing anything.
    """

    def __init__(self, path: str, *, data_dir: str | None = None) -> None:
        from localrules.data import DATASETS, load_dataset
        from localrules.models import MODELS, build
        from localrules.validation import check_choice

        self.run_dir, self.checkpoint = resolve_run(path)
        run = RunDirectory(self.run_dir)
        config = run.read_config()
        if config is None:  # resolve_run saw the file; it vanished since
            raise ValueError(f"{run.config} disappeared")
        if data_dir is not None:
            config = dataclasses.replace(config, data_dir=data_dir)
        check_choice("model", config.model, MODELS)
        check_choice("dataset", config.dataset, DATASETS)
        self.config = config
        self.dataset = load_dataset(config.dataset, config.data_dir,
                                    image_size=config.image_size, seed=config.seed,
                                    **config.dataset_options)
        info = self.dataset.info
        self.image_shape = info.image_shape
        self.model = build(config.model, info.num_classes, info.image_shape, config.rule,
                           width=config.width, weight_decay=config.run.weight_decay,
                           seed=config.seed)
        self.restored = False

    # --- layers -----------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Every layer whose output can be extracted, in forward order (the input excluded)."""
        return [layer.name for layer in self.model.layers
                if not isinstance(layer, keras.layers.InputLayer)]

    def default_layers(self) -> list[str]:
        """The output of each residual group (its last layer) and the global pool.

        Found from the model, not from naming rules: the last layer named ``group{g}_…`` in
        forward order is the group's output (v1: the block's final ReLU; v2: its residual sum).
        """
        names = self.layer_names
        chosen = []
        for g in range(1, 5):
            members = [n for n in names if n.startswith(f"group{g}_")]
            if members:
                chosen.append(members[-1])
        if POOL_LAYER in names:
            chosen.append(POOL_LAYER)
        return chosen

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        """``layers`` if all exist (duplicates refused), else a ValueError listing valid names."""
        names = self.layer_names
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown layer {', '.join(map(repr, unknown))} in "
                             f"{self.config.model}; valid (in forward order): {', '.join(names)}")
        seen = {n for n in layers if list(layers).count(n) > 1}
        if seen:
            raise ValueError(f"layer {', '.join(sorted(seen))} given more than once")
        return list(layers)

    def check_stimuli(self, images: np.ndarray) -> None:
        """ValueError unless ``images``' channels suit this model. Their shape, type and values
        are ``data.stimuli.check_stimuli``'s to check, once (a scan of every pixel)."""
        check_channels(channels(images), self.image_shape[2])

    # --- weights ----------------------------------------------------------------------------
    def restore(self) -> None:
        """Load the latest checkpoint's model weights and verify that they were loaded."""
        before = [v.numpy().copy() for v in self.model.weights]
        try:
            status = tf.train.Checkpoint(model=self.model).restore(self.checkpoint)
            status.expect_partial()  # the optimizers, counters and noise states are not needed
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            first = (str(err).splitlines() or [type(err).__name__])[0][:300]
            config = RunDirectory(self.run_dir).config
            raise ValueError(f"checkpoint {self.checkpoint} does not hold the weights of the "
                             f"model described by {config}: {first}") from None
        changed = sum(not np.array_equal(b, v.numpy())
                      for b, v in zip(before, self.model.weights, strict=True))
        if changed == 0:
            raise ValueError(f"restoring {self.checkpoint} left every weight at its "
                             "initial value; the checkpoint holds no trained weights for this "
                             "model")
        log.info("restored %s: %d of %d weight tensors differ from a fresh build",
                 self.checkpoint, changed, len(before))
        self.restored = True

    # --- features ---------------------------------------------------------------------------
    def preprocess(self, images: np.ndarray) -> tf.Tensor:
        """A batch of checked stimuli as the model's input (see the module docstring)."""
        x = tf.convert_to_tensor(np.asarray(images))
        x = tf.cast(x, tf.float32) / 255.0 if x.dtype == tf.uint8 else tf.cast(x, tf.float32)
        if x.shape.rank == 3:
            x = x[..., None]
        height, width, want = self.image_shape
        have = x.shape[-1]
        if have != want:
            x = tf.image.rgb_to_grayscale(x) if want == 1 else tf.repeat(x, want, axis=-1)
        if tuple(x.shape[1:3]) != (height, width):
            x = tf.image.resize(x, (height, width), method="bilinear", antialias=True)
        return self.dataset.normalise_unit(x)

    def extract(
        self,
        images: np.ndarray,
        layers: Sequence[str],
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """{layer: (N, features) float32}: each layer's output flattened, in inference mode.

        One forward pass per batch computes all layers. Memory: N × features × 4 bytes per layer
        (an early ImageNet layer is large; ask for the layers you need).
        """
        from tqdm.auto import tqdm

        if not self.restored:
            raise RuntimeError("restore() the trained weights before extracting features")
        layers = self.check_layers(layers)
        self.check_stimuli(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sub = keras.Model(self.model.inputs, [self.model.get_layer(n).output for n in layers])
        forward = tf.function(lambda x: sub(x, training=False), reduce_retracing=True)
        n = len(images)
        out: dict[str, np.ndarray] = {}
        with tqdm(total=n, desc="features", unit="image", disable=not progress,
                  leave=False) as bar:
            for start in range(0, n, batch_size):
                batch = self.preprocess(images[start:start + batch_size])
                values = forward(batch)
                if not isinstance(values, (list, tuple)):
                    values = [values]
                for name, value in zip(layers, values, strict=True):
                    flat = np.asarray(value, np.float32).reshape(value.shape[0], -1)
                    if name not in out:
                        out[name] = np.empty((n, flat.shape[1]), np.float32)
                        log.debug("layer %s: %d features (%.1f MB for %d images)", name,
                                  flat.shape[1], n * flat.shape[1] * 4 / 2**20, n)
                    out[name][start:start + len(flat)] = flat
                bar.update(batch.shape[0])
        return out

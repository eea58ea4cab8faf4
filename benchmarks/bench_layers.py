"""Cost of asymmetric layers against native Keras layers in one training step.

Builds a ResNet-18-sized plain conv stack (the small-image stem, then four groups of four 3×3
convs at widths w, 2w, 4w, 8w; strides 2 at the start of groups 2–4) three times: with
``keras.layers.Conv2D``/``Dense``, with ``AsymmetricConv2D``/``AsymmetricDense`` under ``rule="bp"``
and under ``rule="fa"``. Each variant runs the same training step (forward, backward, SGD with
Nesterov momentum) on the same synthetic batch. The variants are timed in blocks of ``--steps``
steps, interleaved round by round in one process (the order rotating each round), so a noisy,
shared machine slows the blocks of a round alike. Each block records wall seconds and the
process's CPU seconds (``time.process_time``: every thread, TensorFlow's pools included, and none
of the time neighbours take); each variant is compared with native's block of the same round.

Reported: the medians of wall seconds per step and their ratios (as recorded since issue 2); per
variant, the spread (min, quartiles, median, max) of the per-round CPU-time and wall-time ratios
and the ratio of the fastest blocks; per variant, wall and CPU seconds per step.

Feedback alignment does the same FLOPs as backprop (a transposed convolution with B instead of W),
so the goal is ``fa_over_native <= 1.05``.

Prints exactly one JSON line on stdout; progress goes to stderr through logging. Results are
recorded in ``docs/benchmarks.md``.

Run: ``python benchmarks/bench_layers.py`` (smoke: ``--width 8 --repeats 2``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

# A sibling module: the script's folder is first on sys.path when it runs as a script.
from timing import Sample, mark, ratio_report, rotated, seconds_report, sig4, since

log = logging.getLogger("bench_layers")

KINDS: tuple[str, ...] = ("native", "bp", "fa")
NUM_CLASSES = 10
CONVS_PER_GROUP = 4
SEED = 0


def make_stack(layer_kind: str, width: int = 64, image_size: int = 32) -> Any:
    """A Keras model: conv → BN → ReLU ×17 (ResNet-18's conv shapes), global pool, dense.

    ``layer_kind`` is ``"native"`` (Keras layers) or a rule name (``"bp"``, ``"fa"``) for the
    asymmetric layers. Every other argument is identical across kinds so that only the layer
    implementation differs. Shortcut projections are left out: the stack is sequential on purpose,
    since the comparison is between layer implementations, not architectures.
    """
    import keras

    if layer_kind not in KINDS:
        raise ValueError(f"layer_kind must be one of {KINDS}, got {layer_kind!r}")

    if layer_kind == "native":
        def conv(filters: int, strides: int, name: str) -> Any:
            return keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                                       use_bias=False, name=name)

        def dense(units: int, name: str) -> Any:
            return keras.layers.Dense(units, name=name)
    else:
        from localrules.rules import AsymmetricConv2D, AsymmetricDense

        def conv(filters: int, strides: int, name: str) -> Any:
            return AsymmetricConv2D(filters, 3, strides=strides, padding="same",
                                    use_bias=False, rule=layer_kind, output_relu=True,
                                    name=name)

        def dense(units: int, name: str) -> Any:
            return AsymmetricDense(units, rule=layer_kind, name=name)

    inputs = keras.Input((image_size, image_size, 3))
    x = inputs

    def block(x: Any, filters: int, strides: int, name: str) -> Any:
        x = conv(filters, strides, name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    x = block(x, width, 1, "stem")
    for g, mult in enumerate((1, 2, 4, 8)):
        for i in range(CONVS_PER_GROUP):
            strides = 2 if (g > 0 and i == 0) else 1
            x = block(x, width * mult, strides, f"g{g + 1}_c{i + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = dense(NUM_CLASSES, "logits")(x)
    return keras.Model(inputs, outputs, name=f"stack_{layer_kind}")


def make_train_step(model: Any) -> Callable[[Any, Any], Any]:
    """A compiled (graph, no XLA) step: forward, loss, gradients, SGD-Nesterov update."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=False)
    def step(images: Any, labels: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def time_steps(step: Callable[[Any, Any], Any], images: Any, labels: Any, steps: int) -> Sample:
    """Wall and CPU seconds per step over ``steps`` steps, synchronised by reading the last
    loss."""
    start = mark()
    loss = None
    for _ in range(steps):
        loss = step(images, labels)
    loss.numpy()  # type: ignore[union-attr]
    block = since(start)
    return Sample(block.wall / steps, block.cpu / steps)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64, help="first group's width (ResNet-18: 64)")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    p.add_argument("--image-size", type=int, default=32, help="square input side")
    p.add_argument("--repeats", type=int, default=9,
                   help="rounds: timed blocks per variant, interleaved")
    p.add_argument("--steps", type=int, default=1, help="training steps per timed block")
    args = p.parse_args(argv)
    for name in ("width", "batch", "image_size", "repeats", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Set here, not at import, so importing this module has no side effects on the environment.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    gen = tf.random.Generator.from_seed(SEED)
    images = gen.normal((args.batch, args.image_size, args.image_size, 3))
    labels = gen.uniform((args.batch,), 0, NUM_CLASSES, dtype=tf.int32)

    steps: dict[str, Callable[[Any, Any], Any]] = {}
    for kind in KINDS:
        model = make_stack(kind, args.width, args.image_size)
        step = make_train_step(model)
        t0 = time.perf_counter()
        step(images, labels).numpy()  # trace
        for _ in range(2):
            step(images, labels).numpy()
        trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
        log.info("%s: %d trainable parameters, trace + 2 warm-up steps %.2f s", kind, trainable,
                 time.perf_counter() - t0)
        steps[kind] = step

    rounds: list[dict[str, Sample]] = []
    for r in range(args.repeats):
        # Rotate the order too, so no variant always runs right after the same one.
        blocks = {kind: time_steps(steps[kind], images, labels, args.steps)
                  for kind in rotated(KINDS, r)}
        rounds.append({kind: blocks[kind] for kind in KINDS})
        log.info("round %d/%d: %s", r + 1, args.repeats,
                 ", ".join(f"{k} {blocks[k].wall:.4f} s ({blocks[k].cpu:.4f} cpu)"
                           for k in KINDS))

    med = {kind: statistics.median(r[kind].wall for r in rounds) for kind in KINDS}
    ratios = ratio_report(rounds, "native")
    for kind, rep in ratios.items():
        log.info("%s/native: cpu %s [%s, %s], wall %s [%s, %s], fastest %s", kind,
                 rep["cpu"]["median"], rep["cpu"]["min"], rep["cpu"]["max"],
                 rep["wall"]["median"], rep["wall"]["min"], rep["wall"]["max"], rep["wall_min"])
    result = {
        "native_s": sig4(med["native"]),
        "bp_s": sig4(med["bp"]),
        "fa_s": sig4(med["fa"]),
        "fa_over_native": sig4(med["fa"] / med["native"]),
        "bp_over_native": sig4(med["bp"] / med["native"]),
        "cpu_ratio": {kind: rep["cpu"] for kind, rep in ratios.items()},
        "wall_ratio": {kind: rep["wall"] for kind, rep in ratios.items()},
        "wall_min_ratio": {kind: rep["wall_min"] for kind, rep in ratios.items()},
        "seconds": {kind: seconds_report(rounds, kind) for kind in KINDS},
        "repeats": args.repeats,
        "steps": args.steps,
        "width": args.width,
        "batch": args.batch,
        "image_size": args.image_size,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

"""Wall time per task epoch of ResNet-18 under each learning rule, relative to native Keras.

A task epoch is one pass of J updates over the data; under alternation (ia-tpe) it also holds as
many R steps as J steps. Every variant runs through the real Trainer (compiled steps, schedules,
the Python loop) on the same synthetic 32×32 data with the small-image stem and batch 64. Each run
trains one untimed epoch (it pays for tracing) and then ``--timed-epochs`` timed ones (evaluation
excluded). Variants run round-robin over repeats, each in a fresh Keras session, and each
variant's fastest timed epoch is divided by native backprop's fastest from the same process: on
these shared machines the same step swings by up to 1.5× from minute to minute, and interference
only ever adds time, so the minimum is the stable estimate of the cost (as ``timeit`` reports).

The reference implementation computes both losses on every step, so ia-tpe costs about 5× native
there; here an R step with input noise runs no forward pass at all. Goals: fa ≤ 1.05, sa ≤ 1.3,
aa ≤ 1.8, ia-tpe ≤ 2.7.

Prints one JSON line: {"bp": …, "fa": …, "sa": …, "aa": …, "ia-tpe": …, "native_s_per_epoch": …}.
Run: ``python benchmarks/bench_train.py`` (smoke: ``--width 8 --steps 2 --repeats 1``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
from typing import Any

log = logging.getLogger("bench_train")

VARIANTS: tuple[str, ...] = ("native", "bp", "fa", "sa", "aa", "ia-tpe")


def epoch_seconds(
    variant: str, width: int, steps: int, batch: int, seed: int, timed_epochs: int
) -> list[float]:
    """Seconds of each task epoch after the first of a fresh run."""
    import gc

    import keras

    from localrules.config import config_from_preset
    from localrules.data import load_dataset
    from localrules.train.trainer import Trainer

    preset = "bp" if variant == "native" else variant
    config = config_from_preset(preset, overrides=[
        "dataset=\"synthetic\"", f"width={width}", f"run.epochs={1 + timed_epochs}",
        f"run.batch_size={batch}", "run.warmup_epochs=0", f"seed={seed}",
    ])
    data = load_dataset("synthetic", image_shape=(32, 32, 3), num_classes=10,
                        train_examples=steps * batch, eval_examples=batch, seed=seed)
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, dataset=data, native=variant == "native")
        trainer.fit(on_epoch=lambda record: seconds.append(record["seconds"]))
    del trainer
    keras.backend.clear_session()
    gc.collect()
    return seconds[1:]


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=8, help="J steps per task epoch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timed-epochs", type=int, default=2, help="timed epochs per run")
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    variants = args.variants.split(",")
    if variants[0] != "native":
        variants.insert(0, "native")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in variants:
            t = epoch_seconds(v, args.width, args.steps, args.batch, r, args.timed_epochs)
            times[v].extend(t)
            log.info("repeat %d/%d %-7s %s s per task epoch", r + 1, args.repeats, v,
                     ", ".join(f"{x:.3f}" for x in t))
    for v in variants:
        log.info("%-7s fastest %.3f s, median %.3f s per task epoch", v, min(times[v]),
                 statistics.median(times[v]))
    native = min(times["native"])
    out: dict[str, Any] = {v: _round(min(times[v]) / native) for v in variants if v != "native"}
    out.update(native_s_per_epoch=_round(native), steps_per_epoch=args.steps, batch=args.batch,
               width=args.width, repeats=args.repeats, timed_epochs=args.timed_epochs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

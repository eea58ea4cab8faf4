"""Cost per task epoch of ResNet-18 under each learning rule, relative to native Keras backprop.

A task epoch is one pass of J updates over the data; under alternation (ia-tpe) it also holds as
many R steps as J steps. Every variant runs through the real Trainer (compiled steps, schedules,
the Python loop) on the same synthetic 32×32 data with the small-image stem and batch 64.

The host is shared and noisy: the same epoch swings by 2× between runs minutes apart. So within a
repeat every variant trains at once, in its own thread, and a baton lets exactly one of them run
at a time, one task epoch per turn: round 0 builds each run and trains its untimed first epoch
(tracing), then every round times one epoch of every variant, back to back, in a rotating order.
A neighbour's load therefore falls on all the variants of a round alike, and each variant's
epoch is compared with native's epoch of the same round. Two clocks are kept per epoch:

- wall seconds (the Trainer's own, steps only): the fastest epoch over native's fastest is the
  statistic earlier rows of docs/benchmarks.md report; interference only adds wall time;
- process CPU seconds (``time.process_time``, every thread, so TensorFlow's pools are counted)
  over the same steps: time stolen by neighbours is not in it. Only one run works at a time, so
  the process's CPU time in a turn is that run's. Reported as the median of the per-round ratios
  with their min, quartiles and max.

The steps are bracketed through the Trainer's public hooks: ``should_stop`` is asked before an
epoch's first step (the start mark), ``may_write`` before the epoch's history write (the end
mark), ``on_epoch`` after it (the hand-over). No epoch is validated (``eval_every`` is past the
run's end and the run is stopped before its last configured epoch), so the window is the steps.

The reference implementation computes both losses on every step, so ia-tpe costs about 5× native
there; here an R step with input noise runs no forward pass at all. Goals: fa ≤ 1.05, sa ≤ 1.3,
aa ≤ 1.8, ia-tpe ≤ 2.7.

Prints one JSON line: {"bp": …, "fa": …, "sa": …, "aa": …, "ia-tpe": … (wall minima ratios),
"native_s_per_epoch": …, "cpu_ratio": {variant: {"min", "q1", "median", "q3", "max"}},
"wall_ratio": {…}, "seconds": {variant: {…}}, …}.
Run: ``python benchmarks/bench_train.py`` (smoke: ``--width 8 --steps 2 --repeats 1``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# A sibling module: the script's folder is first on sys.path when it runs as a script.
from timing import Sample, mark, ratio_report, rotated, seconds_report, since

log = logging.getLogger("bench_train")

VARIANTS: tuple[str, ...] = ("native", "bp", "fa", "sa", "aa", "ia-tpe")
MAIN = "main"
"""The baton's holder between turns: the thread that schedules them."""


class Baton:
    """Exactly one holder at a time; a thread waits until the baton is handed to its name.

    Turns are explicit hand-overs (never a timer), so the order of work is the scheduler's alone.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder = MAIN

    def give(self, name: str) -> None:
        with self._cond:
            self._holder = name
            self._cond.notify_all()

    def wait_for(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._holder == name)


@dataclass
class Turns:
    """One variant's side of the turn-taking: what its thread calls around its work."""

    name: str
    baton: Baton
    finished: bool = False
    error: BaseException | None = None

    def end_turn(self) -> None:
        """Hand the baton back to the scheduler and wait for the next turn."""
        self.baton.give(MAIN)
        self.baton.wait_for(self.name)


def run_interleaved(jobs: dict[str, Callable[[Turns], None]], rounds: int) -> None:
    """Run each job in its own thread, one at a time, ``rounds`` turns each, rotating the order.

    A job calls ``turns.end_turn()`` after each of its first ``rounds - 1`` turns' work and
    returns after its last. A job that fails or returns early raises here once the others are
    stopped from waiting (their threads are daemons and hold no lock).
    """
    baton = Baton()
    turns = {name: Turns(name, baton) for name in jobs}

    def body(name: str) -> None:
        t = turns[name]
        baton.wait_for(name)
        try:
            jobs[name](t)
        except BaseException as exc:  # reported by the scheduler, in the main thread
            t.error = exc
        finally:
            t.finished = True
            baton.give(MAIN)

    threads = [threading.Thread(target=body, args=(n,), name=f"bench-{n}", daemon=True)
               for n in jobs]
    for th in threads:
        th.start()
    for r in range(rounds):
        for name in rotated(list(jobs), r):
            t = turns[name]
            if t.finished:
                raise RuntimeError(f"{name} stopped after {r} of {rounds} turns") from t.error
            baton.give(name)
            baton.wait_for(MAIN)
            if t.error is not None:
                raise RuntimeError(f"{name} failed in turn {r + 1}") from t.error
            if t.finished != (r == rounds - 1):
                raise RuntimeError(f"{name} finished after {r + 1} of {rounds} turns")
    for th in threads:
        th.join()


@dataclass
class EpochClock:
    """Brackets each task epoch's steps through the Trainer's hooks and takes turns between
    epochs; stops the run after ``timed`` epochs beyond the untimed first one."""

    turns: Turns
    timed: int
    epochs: list[tuple[Sample, float]] = field(default_factory=list)
    """Per epoch after the first: (this clock's wall and CPU, the Trainer's own seconds)."""
    _done: int = field(default=0, init=False)
    _start: Sample | None = field(default=None, init=False)
    _window: Sample | None = field(default=None, init=False)

    def should_stop(self) -> bool:
        if self._start is None:  # between epochs: this is the next epoch's first step
            if self._done == 1 + self.timed:
                return True
            self._start = mark()
        return False

    def may_write(self) -> bool:
        if self._start is not None and self._window is None:  # the steps are over
            self._window = since(self._start)
        return True

    def on_epoch(self, record: dict[str, Any]) -> None:
        if self._start is None:
            raise RuntimeError("on_epoch before any step: the Trainer's hooks changed order")
        window = self._window if self._window is not None else since(self._start)
        if self._done > 0:
            self.epochs.append((window, float(record["seconds"])))
        self._done += 1
        self._start = self._window = None
        if record.get("diverged"):
            raise RuntimeError(f"{self.turns.name} diverged in epoch {self._done}")
        if self._done < 1 + self.timed:
            self.turns.end_turn()


def train_job(variant: str, width: int, steps: int, batch: int, seed: int, timed: int,
              out_dir: str, clocks: dict[str, EpochClock]) -> Callable[[Turns], None]:
    """The work of one variant's thread: build its Trainer, then train epoch by epoch."""

    def job(turns: Turns) -> None:
        from localrules.config import config_from_preset
        from localrules.data import load_dataset
        from localrules.train.trainer import Trainer

        total = 1 + timed + 1  # never reached: the last is the one that would validate
        preset = "bp" if variant == "native" else variant
        config = config_from_preset(preset, overrides=[
            "dataset=\"synthetic\"", f"width={width}", f"run.epochs={total}",
            f"run.batch_size={batch}", "run.warmup_epochs=0", f"seed={seed}",
            f"eval_every={total + 1}",
        ])
        data = load_dataset("synthetic", image_shape=(32, 32, 3), num_classes=10,
                            train_examples=steps * batch, eval_examples=batch, seed=seed)
        clock = clocks[variant] = EpochClock(turns, timed)
        trainer = Trainer(config, f"{out_dir}/{variant}", dataset=data,
                          native=variant == "native")
        trainer.fit(clock.on_epoch, should_stop=clock.should_stop, may_write=clock.may_write)
        if len(clock.epochs) != timed:
            raise RuntimeError(f"{variant}: {len(clock.epochs)} timed epochs, expected {timed}")

    return job


def run_repeat(variants: Sequence[str], args: argparse.Namespace,
               seed: int) -> list[dict[str, Sample]]:
    """One repeat: fresh runs of every variant, interleaved; its timed rounds."""
    import gc

    import keras

    clocks: dict[str, EpochClock] = {}
    with tempfile.TemporaryDirectory() as out:
        jobs = {v: train_job(v, args.width, args.steps, args.batch, seed, args.timed_epochs,
                             out, clocks) for v in variants}
        run_interleaved(jobs, 1 + args.timed_epochs)
    rounds = []
    for i in range(args.timed_epochs):
        rounds.append({v: clocks[v].epochs[i][0] for v in variants})
        for v in variants:
            window, seconds = clocks[v].epochs[i]
            if abs(window.wall - seconds) > 0.05 + 0.02 * seconds:
                log.warning("%s: the hooks bracket %.3f s, the Trainer timed %.3f s: the CPU "
                            "window is not the steps alone", v, window.wall, seconds)
    clocks.clear()
    keras.backend.clear_session()
    gc.collect()
    return rounds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=8, help="J steps per task epoch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="fresh runs of every variant")
    p.add_argument("--timed-epochs", type=int, default=2,
                   help="timed epochs per run, each one round of interleaved turns")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated, of {','.join(VARIANTS)}; native is always measured")
    args = p.parse_args(argv)
    for name in ("width", "steps", "batch", "repeats", "timed_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; valid: {', '.join(VARIANTS)}")
    args.variant_list = ["native", *dict.fromkeys(v for v in variants if v != "native")]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    variants: list[str] = args.variant_list
    rounds: list[dict[str, Sample]] = []
    for r in range(args.repeats):
        # Rotate the start too, so a variant's turn position changes between repeats.
        new = run_repeat(rotated(variants, r), args, seed=r)
        for i, blocks in enumerate(new):
            log.info("repeat %d/%d round %d: %s", r + 1, args.repeats, i + 1,
                     ", ".join(f"{v} {blocks[v].wall:.2f} s ({blocks[v].cpu:.2f} cpu)"
                               for v in variants))
        rounds.extend({v: blocks[v] for v in variants} for blocks in new)
    ratios = ratio_report(rounds, "native")
    seconds = {v: seconds_report(rounds, v) for v in variants}
    for v in variants:
        extra = "" if v == "native" else (
            f"; ratio cpu {ratios[v]['cpu']['median']} [{ratios[v]['cpu']['min']}, "
            f"{ratios[v]['cpu']['max']}], wall {ratios[v]['wall']['median']} "
            f"[{ratios[v]['wall']['min']}, {ratios[v]['wall']['max']}]")
        log.info("%-7s fastest %.3f s, median %.3f s, cpu median %.3f s per task epoch%s", v,
                 seconds[v]["wall_min"], seconds[v]["wall_median"], seconds[v]["cpu_median"],
                 extra)
    out: dict[str, Any] = {v: ratios[v]["wall_min"] for v in variants if v != "native"}
    out.update(
        native_s_per_epoch=seconds["native"]["wall_min"],
        cpu_ratio={v: r["cpu"] for v, r in ratios.items()},
        wall_ratio={v: r["wall"] for v, r in ratios.items()},
        seconds=seconds,
        steps_per_epoch=args.steps, batch=args.batch, width=args.width, repeats=args.repeats,
        timed_epochs=args.timed_epochs, rounds=len(rounds),
    )
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

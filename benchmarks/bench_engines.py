"""The Ray engine's overhead: the same small search run end to end by the store-queue engine
(controller + 2 local worker processes) and by Ray Tune (a local Ray instance, 2 trials at a
time, 1 CPU each), alternating, each in a fresh process through the search API the CLI uses
(``SearchSession`` on a ``StoreEngine`` or a ``RayEngine``).

Both engines train the same kind of trials with the same trainer, so the difference is what
each adds around them: process and Ray start-up, a TensorFlow import per Ray trial (each runs
in a fresh actor, where a store worker imports TensorFlow once for all its trials), checkpoint
copies into Ray's storage, and the database writes. Goal: the Ray engine within 1.5× the store
engine's wall time on this small search (the gap shrinks as trials get longer). Also reported:
the median seconds per trial each engine records (a worker's from its start of training; Ray's
``time_total_s``, which includes the trial's TensorFlow import).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

log = logging.getLogger("bench_engines")


def search(engine_name: str, tmp: str, tag: str, trials: int, epochs: int, width: int) -> None:
    """One search through the API (in this process): 2 trials at a time, no references (the
    engines are compared on search trials alone)."""
    from localrules.search import SearchSession
    from localrules.spaces import default_budget, load_space

    space = load_space("wm", default_budget("digits", epochs=epochs, width=width))
    artifacts = f"{tmp}/{tag}-artifacts"
    if engine_name == "store":
        from localrules.worker.engine import StoreEngine

        engine = StoreEngine(artifacts, workers=2, poll_seconds=0.5)
    else:
        from localrules.raytune.engine import RayEngine

        engine = RayEngine.resolve(artifacts)
    settings = {"max_trials": trials, "concurrency": 2, "references": []}
    with engine, SearchSession.open(f"sqlite:///{tmp}/{tag}.db", tag, space, settings,
                                    engine) as session:
        outcome = session.run(engine)
    if not outcome.finished:
        raise SystemExit(f"{engine_name} search stopped: {outcome.stopped}")


def run_search(engine: str, tmp: str, tag: str, trials: int, epochs: int, width: int) -> dict:
    """Wall seconds of one search in a fresh process, and its trials' median training
    seconds."""
    from localrules.store import open_store

    cmd = [sys.executable, __file__, "--one", engine, "--tmp", tmp, "--tag", tag,
           "--trials", str(trials), "--epochs", str(epochs), "--width", str(width)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} search failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with open_store(f"sqlite:///{tmp}/{tag}.db", create=False) as store:
        results = [t.result for t in store.trials(tag)]
    if len(results) != trials or any(r is None for r in results):
        raise SystemExit(f"{engine}: expected {trials} finished trials")
    return {"wall_s": wall, "trial_s": statistics.median(r["seconds"] for r in results)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="runs per engine, alternating")
    p.add_argument("--one", choices=("store", "ray"), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--tag", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.one:  # one timed search, in the process run_search started
        search(args.one, args.tmp, args.tag, args.trials, args.epochs, args.width)
        return

    runs: dict[str, list[dict]] = {"store": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for engine in ("store", "ray"):
                out = run_search(engine, tmp, f"{engine}{i}", args.trials, args.epochs,
                                 args.width)
                log.info("%s run %d: %.1f s wall, %.1f s per trial", engine, i, out["wall_s"],
                         out["trial_s"])
                runs[engine].append(out)
    result: dict[str, Any] = {}
    for engine, outs in runs.items():
        result[f"{engine}_wall_s"] = round(statistics.median(o["wall_s"] for o in outs), 2)
        result[f"{engine}_trial_s"] = round(statistics.median(o["trial_s"] for o in outs), 2)
    result["ray_over_store"] = round(result["ray_wall_s"] / result["store_wall_s"], 3)
    result.update(trials=args.trials, epochs=args.epochs, width=args.width,
                  repeats=args.repeats, concurrency=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Trial queries pushed down to the database against loading every trial and filtering in pandas.

A researcher asks a store with 100,000 trials of one ``ia``-like experiment (and a small second
one beside it) for (a) a selective filter (``params.noise == true and params.alternate and
result.top1 >= 0.97 and params.batch_size != 128``: a fraction of a percent of the trials) and
(b) the top 10 by objective. Each query runs through ``store.select`` (the WHERE clause or the
MongoDB query, sort and limit in the database) and, in the same run, the way it is done without
it: ``store.trials`` → ``store.frame.trials_frame`` → ``to_frame.filter_frame`` (or a pandas
sort and head); both must give the same trials, in the same order. Each figure is the median of
``--repeats`` runs.

Goal: the selective query over 100,000 trials takes ≤ 1 s on SQLite and is ≥ 10× faster than
load-then-filter. MongoDB runs on SecantusDB in this process (``--no-mongo`` leaves it out); it
inserts slowly, so ``--mongo-trials`` is lower by default: the output says the N each backend
used.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_query")

EXPERIMENT = "bench"
OTHER = "bench_other"
OTHER_TRIALS = 1000
CHUNK = 2000
SELECTIVE = ("params.noise == true and params.alternate and result.top1 >= 0.97 "
             "and params.batch_size != 128")
TOP = 10
GOAL_SECONDS = 1.0
GOAL_SPEEDUP = 10.0
OPS = ("op_sign", "op_mirror", "op_shuffle")


def make_trials(experiment: str, n: int, seed: int) -> list:
    """``n`` trials shaped like an ``ia`` search's: mostly done (objective = top-1), a few
    failed, running or queued, a few stopped early at a rung."""
    from localrules.store import DONE, FAILED, QUEUED, RUNNING, Trial

    rng = random.Random(seed)
    start = 1.7e9
    out = []
    for i in range(n):
        roll = rng.random()
        state = DONE if roll < 0.94 else FAILED if roll < 0.97 else RUNNING if roll < 0.985 \
            else QUEUED
        params: dict[str, Any] = {"noise": rng.random() < 0.5}
        if params["noise"]:
            params["sigma"] = 10 ** rng.uniform(-4, 0)
        params["batch_size"] = rng.choice([16, 32, 64, 128])
        params["alternate"] = rng.random() < 0.5
        params.update({op: rng.random() < 0.5 for op in OPS})
        params["decay"] = rng.uniform(0.0, 0.1)
        result = None
        if state == DONE:
            top1 = 0.99 * rng.betavariate(9, 2)
            result = {"objective": top1, "top1": top1, "diverged": top1 < 0.2, "epochs": 30}
            if rng.random() < 0.05:
                result.update(rung=0, stopped_early=True, trial_epochs=3)
        created = start + i
        out.append(Trial(
            experiment=experiment, trial_id=i, config={"space": "ia"}, params=params,
            misc={"idxs": {k: [i] for k in params}, "vals": {k: [v] for k, v in params.items()}},
            state=state, attempt=0 if state == QUEUED else 1, result=result,
            error="diverged: loss is nan" if state == FAILED else None,
            worker=None if state == QUEUED else f"w{i % 4}", created_at=created,
            started_at=None if state == QUEUED else created + 1,
            updated_at=created + 2,
            finished_at=created + 60 if state in (DONE, FAILED) else None))
    return out


def fill(store, experiment: str, n: int, seed: int) -> float:
    """The experiment with ``n`` trials, inserted in chunks; the trials inserted per second."""
    from localrules.store import Experiment

    store.create_experiment(Experiment(
        name=experiment, space_name="ia", space_source={"kind": "paper", "name": "ia"},
        fingerprint="sha256:" + "0" * 64, budget={"epochs": 30, "dataset": "digits"},
        settings={"seed": seed, "max_trials": n, "objective": "top1"}))
    trials = make_trials(experiment, n, seed)
    started = time.perf_counter()
    for first in range(0, n, CHUNK):
        store.add_trials(trials[first:first + CHUNK])
        if first and first % (10 * CHUNK) == 0:
            rate = first / (time.perf_counter() - started)
            log.info("%s: %d of %d trials (%.0f/s)", experiment, first, n, rate)
    return n / max(time.perf_counter() - started, 1e-9)


def loaded_frame(store, experiment: str):
    """Every trial of the experiment as a frame, and its references (the load-then-filter
    path: what a script does without the query pushed down)."""
    from localrules.store.frame import trials_frame
    from localrules.store.references import references_of, requested_references

    trials = store.trials(experiment)
    references = references_of(trials, requested_references(store.require_experiment(experiment)))
    return trials_frame(trials, references), references, trials


def load_then_filter(store, experiment: str, where: str) -> list[int]:
    """The trial ids the filter selects, by pandas over every trial loaded."""
    from localrules.store.query.fields import Catalog, bind, kind_of
    from localrules.store.query.to_frame import filter_frame

    frame, references, trials = loaded_frame(store, experiment)
    kinds: dict[str, set[str]] = {}
    for trial in trials:
        for prefix, doc in (("params", trial.params), ("result", trial.result or {})):
            for key, value in doc.items():
                kind = kind_of(value)
                if kind is not None:
                    kinds.setdefault(f"{prefix}.{key}", set()).add(kind)
    node = bind(where, Catalog({k: frozenset(v) for k, v in kinds.items()}))
    chosen = filter_frame(frame, node, {experiment: references})
    return [int(i) for i in chosen["trial_id"]]


def load_then_top(store, experiment: str, n: int) -> list[int]:
    """The ids of the best ``n`` trials by objective, by pandas over every trial loaded:
    full-budget results first, then rung results, then trials without one (the query's order),
    each best first, ties by trial id."""
    frame, _, _ = loaded_frame(store, experiment)
    objective = frame["result.objective"].astype("float64")
    group = (~frame["full_budget"].fillna(False).astype(bool)).astype(int)
    group = group.where(objective.notna(), 2)
    keyed = frame.assign(_group=group, _objective=objective)
    best = keyed.sort_values(["_group", "_objective", "trial_id"],
                             ascending=[True, False, True], na_position="last").head(n)
    return [int(i) for i in best["trial_id"]]


def pushed(store, experiment: str, **query: Any) -> list[int]:
    return [t.trial_id for t in store.select(experiment, **query).trials]


def timed(fn: Callable[[], list[int]], repeats: int) -> tuple[float, list[int]]:
    """The median wall seconds of ``repeats`` calls, and the last call's answer."""
    times, answer = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), answer


def compare(store, repeats: int) -> dict[str, Any]:
    """Both queries, pushed down and loaded-then-filtered, on one filled store."""
    cases = {
        "selective": (lambda: pushed(store, EXPERIMENT, where=SELECTIVE),
                      lambda: load_then_filter(store, EXPERIMENT, SELECTIVE)),
        "top10": (lambda: pushed(store, EXPERIMENT, sort="objective", limit=TOP),
                  lambda: load_then_top(store, EXPERIMENT, TOP)),
    }
    out = {}
    for name, (down, loaded) in cases.items():
        down_s, down_ids = timed(down, repeats)
        loaded_s, loaded_ids = timed(loaded, repeats)
        if down_ids != loaded_ids:
            raise SystemExit(f"{name}: the pushed-down query and load-then-filter disagree "
                             f"({len(down_ids)} against {len(loaded_ids)} trials)")
        out[name] = {"pushed_down_s": round(down_s, 4), "load_then_filter_s": round(loaded_s, 4),
                     "speedup": round(loaded_s / max(down_s, 1e-9), 1), "rows": len(down_ids)}
        log.info("%s: %s", name, out[name])
    return out


def run_backend(store, trials: int, repeats: int) -> dict[str, Any]:
    rate = fill(store, EXPERIMENT, trials, seed=0)
    fill(store, OTHER, OTHER_TRIALS, seed=1)
    log.info("%d trials in, %.0f trials/s", trials, rate)
    return {"trials": trials, "other_trials": OTHER_TRIALS, "insert_trials_per_s": round(rate),
            **compare(store, repeats)}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def size_flags(p: argparse.ArgumentParser, trials: int, mongo_trials: int,
               repeats: int) -> argparse.ArgumentParser:
    """The flags a store benchmark shares: trials per backend, repeats, SQLite only."""
    p.add_argument("--trials", type=positive, default=trials,
                   help="trials of the measured experiment on SQLite")
    p.add_argument("--mongo-trials", type=positive, default=mongo_trials,
                   help="trials of the measured experiment on MongoDB (SecantusDB)")
    p.add_argument("--repeats", type=positive, default=repeats, help="timed runs per figure")
    p.add_argument("--no-mongo", action="store_true", help="SQLite only")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    return size_flags(p, 100_000, 10_000, 5).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from localrules.store.sqlite import SQLiteStore

    out: dict[str, Any] = {"where": SELECTIVE, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "bench.db"))
        try:
            out["sqlite"] = run_backend(store, args.trials, args.repeats)
        finally:
            store.close()
    if not args.no_mongo:
        from secantus import SecantusDBServer

        from localrules.store import open_store

        with SecantusDBServer(port=0, storage_path=":memory:") as server:
            url = server.uri.rstrip("/") + "/bench_query"
            with open_store(url) as store:
                out["mongodb"] = run_backend(store, args.mongo_trials, args.repeats)
    selective = out["sqlite"]["selective"]
    out["goal"] = {"trials": args.trials, "seconds_max": GOAL_SECONDS,
                   "speedup_min": GOAL_SPEEDUP,
                   "met": selective["pushed_down_s"] <= GOAL_SECONDS
                   and selective["speedup"] >= GOAL_SPEEDUP}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

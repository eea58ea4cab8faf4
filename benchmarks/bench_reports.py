"""Report costs at the paper's scale: the importance, model-importance and progress reports of a
1,000-trial ``ia`` search on SQLite (the CLI end to end, figures and HTML included), and one
neural-fit layer at the size of the appendix's data (5,120 images × 256 sites, a 7×7×512 layer).

A report is something a researcher re-runs while a search goes on, so it should take seconds;
the neural fit runs once per layer and model. Goals: categorical importance with figures and
HTML ≤ 5 s, progress ≤ 5 s, model importance (30 bootstrap resamples) ≤ 60 s, one neural-fit
layer ≤ 120 s on 2 cores. Each figure is the median of ``--repeats`` runs (the neural fit: one).
Baseline, in the same process: one forest's permutation importance by scikit-learn's
``permutation_importance`` against the batched ``permutation_drop`` the report uses (same
forest, same 1,000 trials, 3 shuffles per parameter).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import tempfile
import time
from typing import Any

log = logging.getLogger("bench_reports")


def cli_seconds(argv: list[str], repeats: int) -> float:
    """Median wall time of ``localrules ARGV`` in this process (stdout discarded)."""
    from localrules.cli.main import main

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0, argv
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def store_with_trials(url: str, n: int) -> None:
    """An ``ia`` experiment named ``bench`` with ``n`` random trials, all completed."""
    from bench_controller import fill

    from localrules.search import SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space
    from localrules.store import open_store

    space = load_space("ia", default_budget("digits"))
    with open_store(url) as store:
        open_experiment(store, "bench", space, SearchSettings(max_trials=n))
        fill(store, space, "bench", n, seed=0)


def permutation_seconds(url: str, repeats: int) -> dict[str, Any]:
    """One forest's permutation importance, scikit-learn's against ours, interleaved."""
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    from localrules.analysis.importance import experiment_data
    from localrules.analysis.model_importance import encode, permutation_drop
    from localrules.spaces.nodes import walk
    from localrules.store import open_store

    with open_store(url, create=False) as store:
        data = experiment_data(store, "bench")
    x = encode(data.rows, [n.name for n in walk(data.space.nodes)])
    y = np.array([r["objective"] for r in data.rows])
    forest = RandomForestRegressor(100, min_samples_leaf=2, random_state=0, n_jobs=1).fit(x, y)
    theirs, ours = [], []
    for i in range(repeats):
        started = time.perf_counter()
        permutation_importance(forest, x, y, n_repeats=3, random_state=i)
        theirs.append(time.perf_counter() - started)
        started = time.perf_counter()
        permutation_drop(forest, x, y, np.random.default_rng(i))
        ours.append(time.perf_counter() - started)
    a, b = statistics.median(theirs), statistics.median(ours)
    return {"sklearn_permutation_s": round(a, 3), "batched_permutation_s": round(b, 3),
            "permutation_speedup": round(a / b, 1)}


def neural_fit_seconds(images: int, sites: int, features: int, seed: int) -> dict[str, Any]:
    """One layer's fit on synthetic data of the given size; the planted signal must be found."""
    import numpy as np

    from localrules.analysis.neural_fit import neural_fit

    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((images, 64)).astype(np.float32)
    x = latent @ rng.standard_normal((64, features)).astype(np.float32)
    x += rng.standard_normal(x.shape, dtype=np.float32)
    y = latent @ rng.standard_normal((64, sites)) + 2.0 * rng.standard_normal((images, sites))
    categories = np.repeat(np.arange(64), images // 64)
    started = time.perf_counter()
    (fit,) = neural_fit({"layer": x}, y, categories)
    seconds = time.perf_counter() - started
    if fit.median_r < 0.5:
        raise SystemExit(f"the planted signal was not found: median r {fit.median_r:.3f}")
    return {"neural_fit_layer_s": round(seconds, 2), "neural_fit_median_r": round(fit.median_r, 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000, help="completed trials in the search")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per report")
    p.add_argument("--images", type=int, default=5120)
    p.add_argument("--sites", type=int, default=256)
    p.add_argument("--features", type=int, default=7 * 7 * 512)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    out: dict[str, Any] = {"trials": args.trials, "backend": "sqlite", "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        store_with_trials(url, args.trials)
        common = ["--experiment", "bench", "--db", url]
        out["importance_s"] = round(cli_seconds(
            ["report", "importance", *common, "--out", f"{tmp}/imp"], args.repeats), 3)
        out["progress_s"] = round(cli_seconds(
            ["report", "progress", *common, "--out", f"{tmp}/prog"], args.repeats), 3)
        out["model_importance_s"] = round(cli_seconds(
            ["report", "importance", *common, "--method", "model", "--bootstrap", "30"], 1), 2)
        out.update(permutation_seconds(url, args.repeats))
    out.update(neural_fit_seconds(args.images, args.sites, args.features, seed=0))
    out.update(images=args.images, sites=args.sites, features=args.features)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

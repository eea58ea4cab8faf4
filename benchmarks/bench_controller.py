"""Controller cost: a whole TPE suggestion round at 100 and 1,000 completed trials of the ``ia``
space, and the SQLite store's reserve+complete throughput.

A round is what the controller does to queue one trial: requeue expired leases, renew its lock,
read the experiment's trials, rebuild hyperopt's history, ``tpe.suggest``, map the sample to a
validated config, insert. hyperopt's ``tpe.suggest`` alone on the same history is measured in the
same process as the baseline. Goals: round ≤ 0.2 s at 1,000 trials; ≥ 200 reserve+complete/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from typing import Any

log = logging.getLogger("bench_controller")


def fill(store, space, experiment: str, n: int, seed: int) -> float:
    """Add ``n`` random trials and run each through reserve → complete; returns ops/s."""
    import hyperopt
    from hyperopt import rand

    from localrules.search.history import misc_from_doc
    from localrules.store import Trial

    trials = hyperopt.Trials()
    domain = hyperopt.base.Domain(lambda p: 0.0, space.to_hyperopt())
    ids = store.allocate_trial_ids(experiment, n)
    docs = rand.suggest(ids, domain, trials, seed)
    new = []
    for tid, doc in zip(ids, docs, strict=True):
        misc = misc_from_doc(doc)
        params = space.params_from_vals(misc["vals"])
        new.append(Trial(experiment, tid, space.config(params, seed=tid).to_dict(), params, misc))
    store.add_trials(new)
    rng = __import__("random").Random(seed)
    started = time.perf_counter()
    for _ in ids:
        t = store.reserve("bench", 60.0, [experiment])
        store.complete(experiment, t.trial_id, t.attempt,
                       {"objective": rng.random(), "top1": None, "diverged": False})
    return n / (time.perf_counter() - started)


def round_seconds(controller, store, experiment: str, rounds: int) -> tuple[float, float]:
    """Median seconds of a controller round (queues one trial) and of tpe.suggest alone."""
    from hyperopt import tpe

    from localrules.search.controller import suggestion_seed
    from localrules.search.history import rebuild

    whole, alone = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        added = controller.step()
        whole.append(time.perf_counter() - started)
        assert added == 1, added
        history = rebuild(store.trials(experiment, ["done"]))
        tid = max(history.tids) + 1000
        started = time.perf_counter()
        tpe.suggest([tid], controller.domain, history, suggestion_seed(0, tid), verbose=False)
        alone.append(time.perf_counter() - started)
        t = store.reserve("bench", 60.0, [experiment])
        store.complete(experiment, t.trial_id, t.attempt, {"objective": 0.5})
    return statistics.median(whole), statistics.median(alone)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per history size")
    p.add_argument("--sizes", default="100,1000", help="completed trials before the rounds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from localrules.search import Controller, SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space
    from localrules.store import open_store

    space = load_space("ia", default_budget("digits"))
    out: dict[str, Any] = {}
    throughputs = []
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{tmp}/bench.db") as store:
        have, name = 0, "bench"
        settings = SearchSettings(max_trials=10**6, concurrency=1)
        experiment = open_experiment(store, name, space, settings)
        controller = Controller(store, experiment, space, settings)
        for size in sorted(int(s) for s in args.sizes.split(",")):
            throughputs.append(fill(store, space, name, size - have, seed=size))
            have = size
            whole, alone = round_seconds(controller, store, name, args.rounds)
            have += args.rounds
            log.info("%d completed trials: round %.3f s, tpe.suggest alone %.3f s", size, whole,
                     alone)
            out[f"round_s_{size}"] = round(whole, 4)
            out[f"tpe_suggest_s_{size}"] = round(alone, 4)
        out["reserve_complete_per_s"] = round(statistics.median(throughputs), 1)
    out.update(space="ia", rounds=args.rounds, backend="sqlite")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Controller cost: a TPE suggestion round at 1,000 and 10,000 completed trials of the ``ia``
space (SQLite store) beside hyperopt's ``tpe.suggest`` alone on the same history (the floor) and
Optuna's TPE sampler on the same trials (in-memory and SQLite storage), and the store's
reserve+complete throughput.

A round is what the controller does to queue one trial: requeue expired leases, renew its lock,
read the trials changed since its last round into the history it keeps, ``tpe.suggest``, map the
sample to a validated config, insert. The floor is ``tpe.suggest`` on the controller's own
``Trials`` just before the round (the same history). Optuna's round is ``ask`` plus the
define-by-run sampling of the same 21-parameter conditional tree (``optuna_sample``: a choice's
children only under the option drawn) into a study holding the same params and objectives; its
``tell`` is left out, as the worker's ``complete`` is. All in one process, interleaved round by
round (the round and its floor in alternating order), medians; the round's excess over the floor
also in process CPU time, which neighbours on a shared host do not inflate. A controller's first
round (it reads and decodes every trial, as every round did before issue 15) is reported apart.

Goals (issue 15): round ≤ floor + 0.01 s at 1,000 trials and ≤ floor + 0.05 s at 10,000; ahead of
Optuna's SQLite storage at 10,000; ≥ 200 reserve+complete/s. Needs the bench extra (optuna).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sqlite3
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

    domain = hyperopt.base.Domain(lambda p: 0.0, space.to_hyperopt())
    ids = store.allocate_trial_ids(experiment, n)
    docs = rand.suggest(ids, domain, hyperopt.Trials(), seed)
    new = []
    for tid, doc in zip(ids, docs, strict=True):
        misc = misc_from_doc(doc)
        params = space.params_from_vals(misc["vals"])
        new.append(Trial(experiment, tid, space.config(params, seed=tid).to_dict(), params, misc))
    store.add_trials(new)
    rng = random.Random(seed)
    started = time.perf_counter()
    for _ in ids:
        t = store.reserve("bench", 60.0, [experiment])
        store.complete(experiment, t.trial_id, t.attempt,
                       {"objective": rng.random(), "top1": None, "diverged": False})
    return n / (time.perf_counter() - started)


# --- Optuna on the same space ------------------------------------------------------------------
def _distribution(node):
    import optuna

    from localrules.spaces.nodes import Choice, IntUniform, LogUniform, Uniform

    if isinstance(node, Choice):
        return optuna.distributions.CategoricalDistribution([o.value for o in node.options])
    if isinstance(node, (Uniform, LogUniform)):  # LogUniform is a Uniform with log bounds
        return optuna.distributions.FloatDistribution(node.low, node.high,
                                                      log=isinstance(node, LogUniform))
    if isinstance(node, IntUniform):
        return optuna.distributions.IntDistribution(node.low, node.high)
    raise ValueError(f"no Optuna distribution for {type(node).__name__} {node.name!r}")


def active(nodes, draw) -> dict[str, tuple[Any, Any]]:
    """The tree walked define-by-run: ``{name: (distribution, value)}`` of the active
    parameters, each value from ``draw(name, distribution)``, a choice's children only under
    the option drawn."""
    from localrules.spaces.nodes import Choice

    out: dict[str, tuple[Any, Any]] = {}
    for node in nodes:
        distribution = _distribution(node)
        value = draw(node.name, distribution)
        out[node.name] = (distribution, value)
        if isinstance(node, Choice):
            out |= active(node.options[node.index(node.name, value)].children, draw)
    return out


def optuna_sample(trial, nodes) -> dict[str, Any]:
    """Sample the space's params with an Optuna trial (its public suggest_* calls)."""
    import optuna

    def draw(name: str, distribution) -> Any:
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            return trial.suggest_categorical(name, distribution.choices)
        if isinstance(distribution, optuna.distributions.FloatDistribution):
            return trial.suggest_float(name, distribution.low, distribution.high,
                                       log=distribution.log)
        return trial.suggest_int(name, distribution.low, distribution.high)

    return {name: value for name, (_, value) in active(nodes, draw).items()}


def optuna_trials(nodes, trials) -> list:
    """The store's finished trials as Optuna trials: same params, same objective."""
    import optuna

    out = []
    for t in trials:
        pairs = active(nodes, lambda name, _, params=t.params: params[name])
        out.append(optuna.trial.create_trial(
            params={k: v for k, (_, v) in pairs.items()},
            distributions={k: d for k, (d, _) in pairs.items()}, value=t.result["objective"]))
    return out


class OptunaStudy:
    """One Optuna study (maximise, ``TPESampler(seed=0)``) in memory or in a SQLite file.

    Optuna adds a trial to SQLite storage at some 60-80 ms (an ORM transaction per trial), so
    the file is filled through a second storage whose connections skip fsync
    (``PRAGMA synchronous=OFF``); rounds run on Optuna's default storage of the file."""

    def __init__(self, path: str | None) -> None:
        import optuna

        self.url = None if path is None else f"sqlite:///{path}"
        self.study = optuna.create_study(direction="maximize", storage=self.url,
                                         sampler=optuna.samplers.TPESampler(seed=0))

    def add(self, trials: list) -> None:
        import optuna

        if self.url is None:
            self.study.add_trials(trials)
            return
        path = self.url.removeprefix("sqlite:///")

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, check_same_thread=False)
            connection.execute("PRAGMA synchronous=OFF")
            return connection

        fast = optuna.storages.RDBStorage(self.url, engine_kwargs={"creator": connect})
        optuna.load_study(study_name=self.study.study_name, storage=fast).add_trials(trials)
        self.study = optuna.load_study(study_name=self.study.study_name, storage=self.url,
                                       sampler=optuna.samplers.TPESampler(seed=0))

    def round(self, nodes, rng: random.Random) -> float:
        """Seconds of one suggestion (ask + define-by-run sampling); then its tell."""
        started = time.perf_counter()
        trial = self.study.ask()
        optuna_sample(trial, nodes)
        seconds = time.perf_counter() - started
        self.study.tell(trial, rng.random())
        return seconds


# --- the controller -----------------------------------------------------------------------------
def controller_round(controller, store, experiment: str, rng: random.Random, floor_first: bool
                     ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(wall, CPU) seconds of a whole round and of ``tpe.suggest`` alone on the same history
    (``floor_first``: which runs first, alternated so neither pays for the other's garbage);
    then the new trial is run (reserve → complete)."""
    from hyperopt import tpe

    from localrules.search.suggest import suggestion_seed

    controller.history.update(store, experiment)  # the round's own read then finds nothing
    tid = max(controller.history.entries) + 1

    def floor() -> None:
        tpe.suggest([tid], controller.domain, controller.history.trials,
                    suggestion_seed(controller.settings.seed, tid), verbose=False)

    def whole() -> None:
        assert controller.step() == 1

    timed = {}
    for name, run in ((("floor", floor), ("whole", whole)) if floor_first else
                      (("whole", whole), ("floor", floor))):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        timed[name] = (time.perf_counter() - wall, time.process_time() - cpu)
    t = store.reserve("bench", 60.0, [experiment])
    store.complete(experiment, t.trial_id, t.attempt, {"objective": rng.random()})
    return timed["whole"], timed["floor"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per history size")
    p.add_argument("--sizes", default="1000,10000", help="completed trials before the rounds")
    p.add_argument("--no-optuna", action="store_true", help="leave Optuna out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from localrules.search import Controller, SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space
    from localrules.store import open_store

    if not args.no_optuna:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("ia", default_budget("digits"))
    out: dict[str, Any] = {}
    throughputs = []
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{tmp}/bench.db") as store:
        name = "bench"
        settings = SearchSettings(max_trials=10**6, concurrency=1, references=(),
                                  warm_start=False)
        experiment = open_experiment(store, name, space, settings)
        studies = {} if args.no_optuna else {
            "memory": OptunaStudy(None), "sqlite": OptunaStudy(f"{tmp}/optuna.db")}
        have = set()
        for size in sorted(int(s) for s in args.sizes.split(",")):
            throughputs.append(fill(store, space, name, size - len(store.history(name)),
                                    seed=size))
            done = store.trials(name, ["done"])
            new = optuna_trials(space.nodes, [t for t in done if t.trial_id not in have])
            for storage, study in studies.items():
                started = time.perf_counter()
                study.add(new)
                log.info("optuna %s: %d trials added in %.1f s", storage, len(new),
                         time.perf_counter() - started)
            have = {t.trial_id for t in done}
            controller = Controller(store, experiment, space, settings, owner="bench")
            started = time.perf_counter()
            controller.step()  # a controller's first round reads every trial
            out[f"first_round_s_{size}"] = round(time.perf_counter() - started, 4)
            t = store.reserve("bench", 60.0, [name])
            store.complete(name, t.trial_id, t.attempt, {"objective": rng.random()})
            pairs, optuna_s = [], {storage: [] for storage in studies}
            for i in range(args.rounds):
                pairs.append(controller_round(controller, store, name, rng, i % 2 == 0))
                for storage, study in studies.items():
                    optuna_s[storage].append(study.round(space.nodes, rng))
            out[f"round_s_{size}"] = round(statistics.median(w[0] for w, _ in pairs), 4)
            out[f"tpe_suggest_s_{size}"] = round(statistics.median(a[0] for _, a in pairs), 4)
            for clock, k in (("", 0), ("_cpu", 1)):  # wall time, process CPU time
                out[f"round_over_tpe{clock}_s_{size}"] = round(
                    statistics.median(w[k] - a[k] for w, a in pairs), 4)
            for storage, seconds in optuna_s.items():
                out[f"optuna_{storage}_s_{size}"] = round(statistics.median(seconds), 4)
            log.info("%d trials: %s", size, {k: v for k, v in out.items() if k.endswith(
                f"_{size}")})
            controller.release_lock()
        out["reserve_complete_per_s"] = round(statistics.median(throughputs), 1)
    out.update(space="ia", rounds=args.rounds, backend="sqlite",
               python=platform.python_version(), sqlite=sqlite3.sqlite_version,
               hyperopt=_version("hyperopt"), optuna=None if args.no_optuna else
               _version("optuna"), optuna_sampler=None if args.no_optuna else
               "TPESampler(seed=0)")
    print(json.dumps(out))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()

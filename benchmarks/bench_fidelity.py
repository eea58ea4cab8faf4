"""Multi-fidelity searches against plain TPE at an equal budget of trial-epochs.

Plain TPE (``--fidelity none``), ASHA-TPE (``asha``) and Hyperband-TPE (``hyperband``) search
the ``ia`` space with the same seeds and the same budget of trial-epochs (epochs trained, summed
over trials: a trial paused at rung 1 after 3 epochs spent 3, and a promotion resumed from its
checkpoint spends only the epochs it adds), all through the real search machinery: a SQLite
store, the controller ``open_search`` returns, and a store ``Worker``. Two parts:

(a) **Synthetic learning curves**, many seeds. The worker's trainer is a deterministic function
of the trial's config (``CurveObjective``): a quality ``q(x)`` with a known optimum (the
published ia-tpe rule scores 0.98; a weighted match of its 12 ops, bumps around its continuous
values) and a convergence time ``τ(x)`` that depends on the batch size, the alignment learning
rate and the delay, not on q, so early rungs predict the final rank imperfectly and curves
cross: ``value(e) = chance + (q − chance)·(1 − exp(−e/τ)) + noise``, the noise seeded by (seed,
trial config, epoch). One worker runs the queue one trial at a time, so the order of
completion, and with it the best full-budget objective so far against cumulative trial-epochs,
is exact.

(b) **Real digits searches** at the default budget (ResNet-18 width 16, 10 epochs), no warm
start, no references, through ``SearchSession`` and ``StoreEngine(workers=2)``. Completions are
read from the store at every controller round (ordered by their finish times), and the search is
stopped once its trial-epochs reach the budget. Slow (minutes per search); ``--digits-seeds 0``
skips it.

Plain TPE gets ``--budget-trials`` trials of the budget's epochs; ASHA and Hyperband get enough
``max_trials`` to spend that many trial-epochs (1.5× the expected count) and are stopped when
they have. Each search keeps its own default TPE settings (startup trials: a third of
``max_trials``, at most 20) unless ``--startup`` fixes them for all. Compared at equal
trial-epochs by the best full-budget objective (``results.full_budget``: paused trials do not
count) among the completions within that many trial-epochs. Per method: the final best at the
plain budget (mean ± SEM over seeds); the trial-epochs needed to come within 0.005 of plain
TPE's final best of the same seed (median, mean over the seeds that did, and how many never
did within the budget); the fraction of seeds where it ends worse than plain by more than 0.01,
and where it is worse by more than 0.01 at any of plain's completions past a third of the
budget; the mean best-so-far curve (a search without a full-budget result yet counts as chance).
``--methods ...,none-reseeded`` adds plain TPE run again with another search seed on the same
objective, judged against plain by the same figures: the noise floor of the per-seed ones.

Goal (issue 17, judged on the synthetic part over ≥ 20 seeds): ASHA-TPE reaches plain TPE's
final best with at most 1/3 of its trial-epochs (the median seed), and is never worse by more
than 0.01 in final best at equal trial-epochs (no seed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_fidelity")

METHODS = ("none", "asha", "hyperband", "none-reseeded")
RESEEDED = "none-reseeded"
"""Plain TPE again with another search seed (the objective's seed kept): how often plain TPE
is "worse" than itself, the noise floor of the per-seed figures (not run by default)."""
RESEED_OFFSET = 1000
CHANCE = 0.1
"""Chance-level top-1 on digits (10 classes): a search with no full-budget result is there."""
REACH = 0.005
"""Within this much of plain TPE's final best counts as reaching it."""
WORSE = 0.01
"""Worse than plain by more than this at equal trial-epochs fails the goal."""
GOALS = {"asha_reach_fraction_of_budget": 1 / 3, "asha_worse_fraction": 0.0, "seeds": 20}
MAX_TRIALS_MARGIN = 1.5
SPACE = "ia"

# --- (a) the synthetic objective ----------------------------------------------------------------
Q_MAX = 0.98
"""q at the optimum (the published ia-tpe rule)."""
OPS = ("center_input", "normalize_input", "batch_center_backward_input", "bias_forward",
       "bias_backward", "relu_forward", "relu_backward", "center_forward_output",
       "normalize_forward_output", "batch_center_forward_output", "center_backward_output",
       "normalize_backward_output")
OP_WEIGHTS = (3.0, 3.0, 2.0, 2.0, 1.5, 1.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5)
"""A few ops matter much, most little (as ablations of published rules find)."""


def _bump(x: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((x - centre) / width) ** 2)


class CurveObjective:
    """A worker ``trainer``: the learning curve of a trial's config, evaluated at the epoch it
    trains to (``until_epoch``, else the budget's). Deterministic in (seed, config, epoch); the
    trial's own training seed is left out, so one config has one curve."""

    def __init__(self, seed: int, noise: float = 0.005) -> None:
        from localrules.spaces import default_budget, load_space

        space = load_space(SPACE, default_budget("digits"))
        self.target = space.config(space.warm_starts[0][1]).to_dict()
        self.seed = seed
        self.noise = noise

    def quality(self, config: Mapping[str, Any]) -> float:
        """q(x): chance plus (Q_MAX − chance)·score², the score a weighted mean of matches to
        the published rule (1 there, so q = Q_MAX is the optimum)."""
        rule, run, target = config["rule"], config["run"], self.target
        ops = sum(w * (rule["ops"][op] == target["rule"]["ops"][op])
                  for op, w in zip(OPS, OP_WEIGHTS, strict=True)) / sum(OP_WEIGHTS)
        weights, decay = rule["weights"], rule["weights"]["decay"]
        noise = rule.get("noise")
        parts = [
            (4.0, ops),
            (1.5, _bump(math.log10(decay), math.log10(target["rule"]["weights"]["decay"]), 3.0)),
            (1.0, _bump(weights["amp"] / decay, target["rule"]["weights"]["amp"]
                        / target["rule"]["weights"]["decay"], 60.0)),
            (1.0, _bump(math.log10(weights["null"]),
                        math.log10(target["rule"]["weights"]["null"]), 4.0)),
            (1.5, _bump(math.log10(run["alignment_lr"]),
                        math.log10(target["run"]["alignment_lr"]), 1.5)),
            (0.5, 0.5 if not noise else _bump(noise["stddev"],
                                              target["rule"]["noise"]["stddev"], 0.4)),
            (0.5, {16: 0.5, 32: 0.8, 64: 1.0, 128: 0.8}[run["batch_size"]]),
            (0.5, (0.8, 1.0, 0.7)[round(run["delay_epochs"] * 4.5)]),
            (0.5, 1.0 if run["alternate"] else 0.6),
        ]
        score = sum(w * s for w, s in parts) / sum(w for w, _ in parts)
        return CHANCE + (Q_MAX - CHANCE) * score ** 2

    @staticmethod
    def tau(config: Mapping[str, Any]) -> float:
        """τ(x) in epochs, about 0.3 to 10: slower at larger batches (fewer steps per epoch), at
        smaller alignment learning rates, and with a delayed start."""
        run = config["run"]
        return (1.5 * (run["batch_size"] / 64) ** 0.5 * (1 + 2 * run["delay_epochs"])
                * 10 ** (-0.2 * (math.log10(run["alignment_lr"]) + 4)))

    def value(self, config: Mapping[str, Any], epoch: int) -> float:
        import numpy as np

        key = {k: v for k, v in config.items() if k != "seed"}
        digest = int(hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:15],
                     16)
        jitter = np.random.default_rng([self.seed, digest, epoch]).normal(0.0, self.noise)
        q = self.quality(config)
        clean = CHANCE + (q - CHANCE) * (1 - math.exp(-epoch / self.tau(config)))
        return float(min(1.0, max(0.0, clean + jitter)))

    def __call__(self, config: Any, out_dir: Any, on_epoch: Callable | None = None,
                 should_stop: Callable | None = None, may_write: Callable | None = None,
                 until_epoch: int | None = None) -> dict[str, Any]:
        epochs = until_epoch or config.run.epochs
        top1 = self.value(config.to_dict(), epochs)
        return {"objective": top1, "top1": top1, "epochs": epochs, "diverged": False}


# --- the searches -------------------------------------------------------------------------------
def epochs_per_trial(method: str, min_epochs: int, eta: int, epochs: int) -> float:
    """Expected trial-epochs of one trial had every rung promoted its top 1/η (bracket b's
    trials start at rung b): what sizes ``max_trials`` for a budget."""
    fidelity = fidelity_of(method, min_epochs, eta)
    if not fidelity.enabled:
        return float(epochs)
    rungs = fidelity.rungs(epochs)
    cost = 0.0
    for bracket, weight in enumerate(fidelity.bracket_weights(epochs)):
        cost += weight * (rungs[bracket] + sum((rungs[k] - rungs[k - 1]) / eta ** (k - bracket)
                                               for k in range(bracket + 1, len(rungs))))
    return cost


def fidelity_of(method: str, min_epochs: int, eta: int):
    from localrules.search.fidelity import Fidelity

    if method in ("none", RESEEDED):
        return Fidelity()
    return Fidelity(method, min_epochs=min_epochs, reduction_factor=eta)


def settings_of(method: str, seed: int, budget: int, epochs: int, args: argparse.Namespace,
                plain_trials: int, concurrency: int) -> dict[str, Any]:
    """The search's settings: plain TPE ``plain_trials`` trials, a multi-fidelity search
    enough to spend ``budget`` trial-epochs; no warm start, no references."""
    if method in ("none", RESEEDED):
        max_trials = plain_trials
        seed += RESEED_OFFSET if method == RESEEDED else 0
    else:
        max_trials = math.ceil(MAX_TRIALS_MARGIN * budget
                               / epochs_per_trial(method, args.min_epochs, args.reduction_factor,
                                                  epochs))
    settings: dict[str, Any] = {
        "max_trials": max_trials, "concurrency": concurrency, "seed": seed, "references": [],
        "warm_start": False, "fidelity": fidelity_of(method, args.min_epochs,
                                                     args.reduction_factor).to_dict()}
    if args.startup is not None:
        settings["tpe"] = {"n_startup_jobs": args.startup}
    return settings


class Ledger:
    """Completions in order: each adds the epochs its trial trained since its last one (a
    promoted trial resumes from its checkpoint) and, when it is a full-budget result, may raise
    the best so far. ``curve`` is [(cumulative trial-epochs, best full-budget objective or
    None)], one point per completion."""

    def __init__(self) -> None:
        self.trained: dict[int, int] = {}
        self.spent = 0
        self.best: float | None = None
        self.curve: list[tuple[int, float | None]] = []
        self.full = 0

    def completed(self, trial_id: int, result: Mapping[str, Any]) -> bool:
        """Count a completion; False when it is one already counted."""
        from localrules.results import full_budget

        epochs = int(result["trial_epochs"])
        if self.trained.get(trial_id, 0) >= epochs:
            return False
        self.spent += epochs - self.trained.get(trial_id, 0)
        self.trained[trial_id] = epochs
        if full_budget(result) and not result.get("diverged"):
            self.full += 1
            objective = float(result["objective"])
            self.best = objective if self.best is None else max(self.best, objective)
        self.curve.append((self.spent, self.best))
        return True


def synthetic_search(method: str, seed: int, args: argparse.Namespace, tmp: str
                     ) -> dict[str, Any]:
    """One search of part (a): the controller and one worker take turns until the search has
    spent the budget's trial-epochs (or has finished)."""
    from localrules.search.session import open_search
    from localrules.spaces import default_budget, load_space
    from localrules.store import open_store
    from localrules.worker.loop import Worker

    space = load_space(SPACE, default_budget("digits"))
    epochs = space.budget.epochs
    budget = args.budget_trials * epochs
    started = time.perf_counter()
    store = open_store(f"sqlite:///{Path(tmp, f'synthetic-{method}-{seed}.db')}")
    name = f"{method}-{seed}"
    ledger = Ledger()
    try:
        settings = settings_of(method, seed, budget, epochs, args, args.budget_trials,
                               args.concurrency)
        controller = open_search(store, name, space, settings)
        worker = Worker(store, Path(tmp, "artifacts"), experiments=[name], poll_seconds=0.01,
                        idle_exit=0.0, trainer=CurveObjective(seed, args.noise))
        try:
            while ledger.spent < budget:
                controller.step()
                if controller.status().finished:
                    break
                worker.max_trials = 1
                stats = worker.run()
                if stats.failed:
                    raise RuntimeError(f"{name}: trial {stats.failed[-1][1]} failed")
                if not stats.completed:
                    raise RuntimeError(f"{name}: the worker found nothing to run")
                trial_id = stats.completed.pop()[1]
                ledger.completed(trial_id, store.get_trial(name, trial_id).result)
            startup = controller.settings.tpe.n_startup_jobs
            max_trials = controller.settings.max_trials
            created = controller.status().created
        finally:
            controller.release_lock()
    finally:
        store.close()
    return {"method": method, "seed": seed, "curve": ledger.curve, "spent": ledger.spent,
            "trials": created, "full_budget_trials": ledger.full, "max_trials": max_trials,
            "n_startup_jobs": startup, "seconds": time.perf_counter() - started}


def digits_search(method: str, seed: int, args: argparse.Namespace, tmp: str
                  ) -> dict[str, Any]:
    """One search of part (b): real training through ``StoreEngine(workers=2)``, stopped once
    its completions have spent the budget's trial-epochs."""
    from localrules.search.session import SearchSession
    from localrules.spaces import default_budget, load_space
    from localrules.worker.engine import StoreEngine

    space = load_space(SPACE, default_budget("digits"))
    epochs = space.budget.epochs
    budget = args.digits_budget_trials * epochs
    name = f"digits-{method}-{seed}"
    engine = StoreEngine(artifacts=str(Path(tmp, "artifacts")), workers=args.digits_workers,
                         log_level=logging.WARNING)
    settings = settings_of(method, seed, budget, epochs, args, args.digits_budget_trials,
                           args.digits_workers)
    ledger = Ledger()
    started = time.perf_counter()
    with SearchSession.open(f"sqlite:///{Path(tmp, f'{name}.db')}", name, space, settings,
                            engine) as session:

        def read_completions(_status: Any = None) -> None:
            new = [t for t in session.store.trials(name)
                   if t.result and t.result.get("trial_epochs") is not None
                   and ledger.trained.get(t.trial_id, 0) < t.result["trial_epochs"]]
            # one promoted before this round has no finish time now: it finished earlier
            for t in sorted(new, key=lambda t: (t.finished_at or 0.0, t.trial_id)):
                ledger.completed(t.trial_id, t.result)
                log.info("%s: trial %d at %d epochs (%.4f); %d trial-epochs, best %s", name,
                         t.trial_id, t.result["trial_epochs"], t.result["objective"],
                         ledger.spent, ledger.best)

        outcome = session.run(engine, on_status=read_completions,
                              should_stop=lambda: ledger.spent >= budget)
        read_completions()
        stats = {"trials": outcome.status.created, "max_trials": session.settings.max_trials,
                 "n_startup_jobs": session.settings.tpe.n_startup_jobs,
                 "stopped": outcome.stopped}
    return {"method": method, "seed": seed, "curve": ledger.curve, "spent": ledger.spent,
            "full_budget_trials": ledger.full, "seconds": time.perf_counter() - started,
            **stats}


# --- figures ------------------------------------------------------------------------------------
def best_at(curve: Sequence[tuple[int, float | None]], spent: float) -> float | None:
    """The best full-budget objective among the completions within ``spent`` trial-epochs."""
    best = None
    for at, value in curve:
        if at > spent:
            break
        best = value
    return best


def reached_at(curve: Sequence[tuple[int, float | None]], target: float, budget: int
               ) -> int | None:
    """Trial-epochs at the first completion whose best is ≥ ``target``, within ``budget``."""
    for at, value in curve:
        if at > budget:
            return None
        if value is not None and value >= target:
            return at
    return None


def mean_sem(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    sem = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return statistics.fmean(values), sem


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarise(runs: Mapping[str, Sequence[dict[str, Any]]], budget: int, epochs: int
              ) -> dict[str, Any]:
    """The per-method figures of one part, seed by seed against plain TPE's search of the same
    seed (``runs[method]`` in seed order)."""
    plain = runs["none"]
    targets = [best_at(r["curve"], budget) for r in plain]
    checkpoints = [at for at in range(epochs, budget + 1, epochs) if at >= budget / 3]
    fractions = [k / 10 for k in range(1, 11)]
    out: dict[str, Any] = {}
    for method, method_runs in runs.items():
        finals, reached, worse, worse_anywhere = [], [], 0, 0
        for run, plain_run, target in zip(method_runs, plain, targets, strict=True):
            final = best_at(run["curve"], budget)
            finals.append(CHANCE if final is None else final)
            reached.append(None if target is None
                           else reached_at(run["curve"], target - REACH, budget))
            if (target or CHANCE) - (final or CHANCE) > WORSE:
                worse += 1
            if any((best_at(plain_run["curve"], at) or CHANCE)
                   - (best_at(run["curve"], at) or CHANCE) > WORSE for at in checkpoints):
                worse_anywhere += 1
        mean, sem = mean_sem(finals)
        hits = [r for r in reached if r is not None]
        never = len(reached) - len(hits)
        # "never" sorts last: the median is None when at least half never reached it
        ordered = sorted(hits) + [math.inf] * never
        median = statistics.median(ordered) if ordered else None
        n = len(method_runs)
        out[method] = {
            "final_best": _r(mean), "final_best_sem": _r(sem),
            "final_best_runs": [_r(v) for v in finals],
            "reach_epochs_median": None if median in (None, math.inf) else median,
            "reach_epochs_mean": _r(statistics.fmean(hits), 1) if hits else None,
            "reach_never": never,
            "reach_fraction_of_budget_median": None if median in (None, math.inf)
            else _r(median / budget, 3),
            "reach_within_third": sum(r <= budget / 3 for r in hits),
            "reach_epochs_runs": reached,
            "worse_fraction": _r(worse / n, 3),
            "worse_anywhere_fraction": _r(worse_anywhere / n, 3),
            "curve": {f"{f:.1f}": _r(statistics.fmean(best_at(r["curve"], f * budget) or CHANCE
                                                      for r in method_runs))
                      for f in fractions},
            "spent_mean": _r(statistics.fmean(r["spent"] for r in method_runs), 1),
            "trials_mean": _r(statistics.fmean(r["trials"] for r in method_runs), 1),
            "full_budget_trials_mean": _r(statistics.fmean(r["full_budget_trials"]
                                                           for r in method_runs), 1),
            "max_trials": method_runs[0]["max_trials"],
            "n_startup_jobs": method_runs[0]["n_startup_jobs"],
            "seconds_per_search": _r(statistics.median(r["seconds"] for r in method_runs), 1),
        }
    return out


def goal(synthetic: Mapping[str, Any], seeds: int) -> dict[str, Any]:
    asha = synthetic.get("asha")
    if asha is None:
        return {"met": None}
    third = asha["reach_fraction_of_budget_median"]
    met = (seeds >= GOALS["seeds"] and third is not None
           and third <= GOALS["asha_reach_fraction_of_budget"]
           and asha["worse_fraction"] <= GOALS["asha_worse_fraction"])
    return {"met": met, "asha_reach_fraction_of_budget_median": third,
            "asha_worse_fraction": asha["worse_fraction"], "seeds": seeds}


def run_part(search: Callable[..., dict[str, Any]], label: str, methods: Sequence[str],
             seeds: int, args: argparse.Namespace, tmp: str) -> dict[str, list[dict[str, Any]]]:
    """Every method for every seed, the methods interleaved seed by seed."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in range(args.first_seed, args.first_seed + seeds):
        for method in methods:
            run = search(method, seed, args, tmp)
            runs[method].append(run)
            if args.runs_file:  # a long run's searches survive it being stopped
                with open(args.runs_file, "a") as f:
                    f.write(json.dumps({"part": label, **run}) + "\n")
            log.info("%s %s seed %d: best %s after %d trial-epochs (%d trials, %d full) in "
                     "%.0f s", label, method, seed, run["curve"][-1][1] if run["curve"] else None,
                     run["spent"], run["trials"], run["full_budget_trials"], run["seconds"])
    return runs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from localrules.spaces import default_budget

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20,
                   help="seeds of the synthetic part (20; 0 skips it)")
    p.add_argument("--budget-trials", type=int, default=30,
                   help="plain TPE's trials in the synthetic part; the budget is these × the "
                        "budget's epochs (30 → 300 trial-epochs)")
    p.add_argument("--noise", type=float, default=0.005,
                   help="sd of the synthetic curves' per-epoch noise (0.005)")
    p.add_argument("--digits-seeds", type=int, default=3,
                   help="seeds of the real digits part (3; 0 skips it)")
    p.add_argument("--digits-budget-trials", type=int, default=8,
                   help="plain TPE's trials on digits (8 → 80 trial-epochs)")
    p.add_argument("--digits-workers", type=int, default=2, help="local workers on digits (2)")
    p.add_argument("--methods", default=",".join(METHODS[:3]),
                   help="comma-separated, among none,asha,hyperband,none-reseeded (plain TPE "
                        f"with search seed + {RESEED_OFFSET}: the noise floor); none is always "
                        "run")
    p.add_argument("--min-epochs", type=int, default=None,
                   help="first rung's epochs (default: the search's, the first epoch past the "
                        "budget's warm-up: 2 on digits)")
    p.add_argument("--reduction-factor", type=int, default=3, help="η (3)")
    p.add_argument("--startup", type=int, default=None,
                   help="TPE startup trials for every search (default: each search's own)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="trials queued at once in the synthetic part (2, as the 2 workers on "
                        "digits)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds run from here (0): more seeds of a long part in another run")
    p.add_argument("--runs-file", default=None,
                   help="append every search's curve to this file as it ends (JSON lines)")
    args = p.parse_args(argv)
    methods = ["none", *(m.strip() for m in args.methods.split(",")
                         if m.strip() and m.strip() != "none")]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; valid: {', '.join(METHODS)}")
    args.method_list = list(dict.fromkeys(methods))
    for flag, low in (("first_seed", 0), ("seeds", 0), ("budget_trials", 1), ("digits_seeds", 0),
                      ("digits_budget_trials", 1), ("digits_workers", 1), ("concurrency", 1)):
        if getattr(args, flag) < low:
            p.error(f"--{flag.replace('_', '-')} must be >= {low}")
    if not args.seeds and not args.digits_seeds:
        p.error("--seeds 0 and --digits-seeds 0 leave nothing to run")
    if not (math.isfinite(args.noise) and 0 <= args.noise <= 0.1):
        p.error("--noise must be in [0, 0.1]")
    if args.min_epochs is None:  # what `localrules search --fidelity asha` uses
        from localrules.search.fidelity import first_rung_epochs

        args.min_epochs = first_rung_epochs(default_budget("digits"))
    try:
        for method in args.method_list:
            fidelity_of(method, args.min_epochs, args.reduction_factor).check_budget(
                default_budget("digits").epochs)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    log.setLevel(logging.INFO)
    from localrules.spaces import default_budget

    epochs = default_budget("digits").epochs
    out: dict[str, Any] = {"space": SPACE, "methods": args.method_list,
                           "min_epochs": args.min_epochs,
                           "reduction_factor": args.reduction_factor, "epochs": epochs,
                           "reach_within": REACH, "worse_by": WORSE}
    with tempfile.TemporaryDirectory() as tmp:
        if args.seeds:
            budget = args.budget_trials * epochs
            runs = run_part(synthetic_search, "synthetic", args.method_list, args.seeds, args,
                            tmp)
            out["synthetic"] = {"seeds": args.seeds, "budget_trial_epochs": budget,
                                "noise": args.noise, **summarise(runs, budget, epochs)}
            out["goal"] = goal(out["synthetic"], args.seeds)
            log.info("synthetic: %s", json.dumps(out["goal"]))
        if args.digits_seeds:
            budget = args.digits_budget_trials * epochs
            runs = run_part(digits_search, "digits", args.method_list, args.digits_seeds, args,
                            tmp)
            out["digits"] = {"seeds": args.digits_seeds, "budget_trial_epochs": budget,
                             "workers": args.digits_workers, **summarise(runs, budget, epochs)}
    out["goals"] = GOALS
    print(json.dumps(out))


if __name__ == "__main__":
    main()

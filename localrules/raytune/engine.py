"""Build (or restore) and run the Ray Tune search of one experiment.

The Tuner: ``ConcurrencyLimiter(StoreSearcher(HyperOptSearch(space.to_hyperopt())))`` at the
experiment's concurrency, seeded with its seed, random for its ``n_startup_jobs`` trials and with
its γ (Ray's HyperOptSearch exposes no other TPE knob: the EI candidates and prior weight are
hyperopt's defaults); the function trainable with the requested resources per trial; a
``FailureConfig`` retrying a failed trial from its last checkpoint; optionally ASHA on the
objective (time in epochs: grace period 1, reduction factor 3, up to the trial's epochs); the
store callback. The experiment's files (Ray's experiment state and every trial's checkpoints)
live in ``storage/<experiment>``; running the same experiment again restores the Tuner from there
(``Tuner.restore``): finished trials stay finished, unfinished ones resume from their
checkpoints, and the searcher continues from its saved state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from localrules.raytune import require_ray

log = logging.getLogger(__name__)

SCHEDULERS = ("none", "asha")
ASHA_GRACE_PERIOD = 1
ASHA_REDUCTION_FACTOR = 3
METRIC, MODE = "objective", "max"


def parse_resources(text: str) -> dict[str, float]:
    """``cpu=2,gpu=1`` or ``TPU=4`` → Ray's resource dict; ``cpu`` and ``gpu`` any case,
    anything else a custom resource (case kept). ValueError naming what is wrong."""
    resources: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, amount = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--resources-per-trial: {part!r} is not NAME=AMOUNT (e.g. "
                             "cpu=2,gpu=1 or TPU=4)")
        try:
            value = float(amount)
        except ValueError:
            raise ValueError(f"--resources-per-trial: {name}={amount!r} is not a number") \
                from None
        if not value > 0 or value != value:
            raise ValueError(f"--resources-per-trial: {name} must be > 0, got {amount}")
        key = name.lower() if name.lower() in ("cpu", "gpu") else name
        if key in resources:
            raise ValueError(f"--resources-per-trial: {key} given twice")
        resources[key] = value
    if not resources:
        raise ValueError("--resources-per-trial is empty; e.g. cpu=2,gpu=1 or TPU=4")
    return resources


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray: where, with what per trial, how many retries, which scheduler."""

    storage: str
    """Absolute path or URI (gs://…) holding the experiment's Ray state and checkpoints; on a
    cluster, storage every node reaches."""
    address: str | None = None
    """``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; None starts a local Ray instance."""
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1})
    max_failures: int = 2
    scheduler: str = "none"
    num_cpus: int | None = None
    """CPUs of a local instance (None: all)."""

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; valid: "
                             f"{', '.join(SCHEDULERS)}")
        if self.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0, got {self.max_failures}")


def trial_dirname(trial) -> str:
    """A Ray trial's directory as a worker's: ``trial-NNNNN`` with the store's trial id."""
    from localrules.raytune.searcher import META

    return f"trial-{int(trial.config[META]['trial_id']):05d}"


def _new_tuner(trainable, url: str, experiment, space, settings, options: RayOptions):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

    from localrules.raytune.callback import StoreCallback
    from localrules.raytune.searcher import StoreSearcher

    tpe = settings.tpe
    defaults = type(tpe)()
    if (tpe.n_ei_candidates, tpe.prior_weight) != (defaults.n_ei_candidates,
                                                   defaults.prior_weight):
        log.warning("Ray's HyperOptSearch uses hyperopt's EI candidates and prior weight (%d, "
                    "%g); the experiment's %d and %g apply to the store engine only",
                    defaults.n_ei_candidates, defaults.prior_weight, tpe.n_ei_candidates,
                    tpe.prior_weight)
    tpe_search = HyperOptSearch(space.to_hyperopt(), metric=METRIC, mode=MODE,
                                n_initial_points=tpe.n_startup_jobs,
                                random_state_seed=settings.seed, gamma=tpe.gamma)
    searcher = ConcurrencyLimiter(
        StoreSearcher(tpe_search, url=url, experiment=experiment.name,
                      space_source=experiment.space_source, budget=experiment.budget,
                      seed=settings.seed, n_startup=tpe.n_startup_jobs),
        max_concurrent=settings.concurrency)
    scheduler = None
    if options.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode=MODE,
                                  max_t=space.budget.epochs, grace_period=ASHA_GRACE_PERIOD,
                                  reduction_factor=ASHA_REDUCTION_FACTOR)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=settings.max_trials,
                                    trial_name_creator=trial_dirname,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=options.storage,
            callbacks=[StoreCallback(url, experiment.name)],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1),
    )


def run_ray_search(url: str, experiment, space, settings, options: RayOptions,
                   trainable: Callable[[dict[str, Any]], None] | None = None):
    """Run the experiment's search on Ray (new or restored) and return Ray's ResultGrid.

    ``trainable`` replaces the localrules trainable (tests inject failures with it)."""
    require_ray()
    import ray
    from ray import tune

    from localrules.raytune.trainable import train_ray_trial
    from localrules.store import open_store

    path = f"{options.storage.rstrip('/')}/{experiment.name}"
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.address, num_cpus=options.num_cpus if options.address is None
                 else None, include_dashboard=False, log_to_driver=True)
    try:
        runnable = tune.with_resources(trainable or train_ray_trial, dict(options.resources))
        if tune.Tuner.can_restore(path):
            log.info("restoring the Ray experiment in %s", path)
            tuner = tune.Tuner.restore(path, trainable=runnable, resume_unfinished=True,
                                       resume_errored=False)
        else:
            with open_store(url, create=False) as store:
                stored = len(store.history(experiment.name))
            if stored:
                raise ValueError(
                    f"experiment {experiment.name!r} has {stored} trial(s) in the store but "
                    f"no Ray experiment in {path}; resume it with the engine that ran it, point "
                    "--artifacts at its Ray storage, or choose a new --experiment name")
            tuner = _new_tuner(runnable, url, experiment, space, settings, options)
        return tuner.fit()
    finally:
        if started_here:
            ray.shutdown()

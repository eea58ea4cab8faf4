"""The Ray Tune searcher: TPE samples from ``HyperOptSearch``, made into localrules trials.

``HyperOptSearch`` suggests an evaluated sample of the space's hyperopt expression; this wrapper
decodes it into the space's flat params, allocates the trial's id in the store, and builds the
validated trial config with the default engine's seed rule (``trial_seed(experiment seed,
id)``), in the driver, before anything is scheduled. The trial's Ray config is ``{META:
{experiment, trial_id, config, params, misc}}``: the trainable trains ``config``, the store
callback records the rest. ``misc`` is hyperopt's idxs/vals with the store's id, as a store-
queue trial's. A sample that makes no valid config is reported to TPE as an error and drawn
again.

The wrapper is pickled with the Tuner (for ``Tuner.restore``): it keeps the space's source and
rebuilds the space lazily; the store's URL is not pickled at all (it may hold a password, and the
experiment's storage may be a shared bucket): the driver passes it in the process environment
(``STORE_URL_ENV``), so a resume uses the database the command names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

log = logging.getLogger(__name__)

META = "localrules"
"""The key of a trial's Ray config under which the localrules trial lives."""
STORE_URL_ENV = "LOCALRULES_RAY_STORE_URL"
"""How the driver hands the database URL to the searcher and the callback it runs."""
LOCK_ENV = "LOCALRULES_RAY_LOCK"
"""How the driver hands its experiment lock (JSON: name, owner, seconds) to the callback."""
INVALID_SAMPLE_RETRIES = 10


def driver_setting(name: str) -> str:
    """A per-run fact the driver put in its environment (``STORE_URL_ENV``, ``LOCK_ENV``)."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: the Ray engine's searcher and callback run "
                           "inside run_ray_search, which sets it")
    return value


def store_url() -> str:
    return driver_setting(STORE_URL_ENV)


def hyperopt_misc(vals: Mapping[str, list[Any]], trial_id: int) -> dict[str, Any]:
    """hyperopt's misc (idxs, vals) of a trial: every label, [id] where active."""
    return {"idxs": {label: [trial_id] if v else [] for label, v in vals.items()},
            "vals": dict(vals)}


class StoreSearcher(Searcher):
    """Wraps a searcher over ``space.to_hyperopt()``; every suggestion becomes a store trial
    id and a validated config."""

    def __init__(self, inner: Searcher, *, experiment: str,
                 space_source: Mapping[str, Any], budget: Mapping[str, Any], seed: int,
                 n_startup: int) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.experiment = experiment
        self.space_source = dict(space_source)
        self.budget = dict(budget)
        self.seed = seed
        self.n_startup = n_startup
        self._space = None
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_space"] = state["_store"] = None
        return state

    @property
    def space(self):
        if self._space is None:
            from localrules.spaces import Budget, space_from_source

            self._space = space_from_source(self.space_source, Budget.from_dict(self.budget))
        return self._space

    @property
    def store(self):
        if self._store is None:
            from localrules.store import open_store

            self._store = open_store(store_url(), create=False)
        return self._store

    # --- Searcher -----------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        from localrules.search.controller import trial_seed

        for _ in range(INVALID_SAMPLE_RETRIES):
            history = getattr(self.inner, "_hpopt_trials", None)
            before = None if history is None else len(history.trials)
            sample = self.inner.suggest(trial_id)
            if sample is None or sample == Searcher.FINISHED:
                return sample
            params = self.space.params_from_sample(sample)
            try:  # checked before an id is spent (the seed only sets the config's seed)
                self.space.config(params)
            except ValueError as err:
                log.warning("TPE suggested a sample with no valid config, drawing again: %s",
                            err)
                self.inner.on_trial_complete(trial_id, error=True)
                continue
            (store_id,) = self.store.allocate_trial_ids(self.experiment, 1)
            config = self.space.config(params, seed=trial_seed(self.seed, store_id))
            misc = hyperopt_misc(self.space.vals_from_params(params), store_id)
            if before is not None:  # hyperopt is random while it holds fewer than n_startup
                misc["startup"] = before < self.n_startup
            log.info("Ray trial %s is trial %d of %r", trial_id, store_id, self.experiment)
            return {META: {"experiment": self.experiment, "trial_id": store_id,
                           "config": config.to_dict(), "params": params, "misc": misc}}
        raise ValueError(f"{INVALID_SAMPLE_RETRIES} samples in a row gave no valid trial "
                         f"config in experiment {self.experiment!r}'s space")

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)

"""The Ray Tune searcher: TPE samples from ``HyperOptSearch``, made into localrules trials.

``HyperOptSearch`` suggests an evaluated sample of the space's hyperopt expression; this wrapper
decodes it into the space's flat params, allocates the trial's id in the store, and builds the
validated trial config with the default engine's seed rule (``trial_seed(experiment seed, id)``)
— in the driver, so a sample that makes no valid config fails before anything is scheduled. The
trial's Ray config is ``{META: {experiment, trial_id, config, params, misc}}``: the trainable
trains ``config``, the store callback records the rest. ``misc`` is hyperopt's idxs/vals with the
store's id, so the trials can also seed a store-queue search's history.

The wrapper is pickled with the Tuner (for ``Tuner.restore``): it keeps the store's URL and the
space's source and opens them lazily, never pickling a connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

log = logging.getLogger(__name__)

META = "localrules"
"""The key of a trial's Ray config under which the localrules trial lives."""


def hyperopt_misc(vals: Mapping[str, list[Any]], trial_id: int) -> dict[str, Any]:
    """hyperopt's misc (idxs, vals) of a trial: every label, [id] where active."""
    return {"idxs": {label: [trial_id] if v else [] for label, v in vals.items()},
            "vals": dict(vals)}


class StoreSearcher(Searcher):
    """Wraps a searcher over ``space.to_hyperopt()``; every suggestion becomes a store trial
    id and a validated config."""

    def __init__(self, inner: Searcher, *, url: str, experiment: str,
                 space_source: Mapping[str, Any], budget: Mapping[str, Any], seed: int,
                 n_startup: int) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.url = url
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

            self._store = open_store(self.url, create=False)
        return self._store

    # --- Searcher -----------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        from localrules.search.controller import trial_seed

        history = getattr(self.inner, "_hpopt_trials", None)
        before = None if history is None else len(history.trials)
        sample = self.inner.suggest(trial_id)
        if sample is None or sample == Searcher.FINISHED:
            return sample
        params = self.space.params_from_sample(sample)
        (store_id,) = self.store.allocate_trial_ids(self.experiment, 1)
        config = self.space.config(params, seed=trial_seed(self.seed, store_id))
        misc = hyperopt_misc(self.space.vals_from_params(params), store_id)
        if before is not None:  # hyperopt is random while it holds fewer than n_startup
            misc["startup"] = before < self.n_startup
        log.info("Ray trial %s is trial %d of %r", trial_id, store_id, self.experiment)
        return {META: {"experiment": self.experiment, "trial_id": store_id,
                       "config": config.to_dict(), "params": params, "misc": misc}}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)

    def get_state(self) -> dict:
        return self.inner.get_state()

    def set_state(self, state: dict) -> None:
        self.inner.set_state(state)

"""Where a search's trials come from: warm starts first, then TPE over the stored history.

One factory for both engines: the store-queue controller asks it for trials to queue, the Ray
engine's searcher for trials to hand Tune. Either way a trial is its id (from the store's
counter), its params, hyperopt's idxs/vals (so TPE's history rebuilds exactly from the store),
and the validated config seeded from the experiment's seed and the id.

- Warm starts (a paper space's published rule, a YAML space's ``warm_start`` points) come first,
  once each, as real trials TPE learns from; the store remembers which were queued
  (``misc["warm_start"]``), so a restarted controller never queues one twice.
- Then TPE: hyperopt's ``tpe.suggest`` on the ``Trials`` of the stored search trials (reference
  runs are never part of it: ``search.history``), seeded per trial id from the experiment's
  seed. It is random while the history holds fewer than ``n_startup_jobs`` trials
  (``misc["startup"]``).
- Each new trial joins the history as pending before the next is drawn, as in hyperopt's own
  asynchronous runs. Given a ``History`` (a controller's, kept between rounds), the new trials
  stay in it as pending until the store shows them; given stored trials, a history is made of
  them for this call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from localrules.search.history import History, misc_from_doc
from localrules.search.settings import SearchSettings
from localrules.spaces import Space
from localrules.store import HistoryEntry, Trial, TrialStore


def suggestion_seed(experiment_seed: int, trial_id: int) -> int:
    """The seed of one trial's suggestion: a function of the experiment's seed and the id."""
    import numpy as np

    return int(np.random.SeedSequence([experiment_seed, trial_id]).generate_state(1)[0]
               % (2**31 - 1))


def trial_seed(experiment_seed: int, trial_id: int) -> int:
    """The seed a trial trains with (weights, data order, noise): distinct per trial."""
    return (experiment_seed * 100_003 + trial_id) % (2**31 - 1)


def hyperopt_misc(vals: Mapping[str, list[Any]], trial_id: int) -> dict[str, Any]:
    """hyperopt's misc (idxs, vals) of a trial: every label, [id] where active."""
    return {"idxs": {label: [trial_id] if v else [] for label, v in vals.items()},
            "vals": dict(vals)}


class Suggester:
    """Makes the trials of one experiment's search."""

    def __init__(self, store: TrialStore, experiment: str, space: Space,
                 settings: SearchSettings) -> None:
        self.store = store
        self.experiment = experiment
        self.space = space
        self.settings = settings

    @functools.cached_property
    def domain(self):
        from hyperopt.base import Domain

        return Domain(lambda params: 0.0, self.space.to_hyperopt())

    def trial(self, trial_id: int, params: Mapping[str, Any], misc: Mapping[str, Any]) -> Trial:
        """The queued trial document of a sample (params checked, config validated). Under a
        multi-fidelity search on the store engine, a TPE trial starts at its bracket's first
        rung; warm starts train fully (``search.fidelity``). Ray's scheduler keeps its own
        rungs."""
        config = self.space.config(params, seed=trial_seed(self.settings.seed, trial_id))
        fidelity = None
        if self.settings.engine == "store" and "warm_start" not in misc:
            fidelity = self.settings.fidelity.start(self.settings.seed, trial_id,
                                                    self.space.budget.epochs)
        return Trial(experiment=self.experiment, trial_id=trial_id, config=config.to_dict(),
                     params=self.space.check_params(params), misc=dict(misc), fidelity=fidelity)

    def pending_warm_starts(self, history: History) -> list[tuple[str, Mapping[str, Any]]]:
        """The warm starts not yet made into trials (none when the search turned them off)."""
        if not self.settings.warm_start:
            return []
        return [(label, params) for label, params in self.space.warm_starts
                if label not in history.warm_starts]

    def suggest(self, stored: Sequence[Trial | HistoryEntry] | History, n: int) -> list[Trial]:
        """``n`` new trials on top of the stored history (any reference runs in it are
        ignored): warm starts first, then TPE. A ``History`` given keeps them as pending."""
        from hyperopt import tpe

        tpe_settings = self.settings.tpe
        history = stored if isinstance(stored, History) else History.of(
            stored, self.space, tpe_settings.n_startup_jobs)
        warm = self.pending_warm_starts(history)
        new: list[Trial] = []
        for trial_id in self.store.allocate_trial_ids(self.experiment, n):
            if warm:
                label, params = warm.pop(0)
                misc = {**hyperopt_misc(self.space.vals_from_params(params), trial_id),
                        "startup": False, "warm_start": label}
            else:
                # hyperopt suggests at random while it holds fewer trials than n_startup_jobs
                # (queued and running ones count; failed ones, left out, do not).
                startup = len(history.trials.trials) < tpe_settings.n_startup_jobs
                (doc,) = tpe.suggest(
                    [trial_id], self.domain, history.trials,
                    suggestion_seed(self.settings.seed, trial_id),
                    prior_weight=tpe_settings.prior_weight,
                    n_startup_jobs=tpe_settings.n_startup_jobs,
                    n_EI_candidates=tpe_settings.n_ei_candidates, gamma=tpe_settings.gamma,
                    verbose=False)
                misc = {**misc_from_doc(doc), "startup": startup}
                params = self.space.params_from_vals(misc["vals"])
            trial = self.trial(trial_id, params, misc)
            new.append(trial)
            history.apply([HistoryEntry.of(trial)], local=True)
        return new

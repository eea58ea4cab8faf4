"""The Ray Tune searcher: the store engine's trial factory, handing Tune one trial at a time.

Every suggestion is made exactly as the store-queue controller makes it (``search.suggest``):
the reference runs the experiment still needs come first (``search.references``: a run that
finished elsewhere under the same key is copied into the store, never trained twice; one that
another process is training right now is left for a later suggestion), then the space's warm
starts, then hyperopt's TPE over the history the store holds, seeded per trial id from the
experiment's seed. The searcher keeps no model of its own: the history is the store's (the
store callback writes every trial when Ray starts it and its result when it ends; the searcher
reads the changes since its last suggestion into a ``search.history.History``, as the controller
does), plus the trials it has handed Tune that the callback has not recorded yet, which join the
history as pending. So the two engines suggest the same trials from the same history, and
nothing private to Ray or hyperopt is touched.

A trial's Ray config is ``{META: {experiment, trial_id, config, params, misc, reference}}``: the
trainable trains ``config``, the store callback records the rest. A reference run reports its
objective as ``reference_objective``, so ASHA never stops one.

The searcher is pickled with the Tuner (for ``Tuner.restore``) without the database URL (it may
hold a password, and the experiment's storage may be a shared bucket): the driver passes it in
the process environment (``STORE_URL_ENV``), so a resume uses the database the command names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from localrules.raytune import METRIC, MODE

log = logging.getLogger(__name__)

META = "localrules"
"""The key of a trial's Ray config under which the localrules trial lives."""
STORE_URL_ENV = "LOCALRULES_RAY_STORE_URL"
"""How the driver hands the database URL to the searcher and the callback it runs."""
LOCK_ENV = "LOCALRULES_RAY_LOCK"
"""How the driver hands its experiment lock (JSON: name, owner, seconds) to the callback."""


def driver_setting(name: str) -> str:
    """A per-run fact the driver put in its environment (``STORE_URL_ENV``, ``LOCK_ENV``)."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: the Ray engine's searcher and callback run "
                           "inside run_ray_search, which sets it")
    return value


def store_url() -> str:
    return driver_setting(STORE_URL_ENV)


def driver_lock() -> tuple[str, str, float]:
    """The run's experiment lock (name, owner, seconds), from the driver."""
    name, owner, seconds = json.loads(driver_setting(LOCK_ENV))
    return name, owner, float(seconds)


class StoreSearcher(Searcher):
    """Suggests one experiment's trials (references, warm starts, TPE) from the store."""

    def __init__(self, *, experiment: str, space_source: Mapping[str, Any],
                 budget: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.experiment = experiment
        self.space_source = dict(space_source)
        self.budget = dict(budget)
        self.settings = dict(settings)
        self.handed: dict[int, dict[str, Any]] = {}
        """Trials handed to Tune that the store may not hold yet, by id (their META)."""
        self.references_handed: set[tuple[str, int]] = set()
        """(rule, replicate) of the reference runs handed to Tune in this run: one that fails
        is not handed again until the search is run again (as the store engine does)."""
        self._store = None
        self._suggester = None
        self._history_kept = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_suggester": None, "_history_kept": None}

    @property
    def store(self):
        if self._store is None:
            from localrules.store import open_store

            self._store = open_store(store_url(), create=False)
        return self._store

    @property
    def suggester(self):
        if self._suggester is None:
            from localrules.search.settings import SearchSettings
            from localrules.search.suggest import Suggester
            from localrules.spaces import Budget, space_from_source

            space = space_from_source(self.space_source, Budget.from_dict(self.budget))
            self._suggester = Suggester(self.store, self.experiment, space,
                                        SearchSettings.from_dict(self.settings))
        return self._suggester

    # --- Searcher -----------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True

    def _history(self):
        """The store's history (its changes since the last call applied) plus the trials handed
        to Tune it does not hold yet (pending)."""
        from localrules.search.history import History
        from localrules.store import RUNNING, HistoryEntry

        if self._history_kept is None:
            self._history_kept = History(self.suggester.space,
                                          self.suggester.settings.tpe.n_startup_jobs)
        history = self._history_kept
        history.update(self.store, self.experiment)
        self.handed = {i: m for i, m in self.handed.items() if not history.shown(i)}
        history.apply((HistoryEntry(i, RUNNING, m["misc"], None, m.get("reference"))
                       for i, m in self.handed.items()), local=True)
        return history

    def _hand(self, trial) -> dict:
        meta = {"experiment": trial.experiment, "trial_id": trial.trial_id,
                "config": dict(trial.config), "params": dict(trial.params),
                "misc": dict(trial.misc), "reference": trial.reference}
        self.handed[trial.trial_id] = meta
        return {META: meta}

    def _waiting_references(self, history) -> list:
        """The planned reference runs the experiment lacks that were not handed to Tune yet."""
        from localrules.search.references import missing, planned

        suggester = self.suggester
        return [run for run in missing(history.references(),
                                       planned(suggester.space.budget, suggester.settings))
                if (run.rule, run.replicate) not in self.references_handed]

    def _reference(self, history):
        """The next reference run to hand Tune, or None. Finished copies go straight into the
        store; a run that another process holds the key of waits for a later suggestion."""
        from localrules.search.references import reference_trial
        from localrules.store import DONE
        from localrules.store.references import claim, finished_run

        owner, seconds = driver_lock()[1:]
        for run in self._waiting_references(history):
            if finished_run(self.store, run.key) is None \
                    and not claim(self.store, run.key, owner, seconds):
                log.info("reference %s is being trained elsewhere; it waits", run.rule)
                continue
            (trial_id,) = self.store.allocate_trial_ids(self.experiment, 1)
            trial = reference_trial(self.experiment, trial_id, run, self.store)
            if trial.state == DONE:
                self.store.add_trials([trial])
                log.info("reference %s reused from trial %d of %r", run.rule,
                         trial.result["reused_from"]["trial_id"],
                         trial.result["reused_from"]["experiment"])
                continue
            self.references_handed.add((run.rule, run.replicate))
            return trial
        return None

    def suggest(self, trial_id: str) -> dict | None:
        history = self._history()
        reference = self._reference(history)
        if reference is not None:
            log.info("Ray trial %s is reference %s, trial %d of %r", trial_id,
                     reference.reference["rule"], reference.trial_id, self.experiment)
            return self._hand(reference)
        if history.created >= self.suggester.settings.max_trials:
            # finished once no reference waits (read again: one may have been copied just now)
            return None if self._waiting_references(self._history()) else Searcher.FINISHED
        (trial,) = self.suggester.suggest(history, 1)
        log.info("Ray trial %s is trial %d of %r", trial_id, trial.trial_id, self.experiment)
        return self._hand(trial)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Nothing to learn here: the store callback records the result, and the next
        suggestion reads it from the store."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump({"handed": {str(i): m for i, m in self.handed.items()}}, f)

    def restore(self, checkpoint_path: str) -> None:
        """A rerun of an unfinished experiment: the trials handed before it that the store may
        not hold; a reference that failed is handed again, as the store engine queues it again
        on a rerun. (A Ray experiment that finished stays finished: Tune restores that too.)"""
        with open(checkpoint_path, encoding="utf-8") as f:
            self.handed = {int(i): m for i, m in json.load(f)["handed"].items()}
        self.references_handed = set()

"""One search API: open (or resume) an experiment, then run it on an engine.

    with engine, SearchSession.open(url, "wm-ad-1", space, {"max_trials": 16}, engine) as s:
        outcome = s.run(engine, on_status=print)

The CLI (``localrules search``), the tests and the benchmarks all go through here. Opening is
one procedure (``open_search``): the settings are resolved and validated first (the stored ones
on resume, else the defaults, with the changes on top), then the experiment is created or
checked to be the same search (space and budget), then the controller lock is taken, and only
under the lock are a resumed search's settings updated — so a second command cannot rewrite the
settings of a search another process is running. Readers use ``read_experiment``, which takes no
lock and writes nothing.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from localrules.search.controller import Controller, Status
from localrules.search.engine import Engine, SearchOutcome
from localrules.search.fidelity import settle_first_rung
from localrules.search.settings import (
    SearchSettings,
    check_same_search,
    new_experiment,
    settings_update,
)
from localrules.spaces import Budget, Space
from localrules.store import Experiment, Trial, TrialStore

log = logging.getLogger(__name__)

DEFAULT_MAX_TRIALS = 12
"""Trials of a new search that does not say (a few minutes per trial on digits)."""
MAX_STARTUP_TRIALS = 20
MERGED = ("tpe", "fidelity")
"""Settings given key by key: a resume's flags change those keys only."""


def read_experiment(url: str, name: str) -> Experiment | None:
    """The stored experiment, or None (also when there is no database yet). Takes no lock and
    writes nothing (the store is opened read-only)."""
    from localrules.store import open_store
    from localrules.validation import ParameterError

    try:
        store = open_store(url, read_only=True)
    except ParameterError:  # no database yet
        return None
    with store:
        return store.get_experiment(name)


def resolve_space(url: str, name: str, spec: str, budget: Budget) -> Space:
    """The space ``spec`` (a paper space's name or a YAML file) under ``budget``; when a
    resumed YAML search's file is gone, the space stored with the experiment."""
    from localrules.spaces import PAPER_SPACES, load_space, space_from_source

    if spec in PAPER_SPACES or not spec.endswith((".yaml", ".yml")) or Path(spec).exists():
        return load_space(spec, budget)
    existing = read_experiment(url, name)
    if existing is None or "yaml" not in existing.space_source:
        raise ValueError(f"cannot read space file {spec!r}: no such file")
    log.info("%s is gone; using the space stored with experiment %r", spec, name)
    return space_from_source(existing.space_source, budget)


def resolve_settings(stored: Mapping[str, Any] | None, changes: Mapping[str, Any] = (),
                     default_concurrency: int = 2, budget: Budget | None = None
                     ) -> SearchSettings:
    """The settings a search runs with: the stored ones on resume (else a new search's
    defaults: ``DEFAULT_MAX_TRIALS`` trials, a third of them random startup trials, up to
    ``MAX_STARTUP_TRIALS``), with ``changes`` on top (None means not given; ``tpe`` and
    ``fidelity`` are merged key by key). With the ``budget``, a new multi-fidelity search
    that does not give ``min_epochs`` starts its rungs past the budget's warm-up
    (``search.fidelity.first_rung_epochs``) and the rungs are checked to fit the budget.
    ValueError naming a bad value."""
    changes = dict(changes)
    if budget is not None and stored is None:
        changes["fidelity"] = settle_first_rung(changes.get("fidelity"), budget)
    given = {k: v for k, v in changes.items() if v is not None and k not in MERGED}
    merged = {name: {k: v for k, v in dict(changes.get(name) or {}).items() if v is not None}
              for name in MERGED}
    if stored is None:
        max_trials = given.get("max_trials", DEFAULT_MAX_TRIALS)
        startup = min(MAX_STARTUP_TRIALS, max(1, max_trials // 3)) \
            if isinstance(max_trials, int) else 1  # a bad max_trials is reported below
        base: dict[str, Any] = {"max_trials": max_trials, "seed": 0,
                                "concurrency": default_concurrency,
                                "tpe": {"n_startup_jobs": startup}}
    else:
        base = copy.deepcopy(dict(stored))
    base.update(given)
    for name, values in merged.items():
        base[name] = {**dict(base.get(name) or {}), **values}
    settings = SearchSettings.from_dict(base)
    if budget is not None:
        settings.fidelity.check_budget(budget.epochs)
    return settings


def _changes(settings: SearchSettings | Mapping[str, Any], engine: Engine | None
             ) -> tuple[dict[str, Any], int]:
    changes = settings.to_dict() if isinstance(settings, SearchSettings) else dict(settings)
    if engine is not None:
        changes.update(engine.recorded())
    return changes, 2 if engine is None else engine.default_concurrency


def open_search(store: TrialStore, name: str, space: Space,
                settings: SearchSettings | Mapping[str, Any] = (),
                engine: Engine | None = None, owner: str | None = None) -> Controller:
    """Create the experiment or resume it, and return its controller holding the experiment's
    lock. ``settings`` is a whole ``SearchSettings`` or the changes to resolve
    (``resolve_settings``); ``engine`` adds its recorded settings. ValueError on any mismatch
    (another space or budget under the name, a fixed setting changed); ``ControllerLocked``
    when another controller runs the search. A refused resume writes nothing."""
    from localrules.store.urls import redact

    changes, concurrency = _changes(settings, engine)
    resolve_settings(None, changes, concurrency, space.budget)  # checked before any write
    existing = store.get_experiment(name)
    if existing is not None:
        check_same_search(existing, space, store.url)
    chosen = resolve_settings(None if existing is None else existing.settings, changes,
                              concurrency, space.budget)
    # Another process may create it first: the stored one is what counts.
    experiment = existing or store.create_experiment(new_experiment(name, space, chosen))
    check_same_search(experiment, space, store.url)
    controller = Controller(store, experiment, space, chosen, owner=owner)
    controller.acquire_lock()  # before anything of a running search is touched
    try:
        update = settings_update(experiment, chosen)
    except ValueError:
        controller.release_lock()
        raise
    if update:  # fenced: only while this controller still holds the lock it took
        controller.experiment = store.update_settings(name, update, fence=controller.fence)
    log.info("%s experiment %r in %s: %s; %s", "resuming" if existing else "starting", name,
             redact(store.url), space.describe_budget(),
             chosen.fidelity.describe(space.budget.epochs))
    return controller


def open_experiment(store: TrialStore, name: str, space: Space,
                    settings: SearchSettings | Mapping[str, Any] = ()) -> Experiment:
    """Create or resume the experiment as ``open_search`` does, without keeping the lock: for
    code that prepares an experiment for a search run elsewhere."""
    controller = open_search(store, name, space, settings)
    controller.release_lock()
    return controller.experiment


class SearchSession:
    """An opened search: its store, its controller (holding the lock) and the database URL
    engines hand to their workers. Closing releases the lock and closes the store."""

    def __init__(self, url: str, store: TrialStore, controller: Controller) -> None:
        self.url = url
        self.store = store
        self.controller = controller

    @classmethod
    def open(cls, url: str, name: str, space: Space,
             settings: SearchSettings | Mapping[str, Any] = (),
             engine: Engine | None = None) -> SearchSession:
        """Open the database at ``url`` (created if missing) and the search in it
        (``open_search``). Bad settings are refused before the database is touched."""
        from localrules.store import open_store
        from localrules.store.documents import check_experiment_name
        from localrules.store.urls import sqlite_path
        from localrules.validation import ParameterError

        check_experiment_name(name)
        if url.startswith("sqlite:") and sqlite_path(url) == ":memory:":
            raise ParameterError("url", "{} sqlite:// is an in-memory database that the "
                                        "engine's worker processes cannot share; give a file, "
                                        "e.g. sqlite:///localrules.db")
        resolve_settings(None, *_changes(settings, engine), space.budget)  # before the database
        store = open_store(url)
        try:
            return cls(url, store, open_search(store, name, space, settings, engine))
        except BaseException:
            store.close()
            raise

    @property
    def experiment(self) -> Experiment:
        return self.controller.experiment

    @property
    def space(self) -> Space:
        return self.controller.space

    @property
    def settings(self) -> SearchSettings:
        return self.controller.settings

    def run(self, engine: Engine, on_status: Callable[[Status], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> SearchOutcome:
        """Run the search on ``engine`` until it is finished or ``should_stop()``."""
        if engine.name != self.settings.engine:
            raise ValueError(f"experiment {self.experiment.name!r} runs on the "
                             f"{self.settings.engine} engine, not {engine.name}")
        return engine.run(self, on_status, should_stop)

    def trials(self) -> list[Trial]:
        return self.store.trials(self.experiment.name)

    def close(self) -> None:
        try:
            self.controller.release_lock()
        finally:
            self.store.close()

    def __enter__(self) -> SearchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

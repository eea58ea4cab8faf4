"""Searches: a controller that fills an experiment's queue with hyperopt TPE suggestions from the
store's history, and the one API that opens a search and runs it on an engine
(``session.SearchSession``). Nothing here imports TensorFlow."""

from localrules.search.controller import Controller, Status, suggestion_seed, trial_seed
from localrules.search.engine import Engine, SearchOutcome
from localrules.search.fidelity import Fidelity
from localrules.search.session import (
    SearchSession,
    open_experiment,
    open_search,
    read_experiment,
    resolve_settings,
)
from localrules.search.settings import SearchSettings, TpeSettings

__all__ = [
    "Controller",
    "Engine",
    "Fidelity",
    "SearchOutcome",
    "SearchSession",
    "SearchSettings",
    "Status",
    "TpeSettings",
    "open_experiment",
    "open_search",
    "read_experiment",
    "resolve_settings",
    "suggestion_seed",
    "trial_seed",
]

"""Searches: a controller that fills an experiment's queue with hyperopt TPE suggestions from the
store's history. Nothing here imports TensorFlow."""

from localrules.search.controller import Controller, Status, suggestion_seed, trial_seed
from localrules.search.settings import SearchSettings, TpeSettings, open_experiment

__all__ = [
    "Controller",
    "SearchSettings",
    "Status",
    "TpeSettings",
    "open_experiment",
    "suggestion_seed",
    "trial_seed",
]

"""Search settings and opening an experiment: the edge where a search's inputs are validated.

An experiment's identity is its space and budget (the fingerprint): re-running a search with the
same name resumes it, and a different space or budget under that name is refused before anything
is written. The search settings a resume brings (max_trials, concurrency, seed, TPE) replace the
stored ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localrules.search.fidelity import Fidelity, scheduler_alias
from localrules.spaces import Space
from localrules.store import Experiment
from localrules.validation import (
    MAGNITUDE,
    REPLICATES,
    SEED,
    TRIALS,
    Limit,
    check_bool,
    dataclass_from_dict,
    shown,
)

GAMMA = Limit(0, 1, low_open=True, high_open=True)
CONCURRENCY = Limit(1, 10_000, integer=True)
MAX_REFERENCES = 64


@dataclass(frozen=True)
class TpeSettings:
    """hyperopt TPE's knobs (its defaults: 20 startup trials, γ 0.25, 24 EI candidates)."""

    n_startup_jobs: int = 20
    gamma: float = 0.25
    n_ei_candidates: int = 24
    prior_weight: float = 1.0

    def __post_init__(self) -> None:
        TRIALS.check("tpe n_startup_jobs", self.n_startup_jobs)
        TRIALS.check("tpe n_ei_candidates", self.n_ei_candidates)
        GAMMA.check("tpe gamma", self.gamma)
        if MAGNITUDE.check("tpe prior_weight", self.prior_weight) <= 0:
            raise ValueError(f"tpe prior_weight must be > 0, got {self.prior_weight}")


ENGINES = ("store", "ray")


@dataclass(frozen=True)
class SearchSettings:
    max_trials: int = 20
    concurrency: int = 2
    seed: int = 0
    max_attempts: int = 3
    """Reservations a trial may use before an expired lease fails it."""
    tpe: TpeSettings = field(default_factory=TpeSettings)
    objective: str = "top1"
    """Validation top-1 at the final epoch, maximised; a diverged trial scores chance level."""
    engine: str = "store"
    """What runs the trials: ``store`` (the controller queues them in the database for
    workers) or ``ray`` (Ray Tune schedules them; ``localrules.raytune``)."""
    ray: Mapping[str, Any] = field(default_factory=dict)
    """The Ray engine's options (resources per trial, max failures); empty for the store
    engine. Fixed on resume: a restored Tuner keeps its own. A ``scheduler`` in it (recorded by
    Ray searches before ``fidelity`` existed, or the alias ``--scheduler``) is read as the
    fidelity and dropped (``_read_scheduler``)."""
    references: tuple[str, ...] = ("bp", "fa")
    """Presets trained under the experiment's budget and seed beside the search (not counted
    in ``max_trials``); bp and fa give every trial its gap closed (``store.references``)."""
    reference_seeds: int = 1
    """Replicates of each reference (mean and SEM when more than one)."""
    warm_start: bool = True
    """Queue the space's warm starts (a paper space's published rule) before TPE's first
    suggestion."""
    fidelity: Fidelity = field(default_factory=Fidelity)
    """How trials spend epochs: all of the budget's (``none``), or rungs with successive
    halving (``asha``, ``hyperband``; ``search.fidelity``), whichever engine runs them (the
    store's controller, or Ray's ``AsyncHyperBandScheduler``). Fixed on resume."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        TRIALS.check("max_trials", self.max_trials)
        CONCURRENCY.check("concurrency", self.concurrency)
        SEED.check("seed", self.seed)
        REPLICATES.check("max_attempts", self.max_attempts)
        if self.objective != "top1":
            raise ValueError(f"unknown objective {self.objective!r}; valid: top1")
        object.__setattr__(self, "references", check_references(self.references))
        REPLICATES.check("reference_seeds", self.reference_seeds)
        check_bool("warm_start", self.warm_start)
        self._read_scheduler()

    def _read_scheduler(self) -> None:
        """``ray.scheduler`` read as the fidelity, and dropped from ``ray``: one vocabulary for
        both engines. ``asha`` is ``Fidelity("asha")`` (min-epochs 1, η 3: the rungs Ray's ASHA
        always had here), so an experiment that recorded ``ray: {scheduler: asha}`` and no
        fidelity resumes as fidelity asha, unchanged; ``none`` is no fidelity. ValueError when
        it conflicts with a fidelity given beside it."""
        if not isinstance(self.ray, Mapping) or "scheduler" not in self.ray:
            return
        ray = dict(self.ray)
        given = None if self.fidelity.kind == "none" else self.fidelity.kind
        kind = scheduler_alias(ray.pop("scheduler"), given)
        if kind != self.fidelity.kind:  # only none → asha: none has the defaults
            object.__setattr__(self, "fidelity", Fidelity(kind))
        object.__setattr__(self, "ray", ray)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSettings:
        return dataclass_from_dict(cls, data, "search settings")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["references"] = list(self.references)  # as stored: resumes compare like with like
        return data


def check_references(rules: object) -> tuple[str, ...]:
    """Reference rules: distinct preset names (ValueError listing the valid ones)."""
    from localrules.rules.presets import PRESETS

    if isinstance(rules, str) or not isinstance(rules, (list, tuple)) \
            or len(rules) > MAX_REFERENCES:
        raise ValueError(f"references must be a list of presets, got {shown(rules)}")
    for rule in rules:
        if not isinstance(rule, str) or rule not in PRESETS:
            raise ValueError(f"unknown reference rule {shown(rule)}; valid: none, or presets among "
                             f"{', '.join(PRESETS)}")
    if len(set(rules)) != len(rules):
        raise ValueError(f"a reference rule is repeated: {', '.join(rules)}")
    return tuple(rules)


FIXED = ("objective", "engine", "warm_start", "fidelity")
"""Settings a resumed search may not change. The rest (budget of trials, concurrency, seed, TPE
knobs) may for the store engine: the history is rebuilt from the store whatever produced it
(Ray's restored Tuner keeps its own, so a Ray search resumes with its stored settings)."""


def new_experiment(name: str, space: Space, settings: SearchSettings) -> Experiment:
    """The experiment document of a search (not yet stored)."""
    return Experiment(
        name=name, space_name=space.name, space_source=dict(space.source),
        fingerprint=space.fingerprint(), budget=space.budget.to_dict(),
        settings=settings.to_dict(), reading=space.reading,
    )


def check_same_search(existing: Experiment, space: Space, url: str) -> None:
    """Raise ValueError unless ``existing`` was created with this space and budget."""
    if existing.fingerprint == space.fingerprint():
        return
    budget = space.budget.to_dict()
    if existing.space_name != space.name:
        what = f"space {existing.space_name!r}, not {space.name!r}"
    elif dict(existing.budget) != budget:
        diff = {k: (existing.budget.get(k), v) for k, v in budget.items()
                if existing.budget.get(k) != v}
        what = "a different budget: " + ", ".join(f"{k} {a!r} → {b!r}"
                                                  for k, (a, b) in diff.items())
    else:
        what = f"a different definition of space {space.name!r}"
    raise ValueError(f"experiment {existing.name!r} in {url} was created with {what}; "
                     "resume it with the same settings or choose a new experiment name")


def settings_update(existing: Experiment, settings: SearchSettings) -> dict[str, Any]:
    """The settings a resume changes (ValueError if it changes a FIXED one)."""
    defaults = SearchSettings().to_dict()  # settings stored before a field existed
    # read as a search reads them (a Ray search's recorded scheduler is its fidelity)
    old = SearchSettings.from_dict({**defaults, **dict(existing.settings)}).to_dict()
    new = settings.to_dict()
    changed = [k for k in FIXED if old.get(k) != new[k]]
    if changed:
        raise ValueError(f"experiment {existing.name!r} was created with "
                         + ", ".join(f"{k}={old.get(k)!r}" for k in changed)
                         + "; this cannot change when a search resumes")
    update = {k: v for k, v in new.items() if old.get(k) != v}
    if update and new["engine"] == "ray":
        raise ValueError(f"experiment {existing.name!r} runs on Ray, which resumes with the "
                         "settings it started with; drop "
                         + ", ".join(f"{k}={v!r}" for k, v in update.items())
                         + " or choose a new experiment name")
    return update

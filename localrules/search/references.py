"""The reference runs an experiment needs, as trial documents: one factory for both engines.

For each requested rule (a preset) and replicate: the preset on the experiment's budget
(``Budget.preset_config``) with the replicate's seed. A run the experiment already holds (not
failed or cancelled) is left alone; one that finished elsewhere under the same key is copied as
finished (``result.reused_from``), never trained twice; the rest are new queued trials. The
store-queue controller queues them in its first round; the Ray engine's searcher hands them to
Tune before its first TPE trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from localrules import __version__
from localrules.search.settings import SearchSettings
from localrules.spaces import Budget
from localrules.store import CANCELLED, DONE, FAILED, HistoryEntry, Trial, TrialStore
from localrules.store.documents import now
from localrules.store.references import finished_run, reference_key, reference_marker, reused_result


def reference_seed(experiment_seed: int, replicate: int) -> int:
    """The seed reference replicate ``replicate`` trains with: a function of the experiment's
    seed only, so experiments with the same seed and budget share their references."""
    import numpy as np

    words = [experiment_seed, 0x5EED, replicate]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31 - 1))


@dataclasses.dataclass(frozen=True)
class Planned:
    """One reference run an experiment asks for."""

    rule: str
    replicate: int
    config: dict
    key: str


def planned(budget: Budget, settings: SearchSettings) -> list[Planned]:
    """Every reference run the settings ask for, rule by rule, replicate by replicate."""
    out = []
    for rule in settings.references:
        for replicate in range(settings.reference_seeds):
            config = budget.preset_config(rule, seed=reference_seed(settings.seed, replicate))
            data = config.to_dict()
            out.append(Planned(rule, replicate, data, reference_key(data, __version__)))
    return out


def missing(held: Iterable[Trial | HistoryEntry], plan: Sequence[Planned]) -> list[Planned]:
    """The planned runs the experiment does not hold yet (failed or cancelled ones count as
    missing, so they are tried again)."""
    have = {(t.reference.get("rule"), t.reference.get("replicate")) for t in held
            if t.reference is not None and t.state not in (FAILED, CANCELLED)}
    return [p for p in plan if (p.rule, p.replicate) not in have]


def reference_trial(experiment: str, trial_id: int, run: Planned,
                    store: TrialStore) -> Trial:
    """The trial document of a planned run: finished with a copied result when a run with its
    key finished elsewhere, else queued."""
    trial = Trial(experiment=experiment, trial_id=trial_id, config=run.config, params={},
                  misc={}, reference=reference_marker(run.rule, run.replicate, run.key))
    source = finished_run(store, run.key)
    if source is None:
        return trial
    t = now()
    return dataclasses.replace(trial, state=DONE, result=reused_result(source),
                               started_at=t, finished_at=t, updated_at=t)


def new_reference_trials(store: TrialStore, experiment: str, budget: Budget,
                         settings: SearchSettings) -> list[Trial]:
    """The reference trials ``experiment`` still needs (ids allocated, not yet stored)."""
    todo = missing(store.history(experiment), planned(budget, settings))
    ids = store.allocate_trial_ids(experiment, len(todo)) if todo else []
    return [reference_trial(experiment, i, run, store) for i, run in zip(ids, todo, strict=True)]

"""The Ray engine's searcher without a Ray cluster: it hands Tune the store engine's trials —
reference runs first (copied when they finished elsewhere, deferred while another process trains
their key), the warm start, then TPE on the store's history — and says when it is finished."""

from __future__ import annotations

import json
import os

import pytest

from localrules.search import SearchSettings, TpeSettings, open_experiment
from localrules.search.references import new_reference_trials
from localrules.search.suggest import Suggester
from localrules.spaces import default_budget, load_space
from localrules.store import DONE, RUNNING, open_store
from localrules.store.references import claim

if os.environ.get("LOCALRULES_REQUIRE_TOOLS"):  # CI installs the ray extra: no skipping there
    import ray  # noqa: F401
else:
    pytest.importorskip("ray", reason="the Ray engine's searcher needs the ray extra")

BUDGET = default_budget("digits", epochs=2, width=4)
LOCK = ("controller:r", "driver-1", 60.0)


@pytest.fixture
def driver(tmp_path, monkeypatch):
    """A store and the driver's environment the searcher reads (URL and lock)."""
    from localrules.raytune.searcher import LOCK_ENV, STORE_URL_ENV

    url = f"sqlite:///{tmp_path}/ray.db"
    monkeypatch.setenv(STORE_URL_ENV, url)
    monkeypatch.setenv(LOCK_ENV, json.dumps(list(LOCK)))
    with open_store(url) as store:
        yield store


def _searcher(store, name="r", max_trials=3, **settings):
    from localrules.raytune.searcher import StoreSearcher

    space = load_space("wm", BUDGET)
    settings = SearchSettings(max_trials=max_trials, engine="ray",
                              tpe=TpeSettings(n_startup_jobs=2), **settings)
    experiment = open_experiment(store, name, space, settings)
    return StoreSearcher(experiment=name, space_source=experiment.space_source,
                         budget=experiment.budget, settings=settings.to_dict()), space, settings


def _start(store, meta):
    """What the store callback does when Ray starts a trial."""
    from localrules.store import Trial

    store.add_trials([Trial(experiment=meta["experiment"], trial_id=meta["trial_id"],
                            config=meta["config"], params=meta["params"], misc=meta["misc"],
                            reference=meta["reference"], state=RUNNING, attempt=1,
                            worker="ray:x")])


def test_references_then_the_warm_start_then_tpe_then_finished(driver, tmp_path):
    from ray.tune.search import Searcher

    from localrules.raytune.searcher import META

    searcher, space, settings = _searcher(driver)
    handed = [searcher.suggest(f"ray-{i}")[META] for i in range(5)]
    assert [m["trial_id"] for m in handed] == [0, 1, 2, 3, 4]
    assert [(m["reference"] or {}).get("rule") for m in handed] == ["bp", "fa", None, None, None]
    assert handed[2]["misc"]["warm_start"] == "wm-tpe"
    assert handed[0]["config"] == BUDGET.preset_config("bp", seed=handed[0]["config"][
        "seed"]).to_dict()
    assert handed[3]["params"] == space.params_from_vals(handed[3]["misc"]["vals"])
    for meta in handed:
        _start(driver, meta)
    # no sixth: finished once max_trials search trials and the references are out
    assert searcher.suggest("ray-5") == Searcher.FINISHED
    # the store engine, from the same history (trials 0-2 pending), suggests the same trial 3
    with open_store(f"sqlite:///{tmp_path}/store-engine.db") as other:
        open_experiment(other, "r", space, settings)
        other.allocate_trial_ids("r", 3)
        other.add_trials([t for t in driver.trials("r") if t.trial_id < 3])
        (fourth,) = Suggester(other, "r", space, settings).suggest(other.history("r"), 1)
    assert fourth.trial_id == 3 and fourth.params == handed[3]["params"]
    assert fourth.config == handed[3]["config"] and fourth.misc == handed[3]["misc"]


def test_finished_references_are_copied_and_busy_ones_wait(driver):
    from ray.tune.search import Searcher

    from localrules.raytune.searcher import META

    # an earlier experiment trained bp already; another process is training its fa right now
    settings = SearchSettings()
    open_experiment(driver, "old", load_space("wm", BUDGET), settings)
    store_refs = new_reference_trials(driver, "old", BUDGET, settings)
    driver.add_trials(store_refs)
    bp = driver.reserve("w", 60, ["old"])
    driver.complete("old", bp.trial_id, bp.attempt, {"objective": 0.97})
    fa = driver.reserve("w", 60, ["old"])
    assert claim(driver, fa.reference["key"], "worker-elsewhere", 60)

    searcher, _, _ = _searcher(driver, max_trials=1, warm_start=False)
    first = searcher.suggest("ray-0")[META]
    assert first["reference"] is None  # bp copied, fa waiting: a search trial is handed
    copied = [t for t in driver.trials("r") if t.reference is not None]
    assert [(t.reference["rule"], t.state, t.result["reused_from"]["experiment"])
            for t in copied] == [("bp", DONE, "old")]
    _start(driver, first)
    assert searcher.suggest("ray-1") is None  # fa still trained elsewhere: wait
    driver.complete("old", fa.trial_id, fa.attempt, {"objective": 0.6})
    assert searcher.suggest("ray-2") == Searcher.FINISHED  # fa copied now
    assert [t.reference["rule"] for t in driver.trials("r") if t.reference] == ["bp", "fa"]


def test_the_searcher_survives_a_pickle_and_a_restore(driver, tmp_path):
    import pickle

    from localrules.raytune.searcher import META

    searcher, _, _ = _searcher(driver, references=())
    meta = searcher.suggest("ray-0")[META]
    assert meta["misc"]["warm_start"] == "wm-tpe"
    clone = pickle.loads(pickle.dumps(searcher))
    assert clone._store is None and "sqlite" not in pickle.dumps(searcher).decode("latin-1")
    path = tmp_path / "searcher.json"
    searcher.save(str(path))
    clone.restore(str(path))
    # the handed trial is pending in the clone's history: it is not handed twice
    second = clone.suggest("ray-1")[META]
    assert second["trial_id"] == 1 and "warm_start" not in second["misc"]

"""The Ray engine in the one multi-fidelity vocabulary, without a Ray cluster: the scheduler
Tune gets is built from the search's fidelity (the store engine's rungs), ``--scheduler asha``
is the alias of ``--fidelity asha`` (and what older Ray experiments recorded reads as it), the
store callback writes a store worker's rung fields, and bad input exits 2 before anything is
written."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from types import SimpleNamespace

import pytest

from localrules.cli.main import main
from localrules.search import SearchSettings, open_experiment
from localrules.search.fidelity import Fidelity
from localrules.spaces import default_budget, load_space
from localrules.store import DONE, open_store

if os.environ.get("LOCALRULES_REQUIRE_TOOLS"):  # CI installs the ray extra: no skipping there
    import ray  # noqa: F401
else:
    pytest.importorskip("ray", reason="the Ray engine needs the ray extra")

BUDGET = default_budget("digits", epochs=10, width=4)
LEGACY_RAY = {"resources": {"cpu": 1.0}, "max_failures": 2, "scheduler": "asha"}
"""What a Ray search given --scheduler asha recorded before --fidelity existed."""


def milestones(scheduler) -> list[list[int]]:
    """Each bracket's rung milestones in Ray's scheduler, lowest first."""
    return [sorted(m for m, _ in bracket._rungs) for bracket in scheduler._brackets]


# --- the scheduler -------------------------------------------------------------------------------
@pytest.mark.parametrize(("fidelity", "epochs", "brackets"), [
    (Fidelity("asha"), 10, [[1, 3, 9]]),
    (Fidelity("asha", min_epochs=2, reduction_factor=2), 20, [[2, 4, 8, 16]]),
    (Fidelity("hyperband"), 10, [[1, 3, 9], [3, 9], [9]]),
    (Fidelity("hyperband", min_epochs=2, reduction_factor=2, brackets=2), 20,
     [[2, 4, 8, 16], [4, 8, 16]]),
])
def test_rays_scheduler_has_the_store_engines_rungs(fidelity, epochs, brackets):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from localrules.raytune import METRIC
    from localrules.raytune.engine import ray_scheduler

    scheduler = ray_scheduler(fidelity, epochs)
    assert type(scheduler) is AsyncHyperBandScheduler
    assert (scheduler._time_attr, scheduler._metric, scheduler._metric_op) == (
        "training_iteration", METRIC, 1.0)
    assert (scheduler._max_t, scheduler._reduction_factor) == (epochs, fidelity.reduction_factor)
    assert milestones(scheduler) == brackets
    # bracket s: the store engine's rungs from s, the last (the budget: Ray's max_t) aside
    rungs = fidelity.rungs(epochs)
    assert len(brackets) == fidelity.bracket_count(epochs)
    assert brackets == [list(rungs[s:-1]) for s in range(len(brackets))]


def test_no_fidelity_no_scheduler_and_a_bad_one_is_a_valueerror():
    from localrules.raytune.engine import ray_scheduler

    assert ray_scheduler(Fidelity(), 10) is None
    with pytest.raises(ValueError, match="--min-epochs 4 must be below the budget's 4"):
        ray_scheduler(Fidelity("asha", min_epochs=4), 4)  # Ray would only assert


def test_the_tuner_gets_the_searchs_scheduler(tmp_path, monkeypatch):
    from localrules.raytune.engine import RayOptions, _new_tuner
    from localrules.raytune.searcher import LOCK_ENV, STORE_URL_ENV

    monkeypatch.setenv(STORE_URL_ENV, f"sqlite:///{tmp_path}/t.db")
    monkeypatch.setenv(LOCK_ENV, json.dumps(["controller:h", "driver", 60.0]))
    space = load_space("wm", BUDGET)
    options = RayOptions(storage=str(tmp_path / "ray"))
    settings = SearchSettings(engine="ray", ray=options.settings(),
                              fidelity=Fidelity("hyperband", brackets=2))
    with open_store(f"sqlite:///{tmp_path}/t.db") as store:
        experiment = open_experiment(store, "h", space, settings)
    tuner = _new_tuner(lambda config: None, experiment, space, settings, options)
    assert milestones(tuner._local_tuner._tune_config.scheduler) == [[1, 3, 9], [3, 9]]


# --- --scheduler asha: the alias, and what older experiments recorded -----------------------------
def test_a_recorded_scheduler_is_read_as_the_fidelity():
    legacy = SearchSettings.from_dict({"engine": "ray", "ray": LEGACY_RAY})
    assert legacy.fidelity == Fidelity("asha")  # min-epochs 1, η 3: Ray's ASHA here always
    assert legacy.ray == {"resources": {"cpu": 1.0}, "max_failures": 2}
    assert "scheduler" not in legacy.to_dict()["ray"]
    plain = SearchSettings.from_dict({"engine": "ray", "ray": {**LEGACY_RAY, "scheduler": "none"}})
    assert plain.fidelity == Fidelity()
    same = SearchSettings(engine="ray", ray=LEGACY_RAY, fidelity=Fidelity("asha", min_epochs=2))
    assert same.fidelity == Fidelity("asha", min_epochs=2)
    with pytest.raises(ValueError, match="--scheduler asha is the alias of --fidelity asha, "
                                         "which conflicts with --fidelity hyperband"):
        SearchSettings(engine="ray", ray=LEGACY_RAY, fidelity=Fidelity("hyperband"))
    with pytest.raises(ValueError, match="conflicts with --fidelity asha"):
        SearchSettings(engine="ray", ray={"scheduler": "none"}, fidelity=Fidelity("asha"))
    with pytest.raises(ValueError, match="unknown scheduler 'pbt'"):
        SearchSettings(engine="ray", ray={"scheduler": "pbt"})


def _legacy_experiment(store, name: str = "old"):
    """A Ray experiment stored as before --fidelity: ``ray.scheduler`` asha, no fidelity."""
    from localrules.store import Experiment

    space = load_space("wm", BUDGET)
    settings = SearchSettings(engine="ray").to_dict()
    del settings["fidelity"]
    settings["ray"] = dict(LEGACY_RAY)
    store.create_experiment(Experiment(
        name=name, space_name=space.name, space_source=dict(space.source),
        fingerprint=space.fingerprint(), budget=space.budget.to_dict(), settings=settings,
        reading=space.reading))
    return space, settings


def test_an_experiment_that_recorded_scheduler_asha_resumes_as_fidelity_asha(tmp_path):
    from localrules.raytune.engine import RayEngine
    from localrules.search.session import open_search

    with open_store(f"sqlite:///{tmp_path}/l.db") as store:
        space, stored = _legacy_experiment(store)
        # resumed as the command does: the Ray options it recorded, no flag given
        engine = RayEngine.resolve(str(tmp_path / "ray"), recorded=stored["ray"])
        assert engine.options.scheduler == "asha"
        controller = open_search(store, "old", space, {}, engine)
        assert controller.settings.fidelity == Fidelity("asha")
        controller.release_lock()
        assert dict(store.require_experiment("old").settings) == stored  # nothing rewritten
        # --scheduler asha again (the CLI also gives --fidelity asha): the same search
        engine = RayEngine.resolve(str(tmp_path / "ray"), given={"scheduler": "asha"},
                                   recorded=stored["ray"])
        open_search(store, "old", space, {"fidelity": {"kind": "asha"}}, engine).release_lock()
        # --scheduler none is a changed fidelity: refused, as changing the scheduler was
        engine = RayEngine.resolve(str(tmp_path / "ray"), given={"scheduler": "none"},
                                   recorded=stored["ray"])
        with pytest.raises(ValueError, match="created with fidelity="):
            open_search(store, "old", space, {"fidelity": {"kind": "none"}}, engine)
        assert dict(store.require_experiment("old").settings) == stored


def _args(*flags: str):
    from localrules.cli.main import build_parser

    return build_parser().parse_args(["search", "--space", "wm", "--experiment", "n",
                                      "--engine", "ray", *flags])


def test_a_new_search_given_scheduler_asha_records_fidelity_asha(tmp_path):
    from localrules.cli.search_cmd import settings_changes
    from localrules.raytune.engine import RayEngine
    from localrules.search.session import open_search

    args = _args("--scheduler", "asha", "--min-epochs", "2")
    engine = RayEngine.resolve(str(tmp_path / "ray"), given={"scheduler": args.scheduler})
    with open_store(f"sqlite:///{tmp_path}/n.db") as store:
        controller = open_search(store, "n", load_space("wm", BUDGET), settings_changes(args),
                                 engine)
        controller.release_lock()
        recorded = store.require_experiment("n").settings
    assert recorded["fidelity"] == {"kind": "asha", "min_epochs": 2, "reduction_factor": 3,
                                    "brackets": None}
    assert recorded["ray"] == {"resources": {"cpu": 1.0}, "max_failures": 2}
    assert settings_changes(_args("--fidelity", "asha", "--scheduler", "asha"))[
        "fidelity"]["kind"] == "asha"
    with pytest.raises(ValueError, match="conflicts with --fidelity hyperband"):
        settings_changes(_args("--fidelity", "hyperband", "--scheduler", "asha"))


# --- the store callback's result fields ----------------------------------------------------------
def fake_trial(last: dict, reference: dict | None = None, trial_id: int = 3):
    """What the callback reads of a Ray trial."""
    from localrules.raytune.searcher import META

    space = load_space("wm", BUDGET)
    params = space.warm_starts[0][1]
    meta = {"experiment": "r", "trial_id": trial_id, "params": params,
            "config": space.config(params, seed=trial_id).to_dict(),
            "misc": {"idxs": {}, "vals": {}}, "reference": reference}
    return SimpleNamespace(config={META: meta}, trial_id=f"ray{trial_id}", last_result=last,
                           checkpoint=None, error_file=None, is_finished=lambda: False)


def report(epoch: int, objective: float, epochs: int = 10, **extra) -> dict:
    """One epoch's report to Tune (trainable.py), with Tune's own keys."""
    return {"epoch": epoch, "epochs": epochs, "objective": objective, "top1": objective,
            "top5": 1.0, "eval_loss": 0.5, "diverged": False, "steps": 45 * epoch,
            "chance": 0.1, "training_iteration": epoch, "time_total_s": 3.0 * epoch, **extra}


def unstamped(rungs: list[dict]) -> list[dict]:
    """Rung results without the time each was seen."""
    return [{k: v for k, v in r.items() if k != "finished_at"} for r in rungs]


def test_rays_result_has_a_store_workers_fields():
    from localrules.raytune.callback import ray_result
    from localrules.results import TrialResult, at_rung

    asha = Fidelity("asha")
    stopped = ray_result(fake_trial(report(3, 0.4)), report(3, 0.4), asha,
                         seen=[{"rung": 0, "epochs": 1, "objective": 0.2}])
    assert (stopped["rung"], stopped["trial_epochs"], stopped["epochs"]) == (1, 3, 3)
    assert stopped["stopped_early"] is True
    assert [{k: r[k] for k in ("rung", "epochs", "objective")} for r in stopped["rungs"]] == [
        {"rung": 0, "epochs": 1, "objective": 0.2}, {"rung": 1, "epochs": 3, "objective": 0.4}]
    assert stopped["rungs"][1]["finished_at"] == pytest.approx(time.time(), abs=60)
    # a store worker's result for the same trial paused at rung 1: the same fields
    outcome = {f.name: stopped[f.name] for f in dataclasses.fields(TrialResult)
               if f.name not in TrialResult.OPTIONAL_FIELDS}
    worker = at_rung(TrialResult(**outcome).to_document(),
                     {"bracket": 0, "rung": 1, "epochs": 3},
                     {"rungs": [{"rung": 0, "epochs": 1, "objective": 0.2}]}, 10)
    assert set(stopped) - set(worker) == {"engine", "ray_trial_id"}
    assert {k: stopped[k] for k in ("rung", "stopped_early", "trial_epochs")} == {
        k: worker[k] for k in ("rung", "stopped_early", "trial_epochs")}
    assert [set(r) for r in stopped["rungs"]] == [set(r) for r in worker["rungs"]] and [
        r["objective"] for r in stopped["rungs"]] == [r["objective"] for r in worker["rungs"]]

    full = ray_result(fake_trial(report(10, 0.9)), report(10, 0.9), asha)
    assert (full["rung"], full["stopped_early"], full["trial_epochs"]) == (3, False, 10)
    assert unstamped(full["rungs"]) == [{"rung": 3, "epochs": 10, "objective": 0.9}]  # seen
    diverged = ray_result(fake_trial(report(2, 0.1, diverged=True)),
                          report(2, 0.1, diverged=True), asha)
    assert (diverged["rung"], diverged["stopped_early"]) == (0, False)
    assert "rungs" not in diverged  # epoch 2 is no rung, and none was seen
    hyperband = ray_result(fake_trial(report(9, 0.7)), report(9, 0.7), Fidelity("hyperband"))
    assert (hyperband["rung"], hyperband["stopped_early"]) == (2, True)


@pytest.mark.parametrize("fidelity", [Fidelity(), Fidelity("asha")])
def test_a_reference_or_a_plain_search_trial_has_trial_epochs_only(fidelity):
    from localrules.raytune.callback import REFERENCE_OBJECTIVE, ray_result

    last = report(10, 0.0, **{REFERENCE_OBJECTIVE: 0.95})
    reference = ray_result(fake_trial(last, reference={"rule": "bp", "key": "k"}), last,
                           fidelity)
    assert reference["trial_epochs"] == 10 and reference["objective"] == 0.95
    assert not {"rung", "stopped_early", "rungs"} & set(reference)
    plain = ray_result(fake_trial(report(4, 0.5)), report(4, 0.5), Fidelity())
    assert plain["trial_epochs"] == 4
    assert not {"rung", "stopped_early", "rungs"} & set(plain)


@pytest.fixture
def driver(tmp_path, monkeypatch):
    """A store and the driver's environment the callback reads (URL and lock)."""
    from localrules.raytune.searcher import LOCK_ENV, STORE_URL_ENV

    url = f"sqlite:///{tmp_path}/ray.db"
    monkeypatch.setenv(STORE_URL_ENV, url)
    monkeypatch.setenv(LOCK_ENV, json.dumps(["controller:r", "driver-1", 60.0]))
    with open_store(url) as store:
        yield store


@pytest.mark.parametrize("legacy", [False, True])
def test_the_callback_stores_the_rungs_a_ray_trial_reached(driver, legacy):
    """Start, an epoch's checkpoint at each of epochs 1-3, then Ray's scheduler stops the trial
    at rung 1 (3 epochs of 10): stored as a store worker's paused trial, its rung results kept
    in the progress as they came. An older experiment (``ray.scheduler`` asha) reads the same."""
    import pickle

    from localrules.raytune.callback import StoreCallback

    if legacy:
        _legacy_experiment(driver, "r")
    else:
        open_experiment(driver, "r", load_space("wm", BUDGET),
                        SearchSettings(engine="ray", fidelity=Fidelity("asha")))
    callback = pickle.loads(pickle.dumps(StoreCallback("r")))  # as a restored Tuner has it
    trial = fake_trial(report(1, 0.3))
    callback.on_trial_start(0, [trial], trial)
    for epoch, objective in [(1, 0.3), (2, 0.35), (3, 0.5)]:
        trial.last_result = report(epoch, objective)
        callback.on_checkpoint(epoch, [trial], trial, None)
        if epoch == 1:
            assert unstamped(driver.get_trial("r", 3).progress["rungs"]) == [
                {"rung": 0, "epochs": 1, "objective": 0.3}]
    callback.on_trial_complete(3, [trial], trial)
    stored = driver.get_trial("r", 3)
    assert stored.state == DONE and stored.worker == "ray:ray3"
    assert stored.result["rung"] == 1 and stored.result["trial_epochs"] == 3
    assert stored.result["stopped_early"] is True and stored.result["engine"] == "ray"
    assert unstamped(stored.result["rungs"]) == [{"rung": 0, "epochs": 1, "objective": 0.3},
                                                 {"rung": 1, "epochs": 3, "objective": 0.5}]
    callback.on_experiment_end([trial])


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--fidelity", "hyperband", "--brackets", "99"], "--brackets: must be an integer in [1, 64]"),
    (["--fidelity", "hyperband", "--brackets", "2"], "at most 1 brackets that halve"),
    (["--fidelity", "asha", "--min-epochs", "2"], "--min-epochs 2 must be below the budget's 2"),
    (["--scheduler", "asha", "--fidelity", "hyperband"],
     "--scheduler asha is the alias of --fidelity asha, which conflicts with --fidelity "
     "hyperband"),
    (["--scheduler", "none", "--fidelity", "asha"], "conflicts with --fidelity asha"),
])
def test_ray_fidelity_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    db = tmp_path / "x.db"
    assert main(["search", "--engine", "ray", "--space", "wm", "--experiment", "x", "--db",
                 f"sqlite:///{db}", "--artifacts", str(tmp_path / "ray"), "--epochs", "2",
                 "--width", "4", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not db.exists() and not (tmp_path / "ray").exists()

"""The Ray Tune engine on a local Ray instance: searches land in the store like the default
engine's, a failing trial is retried from its checkpoint, ``--fidelity asha`` (and its alias
``--scheduler asha``) stops a hopeless trial with the store engine's rung fields, a rerun
restores the experiment, and bad input exits 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from localrules.cli.main import main
from localrules.store import open_store

if os.environ.get("LOCALRULES_REQUIRE_TOOLS"):  # CI installs the ray extra: no skipping there
    import ray
else:
    ray = pytest.importorskip("ray", reason="the Ray engine's tests need the ray extra")

TESTS = Path(__file__).parent
pytestmark = pytest.mark.slow  # a local Ray instance and Ray trials: minutes
ASHA_SPACE = """\
name: lr-good-bad
description: a good and a hopeless learning rate, for early stopping
base: bp
fixed:                      # 45 steps an epoch at a constant rate: epoch 1 already tells
  run.batch_size: 32
  run.warmup_epochs: 0
  run.drop_epochs: []
  run.lr_reference_batch: null
parameters:
  run.task_lr: {choice: [0.1, 1.0e-7]}
"""


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the module, whose workers can import this test
    module; yields the folder where injected failures leave their markers (Ray's workers see
    the environment of ``ray.init``, not later changes)."""
    markers = tmp_path_factory.mktemp("markers")
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2",
                                       "LOCALRULES_TEST_MARKERS": str(markers)}})
    yield markers
    ray.shutdown()


def search(db: str, artifacts: Path, experiment: str, *extra: str) -> int:
    return main(["search", "--engine", "ray", "--space", "wm", "--experiment", experiment,
                 "--db", db, "--artifacts", str(artifacts), "--dataset", "digits", "--width",
                 "4", "--epochs", "2", *extra])


def ray_result_fields() -> set[str]:
    """Every field of the one result type (results.TrialResult, a worker's too) a search
    without a fidelity writes, the Ray engine's own included."""
    import dataclasses

    from localrules.results import TrialResult

    return {f.name for f in dataclasses.fields(TrialResult)} - {"rung", "stopped_early", "rungs"}


def test_a_ray_search_fills_the_store_like_the_default_engine(local_ray, mongodb_database_url,
                                                              tmp_path, capsys):
    from localrules.spaces import Budget, space_from_source

    db = mongodb_database_url
    assert search(db, tmp_path / "ray", "r", "--max-trials", "3", "--concurrency", "2",
                  "--startup-trials", "2") == 0
    out = capsys.readouterr().out
    assert "experiment r (Ray; 0 stopped early): 3 done, 0 failed of 3" in out
    assert "references: bp " in out and "warm start wm-tpe" in out
    with open_store(db, create=False) as store:
        experiment = store.require_experiment("r")
        every = store.trials("r")
    space = space_from_source(experiment.space_source, Budget.from_dict(experiment.budget))
    assert experiment.settings["engine"] == "ray"
    # the reference runs first (trained by Ray, reported apart from the objective ASHA ranks),
    # then the published rule, then TPE: the store engine's own trial factory
    assert [t.trial_id for t in every] == [0, 1, 2, 3, 4]
    references, trials = every[:2], every[2:]
    assert [t.reference["rule"] for t in references] == ["bp", "fa"]
    for t in references:
        assert t.state == "done" and t.worker.startswith("ray:") and t.params == {}
        assert t.result["objective"] == t.result["top1"] and t.result["epochs"] == 2
        assert t.config["run"]["epochs"] == 2 and t.config["width"] == 4
    assert "weight_angle_deg" in references[1].result and references[0].result[
        "weight_angle_deg"] == {}  # bp has no B of its own
    assert trials[0].misc["warm_start"] == "wm-tpe"
    assert [t.misc["startup"] for t in trials] == [False, True, False]
    for t in trials:
        assert t.state == "done" and t.attempt == 1 and t.worker.startswith("ray:")
        assert set(t.result) >= ray_result_fields() and t.result["engine"] == "ray"
        assert set(t.result["weight_angle_deg"]) and t.result["steps"] > 0
        assert t.result["epochs"] == t.result["trial_epochs"] == 2
        assert not {"rung", "stopped_early", "rungs"} & set(t.result)  # no fidelity
        assert t.result["objective"] == t.result["top1"] and 0 <= t.result["objective"] <= 1
        # The same documents as the store-queue engine: params, config and hyperopt misc agree.
        assert space.check_params(t.params) == t.params
        assert t.config == space.config(t.params, seed=t.config["seed"]).to_dict()
        assert space.params_from_vals(t.misc["vals"]) == t.params
        assert {"epoch", "epochs", "metrics", "run_dir"} <= set(t.progress)
        assert t.progress["metrics"]["objective"] == t.result["objective"]
        assert t.progress["run_dir"] == t.result["run_dir"]  # the epoch's own checkpoint
        # the curve too: the callback's progress goes through the same report_progress
        assert [p["epoch"] for p in t.curve_points()] == [1, 2]
        assert t.curve_points()[-1]["metrics"]["objective"] == t.result["objective"]
        run_dir = Path(t.result["run_dir"])
        assert run_dir.parent == tmp_path / "ray" / "r" / f"trial-{t.trial_id:05d}"
        assert (run_dir / "history.jsonl").is_file() and (run_dir / "weights").is_dir()
        assert t.started_at and t.finished_at
    # (that the store engine suggests the same trials from the same history is checked without
    # a cluster in tests/test_ray_searcher.py)

    # Every reader works unchanged: trials, the reports, the weights of a trial.
    assert main(["trials", "--experiment", "r", "--db", db, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert main(["report", "progress", "--experiment", "r", "--db", db]) == 0
    assert main(["report", "weights", "--experiment", "r", "--trial", "3", "--db", db,
                 "--out", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "weight_metrics.png").is_file()
    assert main(["report", "weights", "--experiment", "r", "--trial", "4", "--db", db,
                 "--artifacts", str(tmp_path / "ray"), "--out", str(tmp_path / "w2")]) == 0

    # Running it again restores the finished Ray experiment: nothing new is trained.
    assert search(db, tmp_path / "ray", "r") == 0
    with open_store(db, create=False) as store:
        assert len(store.trials("r")) == 5
    # Another Ray experiment under the same budget and seed reuses the references.
    assert search(db, tmp_path / "ray", "r2", "--max-trials", "1", "--no-warm-start") == 0
    with open_store(db, create=False) as store:
        copies = [t for t in store.trials("r2") if t.reference is not None]
    assert [(t.reference["rule"], t.result["reused_from"]) for t in copies] == [
        ("bp", {"experiment": "r", "trial_id": 0}), ("fa", {"experiment": "r", "trial_id": 1})]
    assert all(t.worker is None for t in copies)  # copied, never handed to Ray
    # A Ray experiment keeps its engine and its settings.
    capsys.readouterr()
    assert main(["search", "--space", "wm", "--experiment", "r", "--db", db, "--dataset",
                 "digits", "--width", "4", "--epochs", "2", "--workers", "0"]) == 2
    assert "was created with engine='ray'" in capsys.readouterr().err
    assert search(db, tmp_path / "ray", "r", "--max-trials", "5") == 2
    assert "runs on Ray, which resumes with the settings it started with" in \
        capsys.readouterr().err


def fail_once_after_first_epoch(config: dict) -> None:
    """The real trainable, with one injected failure right after epoch 1's checkpoint."""
    from ray import tune

    from localrules.raytune.trainable import train_ray_trial

    marker = Path(os.environ["LOCALRULES_TEST_MARKERS"]) / str(config["localrules"]["trial_id"])
    real = tune.report

    def report(metrics, checkpoint=None):
        real(metrics, checkpoint=checkpoint)
        if metrics["epoch"] == 1 and not marker.exists():
            marker.touch()
            raise RuntimeError("injected failure after epoch 1")

    tune.report = report
    try:
        train_ray_trial(config)
    finally:
        tune.report = real


def _api_search(db: str, tmp_path: Path, name: str, space_spec: str, *, epochs: int,
                trials: int, seed: int = 0, trainable=None,
                max_failures: int = 1, references: tuple[str, ...] = ()):
    """A search through the API the CLI uses: a session run on the Ray engine."""
    from localrules.raytune.engine import RayEngine, RayOptions
    from localrules.search import SearchSession, SearchSettings, TpeSettings
    from localrules.spaces import default_budget, load_space

    space = load_space(space_spec, default_budget("digits", width=4, epochs=epochs))
    options = RayOptions(storage=str(tmp_path / "ray"), max_failures=max_failures)
    settings = SearchSettings(max_trials=trials, concurrency=1, seed=seed, engine="ray",
                              ray=options.settings(), tpe=TpeSettings(n_startup_jobs=trials),
                              references=references, warm_start=False)
    engine = RayEngine(options, trainable=trainable)
    with engine, SearchSession.open(db, name, space, settings, engine) as session:
        outcome = session.run(engine)
    assert outcome.finished and outcome.note.startswith("Ray; ")
    return outcome.trials


def test_should_stop_interrupts_a_ray_search_which_then_resumes(local_ray, tmp_path):
    from localrules.raytune.engine import RayEngine, RayOptions
    from localrules.search import SearchSession, SearchSettings, TpeSettings
    from localrules.search.engine import INTERRUPTED
    from localrules.spaces import default_budget, load_space

    db = f"sqlite:///{tmp_path}/i.db"
    space = load_space("wm", default_budget("digits", width=4, epochs=2))
    options = RayOptions(storage=str(tmp_path / "ray"))
    settings = SearchSettings(max_trials=2, concurrency=1, engine="ray", ray=options.settings(),
                              tpe=TpeSettings(n_startup_jobs=2), references=(),
                              warm_start=False)
    engine = RayEngine(options)

    def an_epoch_is_reported() -> bool:
        with open_store(db, read_only=True) as store:
            return any((t.progress or {}).get("epoch") for t in store.trials("i"))

    with engine, SearchSession.open(db, "i", space, settings, engine) as session:
        stopped = session.run(engine, should_stop=an_epoch_is_reported)
    assert stopped.stopped == INTERRUPTED and not stopped.finished
    with engine, SearchSession.open(db, "i", space, settings, engine) as session:
        resumed = session.run(engine)
    assert resumed.finished
    assert [(t.state, t.result["epochs"]) for t in resumed.trials] == [("done", 2), ("done", 2)]


def test_sigterm_stops_a_ray_search_which_the_same_command_resumes(tmp_path,
                                                                   sigterm_after_epoch):
    import subprocess
    import sys

    db = f"sqlite:///{tmp_path}/t.db"
    cmd = [sys.executable, "-m", "localrules.cli.main", "search", "--engine", "ray", "--space",
           "wm", "--experiment", "term", "--db", db, "--max-trials", "1", "--concurrency", "1",
           "--epochs", "3", "--width", "4", "--references", "none", "--artifacts",
           str(tmp_path / "ray")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    code, err = sigterm_after_epoch(proc, db, "term", timeout=240)
    assert code == 143, err[-3000:]
    assert "run the same command to resume" in err
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open_store(db, read_only=True) as store:
        (trial,) = store.trials("term")
    assert trial.state == "done" and trial.result["epochs"] == 3
    assert trial.progress["metrics"]["resumed_from_epoch"] >= 1  # from its checkpoint


def test_a_failed_trial_is_retried_from_its_checkpoint(local_ray, tmp_path):
    markers = local_ray
    (trial,) = _api_search(f"sqlite:///{tmp_path}/f.db", tmp_path, "flaky", "wm", epochs=2,
                           trials=1, trainable=fail_once_after_first_epoch)
    assert (markers / "0").exists()  # it did fail once
    assert trial.state == "done" and trial.result["epochs"] == 2
    assert trial.progress["retries"] == 1
    assert trial.progress["metrics"]["resumed_from_epoch"] == 1  # not from scratch
    history = Path(trial.result["run_dir"], "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]


def always_fails(config: dict) -> None:
    raise RuntimeError(f"boom in trial {config['localrules']['trial_id']}")


def test_a_trial_out_of_retries_is_failed_with_rays_error(local_ray, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/e.db"
    (trial,) = _api_search(db, tmp_path, "broken", "wm", epochs=1, trials=1,
                           trainable=always_fails, max_failures=1)
    assert trial.state == "failed" and "boom in trial 0" in trial.error
    assert trial.progress["retries"] == 1 and trial.finished_at
    assert main(["trials", "--experiment", "broken", "--db", db]) == 0
    assert "failed" in capsys.readouterr().out


@pytest.mark.parametrize("fidelity", [["--fidelity", "asha"], ["--scheduler", "asha"]],
                         ids=["fidelity", "scheduler-alias"])
def test_asha_stops_a_hopeless_trial_early(local_ray, tmp_path, capsys, fidelity):
    spec = tmp_path / "lr.yaml"
    spec.write_text(ASHA_SPACE)
    db = f"sqlite:///{tmp_path}/a.db"
    # Seed 2 suggests the good rate, then the hopeless one. The fa reference, far below the
    # good rate after an epoch, is not ranked by ASHA: it trains all its epochs.
    assert main(["search", "--engine", "ray", "--space", str(spec), "--experiment", "asha",
                 "--db", db, "--artifacts", str(tmp_path / "ray"), "--epochs", "2",
                 "--width", "4", "--max-trials", "2", "--concurrency", "1", "--seed", "2",
                 "--startup-trials", "2", "--references", "fa", "--no-warm-start",
                 *fidelity]) == 0
    assert "(Ray; 1 stopped early)" in capsys.readouterr().out
    with open_store(db, read_only=True) as store:
        every = store.trials("asha")
        recorded = store.require_experiment("asha").settings
    assert recorded["fidelity"]["kind"] == "asha" and "scheduler" not in recorded["ray"]
    (fa,) = [t for t in every if t.reference is not None]
    assert fa.result["epochs"] == fa.result["trial_epochs"] == 2
    assert not {"rung", "stopped_early", "rungs"} & set(fa.result)  # trains fully, unranked
    trials = [t for t in every if t.reference is None]
    # the store engine's fields on every search trial (rungs at 1 and 2 epochs)
    for t in trials:
        assert t.state == "done" and t.fidelity is None  # Ray keeps its rungs in the driver
        assert {"rung", "trial_epochs", "stopped_early", "rungs"} <= set(t.result)
        assert t.result["trial_epochs"] == t.result["epochs"]
    first = trials[0]
    (hopeless,) = [t for t in trials[1:] if t.params["run.task_lr"] == 1e-7]
    assert first.params["run.task_lr"] == 0.1
    assert (first.result["epochs"], first.result["rung"], first.result["stopped_early"]) == (
        2, 1, False)
    assert [r["rung"] for r in first.result["rungs"]] == [0, 1]
    assert hopeless.state == "done" and hopeless.result["stopped_early"]
    assert (hopeless.result["epochs"], hopeless.result["rung"]) == (1, 0)
    (rung,) = hopeless.result["rungs"]  # stamped with when it was seen, as a worker's
    assert rung == {"rung": 0, "epochs": 1, "objective": hopeless.result["objective"],
                    "finished_at": pytest.approx(hopeless.finished_at, abs=120)}
    assert hopeless.result["objective"] < first.result["rungs"][0]["objective"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--resources-per-trial", "cpu=two"],
     "--resources-per-trial: cpu must be a number in (0, 1e+06], got 'two'"),
    (["--resources-per-trial", "gpu"], "'gpu' is not NAME=AMOUNT"),
    (["--resources-per-trial", "TPU=0"], "TPU must be a number in (0, 1e+06], got '0'"),
    (["--resources-per-trial", "cpu=inf"], "cpu must be a number in (0, 1e+06], got 'inf'"),
    (["--resources-per-trial", "cpu=1e9"], "cpu must be a number in (0, 1e+06], got '1e9'"),
    (["--max-failures", "-1"], "--max-failures: must be an integer in [0, 1000], got '-1'"),
    (["--max-failures", "nan"], "--max-failures: must be an integer in [0, 1000], got 'nan'"),
])
def test_ray_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    db = tmp_path / "x.db"
    assert search(f"sqlite:///{db}", tmp_path / "ray", "x", *extra) == 2
    assert message in capsys.readouterr().err
    assert not db.exists() and not (tmp_path / "ray").exists()


def test_a_missing_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    assert search(f"sqlite:///{tmp_path}/y.db", tmp_path / "ray", "y") == 2
    assert "pip install 'localrules[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "y.db").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--ray-address", "ray://head:10001"], "Ray Client"),
    (["--resources-per-trial", "cpu=1,gpu=1"], "the Ray cluster cannot give a trial gpu=1"),
    (["--resources-per-trial", "tpu=4"], "TPU, not tpu"),
])
def test_what_ray_cannot_do_is_refused_before_anything_is_written(local_ray, tmp_path, capsys,
                                                                  extra, message):
    assert search(f"sqlite:///{tmp_path}/z.db", tmp_path / "ray", "z", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "z.db").exists()


def test_a_store_experiment_is_not_taken_over_by_ray(local_ray, tmp_path, capsys):
    from localrules.search import SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space
    from localrules.store import Trial

    db = f"sqlite:///{tmp_path}/s.db"
    space = load_space("wm", default_budget("digits", width=4, epochs=2))
    with open_store(db) as store:
        open_experiment(store, "queued", space, SearchSettings())
    assert search(db, tmp_path / "ray", "queued") == 2
    assert "was created with engine='store'" in capsys.readouterr().err
    # A Ray experiment whose Ray state is gone (wrong --artifacts) is refused, not restarted.
    with open_store(db) as store:
        open_experiment(store, "lost", space, SearchSettings(engine="ray", ray={
            "resources": {"cpu": 1.0}, "max_failures": 2, "scheduler": "none"}))
        params = space.warm_starts[0][1]
        store.add_trials([Trial("lost", 0, space.config(params).to_dict(), params,
                                {"idxs": {}, "vals": {}})])
    assert search(db, tmp_path / "elsewhere", "lost") == 2
    assert "has 1 trial(s) in the store but no Ray experiment" in capsys.readouterr().err


def test_resources_parse_to_rays_form():
    from localrules.raytune.engine import check_resources

    assert check_resources("cpu=2,gpu=1") == {"cpu": 2.0, "gpu": 1.0}
    assert check_resources("CPU=8, TPU=4") == {"cpu": 8.0, "TPU": 4.0}
    assert check_resources({"cpu": 2, "TPU": 4}) == {"cpu": 2.0, "TPU": 4.0}
    with pytest.raises(ValueError, match="cpu given twice"):
        check_resources("cpu=1,CPU=2")

"""``localrules search``, ``trials`` and ``experiments``: an end-to-end search on digits with two
local workers, the query formats, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from localrules.cli.main import main
from localrules.store import open_store


def cli(*args: str, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "localrules.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow  # long evidence: `python -m pytest -m slow` (.ci/run) runs it
def test_search_on_digits_with_two_workers_then_trials_and_experiments(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    args = ["search", "--space", "wm-ad", "--experiment", "e2e", "--db", db, "--max-trials",
            "4", "--workers", "2", "--epochs", "1", "--width", "4", "--artifacts",
            str(tmp_path / "art"), "--poll", "0.5"]
    run = cli(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trial" in run.stdout and "objective" in run.stdout and "best trial" in run.stdout
    # the references and the gap closed are in the output, the warm start is named
    assert "references: bp " in run.stdout and ", fa " in run.stdout
    assert "gap closed" in run.stdout and "warm start wm-ad-tpe" in run.stdout
    # stderr (no terminal: no bar) has a line per finished trial, no worker's info line and
    # none of TensorFlow's or absl's (tests/test_terminal.py: the same under a terminal)
    assert "reference bp (trial 0) done: objective " in run.stderr
    assert "trial 5 done: objective " in run.stderr and "best so far: trial " in run.stderr
    assert "worker-" not in run.stderr and "training" not in run.stderr
    assert not [t for t in ("oneDNN", "absl", "I0000", "tensorflow/") if t in run.stderr]

    out = cli("trials", "--experiment", "e2e", "--db", db, "--format", "json")
    assert out.returncode == 0, out.stderr
    trials = json.loads(out.stdout)
    # two reference runs (bp, fa) beside the 4 search trials, the first the published rule
    assert [t["trial_id"] for t in trials] == [0, 1, 2, 3, 4, 5]
    assert [(t["reference"] or {}).get("rule") for t in trials] == ["bp", "fa", *[None] * 4]
    assert trials[2]["warm_start"] == "wm-ad-tpe"
    assert [t["warm_start"] for t in trials[3:]] == [None] * 3
    for t in trials:
        assert t["experiment"] == "e2e" and t["state"] == "done" and t["attempt"] == 1
        assert {"objective", "top1", "diverged", "epochs"} <= set(t["result"])
        assert t["result"]["epochs"] == 1
        assert 0.0 <= t["result"]["objective"] <= 1.0
        assert t["created_at"].endswith("+00:00") and t["finished_at"]
        assert (tmp_path / "art" / "e2e" / f"trial-{t['trial_id']:05d}" / "config.json").is_file()
        # after one epoch at width 4 bp and fa are too close for a gap: null, with the reason
        assert t["gap_closed"] is None and "too close" in t["gap_closed_reason"]
    for t in trials[2:]:
        assert "decay" in t["params"] and "batch_size" in t["params"]
    # the references train under the search's budget and have no params
    assert trials[0]["config"]["run"]["epochs"] == 1 and trials[0]["params"] == {}
    assert trials[0]["config"]["rule"]["kind"] == "backprop"
    # Two workers shared the work.
    assert len({t["worker"] for t in trials}) == 2

    table = cli("trials", "--experiment", "e2e", "--db", db, "--sort", "objective",
                "--limit", "2")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 6
    assert table.stdout.startswith("references: bp")
    # one epoch per search trial (the references are not the search's spending)
    assert "trial-epochs spent: 4; best full-budget objective so far: " in table.stdout
    csv = cli("trials", "--experiment", "e2e", "--db", db, "--format", "csv")
    header = csv.stdout.splitlines()[0].split(",")
    assert header[:3] == ["experiment", "trial_id", "state"]
    assert {"reference", "warm_start", "gap_closed"} <= set(header)
    exps = cli("experiments", "--db", db, "--format", "json")
    (exp,) = json.loads(exps.stdout)
    # counts are the search's trials; the references have their own field
    assert exp["name"] == "e2e" and exp["counts"]["done"] == 4 and exp["space"] == "wm-ad"
    assert set(exp["references"]) == {"bp", "fa"} and exp["references"]["bp"]["n"] == 1
    assert exp["references"]["fa"]["objective"] == trials[1]["result"]["objective"]
    assert exp["reading"] == "appendix" and "too close" in exp["gap_reason"]
    assert exp["trial_epochs"] == 4 and exp["paused"] == 0 and exp["fidelity"] == "none"
    assert all(t["trial_epochs"] == 1 and t["full_budget"] for t in trials)

    # Re-running the finished search resumes it: nothing new is trained.
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    with open_store(db) as store:
        assert len(store.trials("e2e")) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nope"], "unknown space 'nope'"),
        (["--space", "{yaml}"], "malformed YAML"),
        (["--space", "wm", "--db", "postgres://u:secret@h/db"], "unknown database URL scheme"),
        (["--space", "wm", "--max-trials", "0"],
         "--max-trials: must be an integer in [1, 1000000], got '0'"),
        (["--space", "wm", "--epochs", "-1"],
         "--epochs: must be an integer in [1, 10000], got '-1'"),
        (["--space", "wm", "--workers", "-1"], "--workers: must be an integer in [0, 256]"),
        (["--space", "wm", "--poll", "90"], "--poll: must be a number in (0, 30], got '90'"),
        (["--space", "wm", "--db", "sqlite://"], "in-memory database"),
        (["--space", "gone.yaml"], "cannot read space file 'gone.yaml'"),
        (["--space", "wm", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--space", "wm", "--dataset", "cifar10"], "needs --data-dir"),
        (["--space", "wm", "--experiment", "bad name!"], "invalid experiment name"),
        (["--space", "wm", "--references", "bp,xx"],
         "unknown reference rule 'xx'; valid: none, or presets among bp, fa, sa"),
        (["--space", "wm", "--references", "bp,bp"], "a reference rule is repeated"),
        (["--space", "wm", "--reference-seeds", "0"],
         "--reference-seeds: must be an integer in [1, 1000]"),
        (["--space", "wm", "--batch-sizes", "16,x"], "--batch-sizes must be a list"),
        (["--space", "wm", "--batch-sizes", "32,16"], "increasing"),
        (["--space", "wm", "--image-size", "0"], "--image-size: must be an integer in [8, 4096]"),
        (["--space", "{warm_malformed}"], "warm_start[0] must be a mapping of parameter names"),
        (["--space", "{warm_outside}"],
         "warm start 'warm_start[0]': parameter 'run.alignment_lr' must be a number in"),
        (["--space", "{warm_unknown}"], "warm start 'warm_start[0]': parameter 'sigma' is not"),
    ],
)
def test_search_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args,
                                                     message):
    monkeypatch.chdir(tmp_path)
    files = {"yaml": "parameters: [unclosed\n"}
    space = "parameters:\n  run.alignment_lr: {loguniform: [1.0e-4, 1.0e-2]}\nwarm_start:\n"
    files["warm_malformed"] = space + "  - 0.001\n"
    files["warm_outside"] = space + "  - {run.alignment_lr: 0.5}\n"
    files["warm_unknown"] = space + "  - {run.alignment_lr: 0.001, sigma: 0.5}\n"
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        args = [a.replace(f"{{{name}}}", str(tmp_path / f"{name}.yaml")) for a in args]
    if "--experiment" not in args:
        args += ["--experiment", "x"]
    assert main(["search", *args, "--workers", "0"] if "--workers" not in args
                else ["search", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "secret" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.yaml" for n in files)


def test_experiment_reused_with_another_space_exits_2_and_adds_nothing(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/s.db"
    common = ["--experiment", "e", "--db", db, "--workers", "0", "--max-trials", "1",
              "--poll", "0.01"]
    from localrules.search import SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space

    with open_store(db) as store:
        open_experiment(store, "e", load_space("wm", default_budget("digits")), SearchSettings())
    assert main(["search", "--space", "ia", *common]) == 2
    assert "created with space 'wm', not 'ia'" in capsys.readouterr().err
    assert main(["search", "--space", "wm", "--epochs", "7", *common]) == 2
    assert "epochs 10 → 7" in capsys.readouterr().err
    with open_store(db) as store:
        assert store.trials("e") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trials", "--experiment", "nope"], "no experiment 'nope'"),
        (["trials", "--experiment", "e", "--sort", "colour"], "unknown sort key 'colour'"),
        (["trials", "--experiment", "e", "--limit", "0"],
         "argument --limit: must be an integer in [1, 1000000], got '0'"),
    ],
)
def test_trials_bad_input_exits_2(tmp_path, capsys, args, message):
    db = f"sqlite:///{tmp_path}/s.db"
    from localrules.search import SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space

    with open_store(db) as store:
        open_experiment(store, "e", load_space("wm", default_budget("digits")), SearchSettings())
    assert main([*args, "--db", db]) == 2
    assert message in capsys.readouterr().err


def test_query_commands_never_create_a_database(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert main(["experiments", "--db", f"sqlite:///{missing}"]) == 2
    assert main(["trials", "--experiment", "e", "--db", f"sqlite:///{missing}"]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists()


def test_show_space_prints_the_tree(capsys):
    assert main(["search", "--space", "ia", "--experiment", "x", "--show-space"]) == 0
    out = capsys.readouterr().out
    assert "null: log-uniform" in out and "when noise = true" in out and "digits" in out


@pytest.mark.slow  # a killed or signalled process, or a second strategy: evidence, minutes
def test_sigterm_stops_the_search_and_hands_the_running_trial_back(tmp_path,
                                                                   sigterm_after_epoch):
    db = f"sqlite:///{tmp_path}/s.db"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localrules.cli.main", "search", "--space", "wm", "--experiment",
         "stop", "--db", db, "--max-trials", "1", "--workers", "1", "--epochs", "30",
         "--width", "4", "--artifacts", str(tmp_path / "art"), "--poll", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    code, err = sigterm_after_epoch(proc, db, "stop")
    assert code == 143, err[-3000:]
    assert "run the same command to resume" in err
    with open_store(db) as store:
        trial = store.get_trial("stop", 0)
    assert trial.state == "queued" and trial.attempt == 1 and trial.result is None
    assert (tmp_path / "art" / "stop" / "trial-00000" / "checkpoints").is_dir()


def test_a_resume_keeps_the_stored_settings_unless_a_flag_changes_them():
    from localrules.cli.main import build_parser
    from localrules.cli.search_cmd import settings_changes
    from localrules.search import resolve_settings

    def search_settings(args, stored):  # what `localrules search` resolves (2 local workers)
        return resolve_settings(stored, settings_changes(args), default_concurrency=2)

    def settings(*flags):
        args = build_parser().parse_args(["search", "--space", "wm", "--experiment", "e",
                                          *flags])
        return args

    stored = search_settings(settings("--max-trials", "60", "--seed", "3", "--gamma", "0.3"),
                             None).to_dict()
    assert stored["tpe"]["n_startup_jobs"] == 20 and stored["concurrency"] == 2
    resumed = search_settings(settings(), stored)
    assert resumed.to_dict() == stored
    more = search_settings(settings("--max-trials", "80"), stored)
    assert more.max_trials == 80 and more.seed == 3 and more.tpe.gamma == 0.3
    assert more.tpe.n_startup_jobs == 20
    fresh = search_settings(settings(), None)
    assert fresh.max_trials == 12 and fresh.tpe.n_startup_jobs == 4 and fresh.seed == 0
    assert fresh.references == ("bp", "fa") and fresh.reference_seeds == 1 and fresh.warm_start
    # references may grow on resume; --references none turns them off for a new search
    grown = search_settings(settings("--references", "bp,fa,sa", "--reference-seeds", "3"),
                            stored)
    assert grown.references == ("bp", "fa", "sa") and grown.reference_seeds == 3
    assert search_settings(settings("--references", "none"), None).references == ()
    assert not search_settings(settings("--no-warm-start"), None).warm_start


def test_a_yaml_search_resumes_from_the_stored_space_when_the_file_is_gone(tmp_path, capsys):
    from localrules.search import SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space

    path = tmp_path / "mine.yaml"
    path.write_text("parameters:\n  run.alignment_lr: {loguniform: [1e-5, 1e-2]}\n"
                    "base: ia-tpe\n")
    db = f"sqlite:///{tmp_path}/s.db"
    with open_store(db) as store:
        open_experiment(store, "y", load_space(str(path), default_budget("digits")),
                        SearchSettings())
    path.unlink()
    args = ["search", "--space", str(path), "--experiment", "y", "--db", db, "--show-space"]
    assert main(args) == 0
    assert "run.alignment_lr: log-uniform [1e-05, 0.01]" in capsys.readouterr().out
    assert main([*args[:4], "other", *args[5:]]) == 2
    assert "cannot read space file" in capsys.readouterr().err


def test_the_database_url_can_come_from_the_environment(tmp_path, monkeypatch, capsys):
    from localrules.search import SearchSettings, open_experiment
    from localrules.spaces import default_budget, load_space

    db = f"sqlite:///{tmp_path}/env.db"
    with open_store(db) as store:
        open_experiment(store, "from-env", load_space("wm", default_budget("digits")),
                        SearchSettings())
    monkeypatch.setenv("LOCALRULES_DB", db)
    monkeypatch.chdir(tmp_path)
    assert main(["experiments", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "from-env"

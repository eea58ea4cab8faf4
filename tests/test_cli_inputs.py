"""Every flag checked before work starts: a bad value is exit status 2 with a message naming the
flag, no traceback, and nothing written — no database file, no experiment, no run directory."""

from __future__ import annotations

import argparse

import pytest

from localrules.cli.main import build_parser, main


def _db(tmp_path):
    path = tmp_path / "t.db"
    return path, f"sqlite:///{path}"


def _refused(capsys, argv, flag, *also):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err, err
    for text in also:
        assert text in err, err
    return err


# --- class 1: non-finite and absurd numbers on the command line ----------------------------------
@pytest.mark.parametrize(("args", "flag"), [
    (["--lease", "nan"], "--lease"),
    (["--lease", "inf"], "--lease"),
    (["--lease", "1e400"], "--lease"),
    (["--poll", "NaN"], "--poll"),
    (["--poll", "-inf"], "--poll"),
    (["--idle-exit", "nan"], "--idle-exit"),
    (["--max-trials", str(2**64)], "--max-trials"),
    (["--max-trials", "1_000"], "--max-trials"),
])
def test_worker_refuses_non_finite_and_huge_numbers_before_opening_the_store(
        tmp_path, capsys, args, flag):
    """`worker --lease nan` stored a NULL lease (a dead worker's trial was never requeued);
    `--lease inf` killed the heartbeat thread."""
    path, url = _db(tmp_path)
    _refused(capsys, ["worker", "--db", url, "--spool", str(tmp_path / "spool"), *args],
             f"argument {flag}:")  # `--poll -inf`: argparse reads -inf as a flag, also exit 2
    assert not path.exists() and not (tmp_path / "spool").exists()


@pytest.mark.parametrize(("args", "flag"), [
    (["--poll", "nan"], "--poll"),
    (["--lease", "inf"], "--lease"),
    (["--seed", str(2**32)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--max-trials", str(2**63)], "--max-trials"),
    (["--concurrency", str(10**30)], "--concurrency"),
    (["--workers", "100000"], "--workers"),
    (["--width", "9" * 400], "--width"),
    (["--epochs", "1e9"], "--epochs"),
    (["--image-size", "nan"], "--image-size"),
    (["--gamma", "nan"], "--gamma"),
    (["--gamma", "1"], "--gamma"),
    (["--startup-trials", str(2**64)], "--startup-trials"),
    (["--ei-candidates", "inf"], "--ei-candidates"),
    (["--reference-seeds", str(2**31)], "--reference-seeds"),
    (["--max-failures", "nan"], "--max-failures"),
    (["--batch-sizes", f"16,{2**40}"], "--batch-sizes"),
    (["--batch-sizes", "16,nan"], "--batch-sizes"),
    (["--engine", "ray", "--resources-per-trial", "cpu=nan"], "--resources-per-trial"),
])
def test_search_refuses_bad_numbers_before_anything_is_written(tmp_path, capsys, monkeypatch,
                                                                args, flag):
    """`search --poll nan` wrote the experiment and its trials before failing; huge integers
    ended in tracebacks after the experiment was written."""
    monkeypatch.chdir(tmp_path)
    path, url = _db(tmp_path)
    _refused(capsys, ["search", "--space", "wm", "--experiment", "x", "--db", url,
                      "--workers", "0", *args], flag)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "flag"), [
    (["--seed", str(2**32)], "--seed"),
    (["--epochs", "nan"], "--epochs"),
    (["--batch-size", str(2**63)], "--batch-size"),
    (["--width", "0"], "--width"),
    (["--image-size", "inf"], "--image-size"),
    (["--set", "run.epochs=1e400"], "run.epochs"),
    (["--set", "run.task_lr=NaN"], "task_lr"),
    (["--set", f"seed={2**64}"], "seed"),
    (["--set", "rule.weights.amp=Infinity"], "amp"),
    (["--set", "run.drop_epochs=" + "[" * 50_000 + "]" * 50_000], "run.drop_epochs"),
])
def test_train_refuses_bad_numbers_before_the_run_directory_exists(tmp_path, capsys, args, flag):
    out = tmp_path / "run"
    _refused(capsys, ["train", "--out", str(out), "--no-progress", *args], flag)
    assert not out.exists()


@pytest.mark.parametrize(("argv", "flag"), [
    (["trials", "--experiment", "e", "--limit", "nan"], "--limit"),
    (["report", "importance", "--experiment", "e", "--top-fraction", "nan"], "--top-fraction"),
    (["report", "importance", "--experiment", "e", "--bootstrap", str(2**64)], "--bootstrap"),
    (["report", "importance", "--experiment", "e", "--seed", str(2**32)], "--seed"),
    (["report", "weights", "--experiment", "e", "--trial", str(2**63), "--out", "o"], "--trial"),
    (["report", "weights", "--run", "r", "--epochs", "1", "nan", "--out", "o"], "--epochs"),
    (["neural-fit", "--checkpoint", "c", "--stimuli", "s", "--responses", "r", "--categories",
      "c", "--out", "o", "--seed", str(2**32)], "--seed"),
    (["neural-fit", "--checkpoint", "c", "--stimuli", "s", "--responses", "r", "--categories",
      "c", "--out", "o", "--pca", "inf"], "--pca"),
    (["dynamics", "--x", "nan", "--lam", "1"], "--x"),
    (["dynamics", "--w1", "1", "--b", "1e400", "--alpha", "1", "--beta", "1"], "--b"),
])
def test_read_and_analysis_commands_refuse_bad_numbers(tmp_path, capsys, monkeypatch, argv,
                                                       flag):
    monkeypatch.chdir(tmp_path)
    _, url = _db(tmp_path)
    extra = ["--db", url] if argv[0] in ("trials", "report") and "--run" not in argv else []
    _refused(capsys, [*argv, *extra], f"argument {flag}: must be")
    assert list(tmp_path.iterdir()) == []


def _numeric_actions():
    """(command, flag, action) of every flag of every subcommand that takes a number."""
    def walk(parser: argparse.ArgumentParser, prefix: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prefix} {name}".strip())
            elif action.option_strings:
                yield prefix, action.option_strings[-1], action

    return list(walk(build_parser(), ""))


def test_every_numeric_flag_is_parsed_by_a_limit():
    """No flag reads a number with plain ``int``/``float`` (which take nan, inf and any size)."""
    actions = _numeric_actions()
    plain = [f"{c} {f}" for c, f, a in actions if a.type in (int, float)]
    assert plain == []
    limited = {f"{c} {f}" for c, f, a in actions if hasattr(a.type, "limit")}
    assert {"worker --lease", "search --poll", "search --seed", "train --epochs",
            "trials --limit", "report importance --top-fraction", "dynamics --x"} <= limited
    assert len(limited) >= 39


def test_the_papers_settings_pass_the_flags():
    args = build_parser().parse_args(
        ["train", "--out", "o", "--model", "resnet152v2", "--dataset", "imagenet", "--width", "64",
         "--image-size", "299", "--epochs", "100", "--batch-size", "4096",
         "--seed", str(2**32 - 1)])
    assert (args.epochs, args.batch_size, args.seed) == (100, 4096, 2**32 - 1)
    args = build_parser().parse_args(
        ["search", "--space", "wm-ad", "--experiment", "x", "--batch-sizes", "256,1024,2048,4096",
         "--max-trials", "1000", "--lease", "3600", "--poll", "30", "--gamma", "0.25"])
    assert (args.max_trials, args.lease, args.gamma) == (1000, 3600.0, 0.25)


# --- class 5: every flag validated ---------------------------------------------------------------
def test_trials_refuses_an_unknown_sort_key_before_opening_the_store(tmp_path, capsys):
    path, url = _db(tmp_path)  # no database: opening it would be the error reported
    _refused(capsys, ["trials", "--experiment", "e", "--db", url, "--sort", "colour"],
             "--sort: unknown sort key 'colour'", "valid: trial_id, objective")
    _refused(capsys, ["trials", "--experiment", "e", "--db", url, "--sort", "params."],
             "--sort: unknown sort key 'params.'")
    assert not path.exists()


def test_worker_refuses_an_unwritable_spool_before_opening_the_store(tmp_path, capsys):
    path, url = _db(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for spool in (blocker, blocker / "spool"):
        _refused(capsys, ["worker", "--db", url, "--spool", str(spool), "--idle-exit", "0"],
                 "--spool", "is not a writable directory")
    assert not path.exists() and blocker.read_text() == "not a directory"


def test_train_refuses_an_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    for out in (target, target / "run"):
        _refused(capsys, ["train", "--out", str(out), "--no-progress"], "--out",
                 "exists and is not a directory")
    assert target.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [target]


def test_artifacts_under_a_file_are_refused_before_the_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, url = _db(tmp_path)
    target = tmp_path / "file"
    target.write_text("keep me")
    _refused(capsys, ["worker", "--db", url, "--artifacts", str(target / "a"),
                      "--spool", str(tmp_path / "spool")], "--artifacts",
             "exists and is not a directory")
    _refused(capsys, ["search", "--space", "wm", "--experiment", "x", "--db", url,
                      "--workers", "0", "--artifacts", str(target)], "--artifacts")
    assert sorted(tmp_path.iterdir()) == [target]


def test_train_resume_refuses_a_directory_without_a_run(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "missing"):
        _refused(capsys, ["train", "--out", str(out), "--resume", "--no-progress"], "--resume",
                 "holds no run")
    assert list(empty.iterdir()) == [] and not (tmp_path / "missing").exists()


def test_train_resume_refuses_a_hostile_config_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    _refused(capsys, ["train", "--out", str(out), "--resume", "--no-progress"],
             "nested too deep")

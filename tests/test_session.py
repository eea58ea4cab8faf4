"""The search API the CLI, the tests and the benchmarks share: open or resume a search, run it on
an engine, read an experiment without writing."""

from __future__ import annotations

import pytest

from localrules.search import (
    SearchSession,
    SearchSettings,
    open_search,
    read_experiment,
    resolve_settings,
)
from localrules.search.controller import ControllerLocked
from localrules.search.engine import INTERRUPTED
from localrules.spaces import default_budget, load_space
from localrules.store import open_store
from localrules.validation import ParameterError
from localrules.worker.engine import StoreEngine

SPACE = load_space("wm-ad", default_budget("digits", width=4, epochs=1))


def test_a_session_runs_an_engine_until_told_to_stop(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    engine = StoreEngine(str(tmp_path / "art"), workers=0, poll_seconds=0.01)
    rounds = []
    with engine, SearchSession.open(url, "api", SPACE, {"max_trials": 5}, engine) as session:
        assert session.settings.concurrency == 4  # queue only: the engine's default
        outcome = session.run(engine, on_status=rounds.append, should_stop=lambda: True)
    assert outcome.stopped == INTERRUPTED and not outcome.finished
    # concurrency 4: the 2 references and 2 search trials
    assert len(rounds) == 1 and rounds[0].counts["queued"] == 4 and rounds[0].created == 2
    assert [t.state for t in outcome.trials] == ["queued"] * 4
    # the lock is released: another session resumes at once, with the stored settings
    with SearchSession.open(url, "api", SPACE, {}, engine) as again:
        assert again.settings.max_trials == 5 and again.controller.step() == 0


def test_a_resume_changes_no_setting_while_another_controller_runs_the_search(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    with SearchSession.open(url, "busy", SPACE, {"max_trials": 5}), open_store(url) as store:
        with pytest.raises(ControllerLocked, match="another controller"):
            open_search(store, "busy", SPACE, {"max_trials": 50})
        assert store.get_experiment("busy").settings["max_trials"] == 5


def test_bad_settings_and_a_memory_database_are_refused_before_anything_is_written(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(ValueError, match=r"max_trials must be an integer in \[1, 1000000\], got 0"):
        SearchSession.open(f"sqlite:///{db}", "bad", SPACE, {"max_trials": 0})
    with pytest.raises(ValueError, match="unknown search settings key 'trials'"):
        SearchSession.open(f"sqlite:///{db}", "bad", SPACE, {"trials": 3})
    with pytest.raises(ParameterError, match="in-memory database") as err:
        SearchSession.open("sqlite://", "bad", SPACE)
    assert err.value.parameter == "url"
    assert not db.exists()


def test_an_experiment_runs_on_the_engine_it_was_created_with(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    engine = StoreEngine(str(tmp_path / "art"), workers=0)
    settings = SearchSettings(engine="ray", max_trials=2)
    with SearchSession.open(url, "r", SPACE, settings) as session, \
            pytest.raises(ValueError, match="runs on the ray engine, not store"):
        session.run(engine)


def test_reading_an_experiment_takes_no_lock_and_creates_nothing(tmp_path):
    db = tmp_path / "s.db"
    assert read_experiment(f"sqlite:///{db}", "none") is None
    assert not db.exists()
    with SearchSession.open(f"sqlite:///{db}", "held", SPACE, {"max_trials": 3}):
        # read while a controller holds the search
        assert read_experiment(f"sqlite:///{db}", "held").settings["max_trials"] == 3


def test_settings_resolve_from_the_stored_ones_with_the_changes_on_top():
    new = resolve_settings(None, {"max_trials": 60, "tpe": {"gamma": 0.3, "n_ei_candidates":
                                                            None}})
    assert new.tpe.n_startup_jobs == 20 and new.tpe.gamma == 0.3 and new.concurrency == 2
    stored = new.to_dict()
    assert resolve_settings(stored, {"seed": None}) == new
    more = resolve_settings(stored, {"max_trials": 80, "tpe": {"n_startup_jobs": 5}})
    assert (more.max_trials, more.tpe.n_startup_jobs, more.tpe.gamma) == (80, 5, 0.3)


@pytest.mark.parametrize(("engine", "message"), [
    ({"workers": -1}, r"workers must be an integer in \[0, 256\]"),
    ({"poll_seconds": 0}, r"poll_seconds must be a number in \(0, 30\]"),
    ({"poll_seconds": 31.0}, r"poll_seconds must be a number in \(0, 30\], got 31.0"),
    ({"lease_seconds": -1.0}, r"lease_seconds must be a number in \(0, 604800\]"),
    ({"lease_seconds": float("nan")}, r"lease_seconds must be a number in \(0, 604800\]"),
    ({"lease_seconds": float("inf")}, r"lease_seconds must be a number in \(0, 604800\]"),
    ({"poll_seconds": float("nan")}, r"poll_seconds must be a number in \(0, 30\]"),
    ({"workers": 10**30}, r"workers must be an integer in \[0, 256\]"),
])
def test_the_store_engine_names_a_bad_parameter(tmp_path, engine, message):
    with pytest.raises(ParameterError, match=message) as err:
        StoreEngine(str(tmp_path), **engine)
    flag = "--" + err.value.parameter.replace("_", "-")
    assert err.value.naming(flag).startswith(flag)


def test_the_cli_names_the_flag_of_a_parameter():
    from localrules.cli.arguments import flag_of
    from localrules.cli.search_cmd import FLAGS

    assert flag_of("resources", FLAGS) == "--resources-per-trial"
    assert flag_of("url", FLAGS) == "--db" and flag_of("max_failures", FLAGS) == "--max-failures"
    assert ParameterError("resources", "cpu given twice").naming("--x") == "--x: cpu given twice"
    assert ParameterError("workers", "{} must be >= 0").naming("--workers") == \
        "--workers must be >= 0"


def test_readers_refuse_a_file_that_is_not_a_localrules_store_and_leave_it_alone(tmp_path,
                                                                                   capsys):
    import sqlite3

    from localrules.cli.main import main

    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (x)")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="is not a localrules store"):
        read_experiment(f"sqlite:///{path}", "e")
    assert main(["trials", "--experiment", "e", "--db", f"sqlite:///{path}"]) == 2
    assert "is not a localrules store" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_parameter_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ParameterError("workers", "{} must be >= 0")))
    assert (err.parameter, str(err)) == ("workers", "workers must be >= 0")

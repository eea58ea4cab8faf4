"""``localrules trials`` as a query: several experiments, --where, --columns, --sort/--limit
pushed down, csv/json/parquet, --out; and bad input (exit 2, nothing written or read)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from test_query_contract import EXPERIMENTS, _references, _trials
from test_store_contract import experiment_doc

from localrules.cli.main import main
from localrules.store import open_store


@pytest.fixture
def db(tmp_path) -> str:
    """A SQLite store holding the contract test's two experiments (qa with references)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with open_store(url) as store:
        for k, name in enumerate(EXPERIMENTS):
            store.create_experiment(experiment_doc(name, settings={
                "seed": 1, "max_trials": 50, "references": ["bp", "fa"] if k == 0 else []}))
            store.allocate_trial_ids(name, 40)
            store.add_trials(_trials(name, 36, seed=k) + (_references(name, 36) if k == 0
                                                            else []))
    return url


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_where_and_columns_over_two_experiments_as_csv(db, capsys):
    code, out, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--experiment",
                        "qb", "--where", "params.noise and state == done", "--columns",
                        "experiment,trial_id,params.sigma,result.top1,gap_closed",
                        "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and {r["experiment"] for r in rows} == {"qa", "qb"}
    assert list(rows[0]) == ["experiment", "trial_id", "params.sigma", "result.top1",
                             "gap_closed"]
    with open_store(db, read_only=True) as store:
        want = store.select(list(EXPERIMENTS), "params.noise == true and state == done").trials
    assert [(r["experiment"], int(r["trial_id"])) for r in rows] == \
        [(t.experiment, t.trial_id) for t in want]
    assert all(r["gap_closed"] == "" for r in rows if r["experiment"] == "qb")


def test_sort_and_limit_give_the_best_full_budget_trials_first(db, capsys):
    code, out, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--experiment",
                        "qb", "--sort", "objective", "--limit", "5", "--format", "json")
    assert code == 0
    got = json.loads(out)
    assert len(got) == 5 and all(t["full_budget"] for t in got)
    scores = [t["result"]["objective"] for t in got]
    assert scores == sorted(scores, reverse=True)
    with open_store(db, read_only=True) as store:
        best = max((t for name in EXPERIMENTS for t in store.trials(name)
                    if t.state == "done" and t.result and t.result.get("objective") is not None
                    and not t.result.get("stopped_early")), key=lambda t: t.objective)
    assert (got[0]["experiment"], got[0]["trial_id"]) == (best.experiment, best.trial_id)


def test_the_table_names_each_rows_experiment(db, capsys):
    code, out, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--experiment",
                        "qb", "--where", "trial_id < 2")
    assert code == 0
    assert "references (qa): bp" in out and "qb: trial-epochs spent" in out
    body = [line.split() for line in out.splitlines() if line.startswith(("qa ", "qb "))]
    assert [(r[0], r[1]) for r in body] == [("qa", "0"), ("qa", "1"), ("qb", "0"), ("qb", "1")]


def test_columns_as_a_table_and_json(db, capsys):
    code, out, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--where",
                        "reference == bp", "--columns", "trial_id,reference,created_at",
                        "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {"trial_id": 36, "reference": "bp", "created_at": json.loads(out)[0]["created_at"]},
        {"trial_id": 38, "reference": "bp", "created_at": json.loads(out)[1]["created_at"]}]
    assert json.loads(out)[0]["created_at"].endswith("+00:00")
    code, out, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--where",
                        "reference == bp", "--columns", "trial_id,reference")
    assert code == 0 and "36" in out and "bp" in out


def test_parquet_round_trips_with_dtypes(db, capsys, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out = tmp_path / "done.parquet"
    code, _, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--experiment", "qb",
                      "--state", "done", "--format", "parquet", "--out", str(out))
    assert code == 0
    frame = pd.read_parquet(out)
    with open_store(db, read_only=True) as store:
        want = store.query(list(EXPERIMENTS), where="state == done")
    assert list(frame["trial_id"]) == list(want["trial_id"])
    assert str(frame["params.noise"].dtype) == "boolean"
    assert str(frame["params.batch_size"].dtype) == "Int64"
    assert isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype)
    mixed = {json.loads(v) for v in frame["params.mode"].dropna()}  # several kinds: JSON
    assert mixed == set(want["params.mode"].dropna())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".done")]  # no temp left


@pytest.mark.parametrize("argv, message", [
    (["--where", "params.nosie == true"], "unknown field 'params.nosie'"),
    (["--where", "__import__('os').system('touch /tmp/x')"], "position"),
    (["--where", "params.noise == 'true"], "a string runs from one quote"),
    (["--where", "params.batch_size == true"], "holds numbers, not booleans"),
    (["--where", "result.gap_closed > 0.5 and"], "position 28"),
    (["--experiment", "nope"], "no experiment 'nope'"),
    (["--columns", "trial_id,params.nosie"], "unknown column 'params.nosie'"),
    (["--columns", " , "], "give column names"),
    (["--sort", "params.nosie"], "unknown sort key 'params.nosie'"),
    (["--sort", "bogus"], "unknown sort key 'bogus'"),
    (["--format", "parquet"], "give --out"),
])
def test_bad_queries_exit_2_and_print_nothing(db, capsys, argv, message):
    code, out, err = _run(capsys, "trials", "--db", db, "--experiment", "qa", *argv)
    assert code == 2 and out == "" and message in err


def test_out_never_overwrites_and_a_missing_directory_is_refused(db, capsys, tmp_path):
    existing = tmp_path / "kept.csv"
    existing.write_text("yesterday's export\n")
    code, _, err = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--format", "csv",
                        "--out", str(existing))
    assert code == 2 and "exists" in err and existing.read_text() == "yesterday's export\n"
    code, _, err = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--format", "csv",
                        "--out", str(tmp_path / "no" / "such.csv"))
    assert code == 2 and "does not exist" in err
    code, _, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--format", "csv",
                      "--out", str(tmp_path / "new.csv"))
    assert code == 0 and (tmp_path / "new.csv").read_text().startswith("experiment,")


def test_the_query_never_writes_the_database(db, capsys):
    path = Path(db[len("sqlite:///"):])
    before = path.read_bytes()
    _run(capsys, "trials", "--db", db, "--experiment", "qa", "--where", "params.noise",
         "--sort", "gap_closed", "--limit", "3")
    _run(capsys, "trials", "--db", db, "--experiment", "qa", "--where", "params.nosie")
    assert path.read_bytes() == before


def test_parquet_without_pyarrow_is_a_clear_message(db, capsys, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    code, out, err = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--format",
                          "parquet", "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and out == "" and "pip install 'localrules[parquet]'" in err
    assert not (tmp_path / "x.parquet").exists()


def test_the_python_api_gives_the_commands_rows(db, capsys):
    import localrules

    where = "params.sigma >= 0.5 or result.gap_closed > 0.5"
    with localrules.open_store(db, read_only=True) as store:
        frame = store.query(["qa", "qb"], where=where, columns=["experiment", "trial_id"])
    code, out, _ = _run(capsys, "trials", "--db", db, "--experiment", "qa", "--experiment",
                        "qb", "--where", where, "--columns", "experiment,trial_id",
                        "--format", "json")
    assert code == 0 and len(frame) > 0
    assert [(r["experiment"], r["trial_id"]) for r in json.loads(out)] == \
        list(zip(frame["experiment"], frame["trial_id"], strict=True))

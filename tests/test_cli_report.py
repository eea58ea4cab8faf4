"""``localrules report importance`` on a stored search (every backend) with a planted effect,
failures and divergences included; bad input exits 2."""

from __future__ import annotations

import csv
import io
import json

import pytest

from localrules.cli.main import main
from localrules.search import Controller, SearchSettings, TpeSettings, open_experiment
from localrules.spaces import default_budget, load_space
from localrules.store import open_store


def planted(params) -> float:
    """Input noise on is worth +0.2; alternation is worth nothing."""
    return 0.4 + 0.2 * params["noise"] + 0.01 * (params["batch_size"] == 16)


def fill(url: str, n: int = 40) -> None:
    space = load_space("wm-ad", default_budget("digits"))
    settings = SearchSettings(max_trials=n, concurrency=n, tpe=TpeSettings(n_startup_jobs=n))
    with open_store(url) as store:
        c = Controller(store, open_experiment(store, "imp", space, settings), space, settings)
        c.step()
        for i in range(n):
            t = store.reserve("w", 60)
            if i == 0:
                store.fail("imp", t.trial_id, t.attempt, "out of memory")
            elif i == 1:
                store.complete("imp", t.trial_id, t.attempt,
                               {"objective": 0.1, "top1": None, "diverged": True})
            elif i < n - 2:
                store.complete("imp", t.trial_id, t.attempt,
                               {"objective": planted(t.params), "diverged": False})
            # the last two stay running: the search is still going


def test_importance_ranks_the_planted_parameter_first(store_url, tmp_path, capsys):
    fill(store_url)
    out = tmp_path / "report"
    assert main(["report", "importance", "--experiment", "imp", "--db", store_url,
                 "--format", "json", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["parameter"] == "noise"
    assert data[0]["importance"] > 0.1 and data[0]["importance_se"] < 0.1
    assert {"batch_size", "delay_epochs", "alternate"} <= {d["parameter"] for d in data}
    assert sum(lv["n"] for lv in data[0]["levels"]) == 37  # 36 done + 1 diverged
    assert json.loads((out / "importance.json").read_text()) == data
    rows = list(csv.DictReader(io.StringIO((out / "importance.csv").read_text())))
    assert rows[0]["parameter"] == "noise" and {"level", "mean", "sem", "n"} <= set(rows[0])

    assert main(["report", "importance", "--experiment", "imp", "--db", store_url]) == 0
    text = capsys.readouterr().out
    assert "37 trials analysed" in text and "1 failed" in text and "2 running" in text
    assert "1 diverged" in text and text.splitlines()[3].startswith("noise")


@pytest.mark.parametrize(("args", "message"), [
    (["--experiment", "nope"], "no experiment 'nope'"),
    (["--experiment", "empty"], "no finished trial"),
    (["--experiment", "empty", "--top-fraction", "1.5"], "--top-fraction must be in (0, 1]"),
])
def test_report_bad_input_exits_2(tmp_path, capsys, args, message):
    url = f"sqlite:///{tmp_path}/r.db"
    with open_store(url) as store:
        open_experiment(store, "empty", load_space("wm", default_budget("digits")),
                        SearchSettings())
    assert main(["report", "importance", "--db", url, *args]) == 2
    assert message in capsys.readouterr().err


def test_report_never_creates_a_database(tmp_path, capsys):
    missing = tmp_path / "none.db"
    assert main(["report", "importance", "--experiment", "x", "--db",
                 f"sqlite:///{missing}"]) == 2
    assert not missing.exists()


def test_model_importance_report(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/m.db"
    fill(url)
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--method",
                 "model", "--bootstrap", "4", "--format", "json", "--out",
                 str(tmp_path / "out")]) == 0
    data = json.loads(capsys.readouterr().out)
    # σ exists only with noise on, so its column carries the noise choice too: the two share
    # the planted effect (see analysis/model_importance.py).
    assert {data[0]["parameter"], data[1]["parameter"]} == {"noise", "sigma"}
    assert data[0]["importance"] > 0
    assert {d["parameter"] for d in data} >= {"sigma", "decay", "amp_decay_ratio"}
    assert (tmp_path / "out" / "model_importance.json").is_file()
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--method",
                 "model", "--bootstrap", "1"]) == 2

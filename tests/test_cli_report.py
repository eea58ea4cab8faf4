"""``localrules report importance`` on a stored search (every backend) with a planted effect,
failures and divergences included; bad input exits 2."""

from __future__ import annotations

import csv
import io
import itertools
import json

import pytest

from localrules.analysis.importance import experiment_importance
from localrules.analysis.plots import importance_figure, progress_figure
from localrules.analysis.progress import experiment_progress
from localrules.cli.main import main
from localrules.search import Controller, SearchSettings, TpeSettings, open_experiment
from localrules.spaces import default_budget, load_space
from localrules.store import open_store


def png_size(path) -> tuple[int, int]:
    """(height, width) of a PNG file, after checking it decodes as one."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path).shape[:2]


def planted(params) -> float:
    """Input noise on is worth +0.2; alternation is worth nothing."""
    return 0.4 + 0.2 * params["noise"] + 0.01 * (params["batch_size"] == 16)


def fill(url: str, n: int = 40, name: str = "imp", startup: int | None = None,
         keep=lambda params: True, references: dict[str, float] | None = None,
         warm_start: bool = False) -> None:
    """A stored search of ``n`` trials: the first fails, the second diverges, the last two are
    still running, the rest score ``planted`` (or fail, where ``keep(params)`` is false). With
    ``references`` ({rule: objective}), those reference runs finished beside them."""
    space = load_space("wm-ad", default_budget("digits"))
    settings = SearchSettings(max_trials=n, concurrency=n, warm_start=warm_start,
                              tpe=TpeSettings(n_startup_jobs=startup or n),
                              references=tuple(references or ()))
    with open_store(url) as store:
        c = Controller(store, open_experiment(store, name, space, settings), space, settings)
        if references:
            from localrules.search.references import new_reference_trials

            store.add_trials(new_reference_trials(store, name, space.budget, settings))
            while (ref := store.reserve("w", 60)) is not None:
                store.complete(name, ref.trial_id, ref.attempt,
                               {"objective": references[ref.reference["rule"]]})
        c.step()
        for i in range(n):
            t = store.reserve("w", 60)
            if i == 0 or (i < n - 2 and not keep(t.params)):
                store.fail(name, t.trial_id, t.attempt, "out of memory")
            elif i == 1:
                store.complete(name, t.trial_id, t.attempt,
                               {"objective": 0.1, "top1": None, "diverged": True})
            elif i < n - 2:
                store.complete(name, t.trial_id, t.attempt,
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
    assert png_size(out / "importance.png")[0] > 200 and png_size(out / "progress.png")[1] > 400
    assert "<img" in (out / "report.html").read_text()

    assert main(["report", "importance", "--experiment", "imp", "--db", store_url]) == 0
    text = capsys.readouterr().out
    assert "37 trials analysed" in text and "1 failed" in text and "2 running" in text
    assert "1 diverged" in text and text.splitlines()[3].startswith("noise")


@pytest.mark.parametrize(("report", "args", "message"), [
    ("importance", ["--experiment", "nope"], "no experiment 'nope'"),
    ("importance", ["--experiment", "empty"], "no finished trial"),
    ("importance", ["--experiment", "empty", "--top-fraction", "1.5"],
     "--top-fraction: must be a number in (0, 1]"),
    ("progress", ["--experiment", "nope"], "no experiment 'nope'"),
    ("progress", ["--experiment", "empty"], "experiment 'empty' has no search trials yet"),
    ("progress", ["--experiment", "empty", "--experiment", "empty"], "--experiment repeated"),
])
def test_report_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, report, args, message):
    url = f"sqlite:///{tmp_path}/r.db"
    with open_store(url) as store:
        open_experiment(store, "empty", load_space("wm", default_budget("digits")),
                        SearchSettings())
    out = tmp_path / "o"
    assert main(["report", report, "--db", url, "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


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


def test_html_report_renders_in_headless_chromium(tmp_path, capsys, render_html):
    url = f"sqlite:///{tmp_path}/h.db"
    fill(url, references={"bp": 0.7, "fa": 0.3})
    out = tmp_path / "report"
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--out",
                 str(out)]) == 0
    page = render_html(out / "report.html")
    assert page["errors"] == []
    assert len(page["images"]) == 2 and all(ok and width > 400 for ok, width in page["images"])
    n_choices = len(json.loads((out / "importance.json").read_text()))
    assert page["tables"] == [2, n_choices]  # the references, then the importance table
    assert "Experiment imp" in page["text"] and "1 failed" in page["text"]
    assert "2 running" in page["text"] and "1 diverged" in page["text"]
    # the best trial (planted 0.61) closes (0.61 − 0.3) / (0.7 − 0.3) of the gap
    assert "gap closed 0.775" in page["text"] and "References" in page["text"]


def test_references_and_the_warm_start_in_the_reports(store_url, tmp_path, capsys):
    """Reference runs are lines beside the search, not trials in it; the warm start is a
    star; the importance leaves the references out."""
    fill(store_url, n=10, references={"bp": 0.7, "fa": 0.3}, warm_start=True)
    assert main(["report", "progress", "--experiment", "imp", "--db", store_url, "--format",
                 "json", "--out", str(tmp_path / "p")]) == 0
    (progress,) = json.loads(capsys.readouterr().out)
    trials = progress["trials"]
    assert len(trials) == 10 and trials[0]["warm_start"] == "wm-ad-tpe"
    assert progress["references"]["rules"]["bp"]["objective"] == 0.7
    assert progress["references"]["gap"] == pytest.approx(0.4)
    scored = [t for t in trials if t["objective"] is not None and not t["diverged"]]
    for t in scored:
        assert t["gap_closed"] == pytest.approx((t["objective"] - 0.3) / 0.4)
    assert trials[-1]["best_gap_closed"] == pytest.approx((trials[-1]["best_so_far"] - 0.3)
                                                          / 0.4)
    with open_store(store_url, create=False) as store:
        fig = progress_figure([experiment_progress(store, "imp")])
        report = experiment_importance(store, "imp")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "imp: bp reference (0.7)" in legend and "imp: fa reference (0.3)" in legend
    from localrules.analysis.progress import SearchProgress, TrialPoint

    started = SearchProgress("x", (TrialPoint(0, "done", 0.9, False, False, "ia-tpe"),
                                   TrialPoint(1, "done", 0.6, False, True)), 1)
    legend = [t.get_text() for t in progress_figure([started]).axes[0].get_legend().get_texts()]
    assert "x: warm start (ia-tpe)" in legend
    assert report.analysed == 7 and sum(report.counts.values()) == 10  # no reference in it
    assert main(["report", "progress", "--experiment", "imp", "--db", store_url]) == 0
    text = capsys.readouterr().out
    assert "imp references: bp 0.7000, fa 0.3000; gap bp − fa 0.4000" in text


def test_figures_have_the_expected_axes(tmp_path):
    url = f"sqlite:///{tmp_path}/f.db"
    fill(url)
    with open_store(url, create=False) as store:
        report = experiment_importance(store, "imp")
        progress = experiment_progress(store, "imp")
    fig = importance_figure(report.parameters, "imp")
    left, right = fig.axes
    assert left.get_xlabel().startswith("importance: best − worst level mean")
    assert right.get_xlabel() == "objective: mean ± SEM per level"
    labels = [t.get_text() for t in left.get_yticklabels()]
    assert labels[-1] == "noise"  # most important on top
    fig = progress_figure([progress])
    (ax,) = fig.axes
    assert ax.get_xlabel() == "trial number (creation order)"
    assert ax.get_ylabel() == "objective (validation top-1)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "random startup phase" in legend
    assert "imp: no objective (3)" in legend and "imp: diverged (1)" in legend


def test_no_estimable_parameter_still_gives_a_report(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/few.db"
    fill(url, n=5)  # 2 planted trials: no level has 2 trials on both sides
    out = tmp_path / "r"
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--out",
                 str(out)]) == 0
    assert "not estimable" in capsys.readouterr().out
    assert not (out / "importance.png").exists() and (out / "progress.png").is_file()
    assert "No parameter has an estimable importance yet" in (out / "report.html").read_text()


def test_a_parameter_can_be_asked_for_and_one_that_never_varied_is_an_error(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/p.db"
    fill(url, keep=lambda params: params["noise"])  # every finished trial has noise on
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--parameter",
                 "alternate", "--format", "json"]) == 0
    assert [d["parameter"] for d in json.loads(capsys.readouterr().out)] == ["alternate"]
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--parameter",
                 "noise", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "parameter 'noise' never varied: all" in err and "is active have true" in err
    assert not (tmp_path / "o").exists()
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--parameter",
                 "sigma"]) == 2
    assert "unknown categorical parameter(s) 'sigma'; valid: " in capsys.readouterr().err


def test_progress_compares_experiments(store_url, tmp_path, capsys):
    fill(store_url, n=12, name="a", startup=5)
    fill(store_url, n=8, name="b", startup=4)
    out = tmp_path / "p"
    assert main(["report", "progress", "--experiment", "a", "--experiment", "b", "--db",
                 store_url, "--format", "json", "--out", str(out)]) == 0
    a, b = json.loads(capsys.readouterr().out)
    assert a["experiment"] == "a" and a["n_startup"] == 5 and b["n_startup"] == 4
    trials = a["trials"]
    # Suggested in one round: queued trials count in hyperopt's history, so the first five.
    assert [t["startup"] for t in trials] == [True] * 5 + [False] * 7
    assert [t["trial"] for t in trials] == list(range(1, 13))
    assert trials[0]["state"] == "failed" and trials[0]["objective"] is None
    assert trials[1]["diverged"] and trials[1]["objective"] == 0.1
    assert [t["state"] for t in trials[-2:]] == ["running", "running"]
    best = [t["best_so_far"] for t in trials]
    assert best[0] is None and best[1] == 0.1
    scored = [t["objective"] for t in trials if t["objective"] is not None]
    assert best[-1] == max(scored) and all(x <= y for x, y in itertools.pairwise(best[1:]))
    rows = list(csv.DictReader(io.StringIO((out / "progress.csv").read_text())))
    assert len(rows) == 20 and rows[0]["experiment"] == "a"
    assert png_size(out / "progress.png")[1] > 400
    assert main(["report", "progress", "--experiment", "a", "--db", store_url]) == 0
    text = capsys.readouterr().out
    assert "1 failed" in text and "2 running" in text and "best in startup" in text


def test_the_startup_phase_outlasts_its_trial_count_when_trials_fail(tmp_path):
    """hyperopt counts the trials in its history; failed ones leave it, so random suggestions
    go on past n_startup_jobs trial numbers — and the report follows what was recorded."""
    url = f"sqlite:///{tmp_path}/s.db"
    space = load_space("wm", default_budget("digits"))
    settings = SearchSettings(max_trials=6, concurrency=3, tpe=TpeSettings(n_startup_jobs=3),
                              warm_start=False, references=())
    with open_store(url) as store:
        c = Controller(store, open_experiment(store, "s", space, settings), space, settings)
        c.step()  # trials 0-2: random
        for i in range(3):
            t = store.reserve("w", 60)
            if i == 0:
                store.fail("s", t.trial_id, t.attempt, "boom")
            else:
                store.complete("s", t.trial_id, t.attempt, {"objective": 0.5})
        c.step()  # 2 usable trials < 3: trial 3 is still random; then TPE
        progress = experiment_progress(store, "s")
    flags = [p.startup for p in progress.points]
    assert flags[:4] == [True, True, True, True] and not any(flags[4:])
    fig = progress_figure([progress])
    (span,) = [p for p in fig.axes[0].patches if p.get_label() == "random startup phase"]
    assert span.get_x() == 0.5 and span.get_width() == 4


def test_the_spread_of_tied_levels_still_has_an_error(tmp_path):
    from localrules.analysis.importance import parameter_importance

    p = parameter_importance("x", [("a", 0.5), ("a", 0.5), ("b", 0.4), ("b", 0.6)])
    assert p.importance == 0.0 and p.importance_se == pytest.approx(0.1)


def test_csv_keeps_a_parameter_never_active(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/c.db"
    fill(url, keep=lambda params: not params["noise"])  # sigma is never active
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--format",
                 "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert any(r["parameter"] == "noise" and "never varied" in r["note"] for r in rows)


def test_model_importance_takes_parameters_and_writes_files(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/mp.db"
    fill(url, keep=lambda params: params["noise"])
    out = tmp_path / "m"
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--method",
                 "model", "--bootstrap", "3", "--parameter", "decay", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 failed" in text or "failed" in text
    assert "diverged" in text and "decay" in text and "alternate" not in text
    assert (out / "model_importance.json").is_file() and (out / "model_importance.csv").is_file()
    assert main(["report", "importance", "--experiment", "imp", "--db", url, "--method",
                 "model", "--parameter", "noise"]) == 2
    assert "parameter 'noise' never varied" in capsys.readouterr().err

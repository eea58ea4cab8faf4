"""A self-contained HTML report of an experiment: trial counts, the importance figure and table,
and the search's progress.

One file with the figures inlined as PNG data URIs and no script, so it can be mailed, attached
to a lab notebook or opened from a cluster's shared disk without a server. Every value that
comes from the database is escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence

from localrules import __version__
from localrules.analysis.importance import ImportanceReport
from localrules.store.documents import counts_text
from localrules.store.references import References

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #8a5a00; } .meta { color: #666; font-size: 0.85em; }
"""


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _figure(title: str, png: bytes | None, missing: str) -> str:
    if png is None:
        return f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(missing)}</p>"
    data = base64.b64encode(png).decode("ascii")
    return (f"<h2>{html.escape(title)}</h2>"
            f"<img alt='{html.escape(title, quote=True)}' src='data:image/png;base64,{data}'>")


def _importance_table(report: ImportanceReport) -> str:
    rows = []
    for p in report.parameters:
        levels = "<br>".join(
            f"{html.escape(json.dumps(lv.level))}: {_num(lv.mean)}"
            f"{'' if lv.sem is None else ' ± ' + _num(lv.sem)} (n={lv.n})" for lv in p.levels)
        se = "" if p.importance_se is None else f" ± {_num(p.importance_se)}"
        rows.append(
            f"<tr><td>{html.escape(p.parameter)}</td>"
            f"<td class='num'>{_num(p.importance)}{se}</td><td class='num'>{p.n_active}</td>"
            f"<td>{levels}</td><td class='note'>{html.escape(p.note)}</td></tr>")
    return ("<table><thead><tr><th>parameter</th><th>importance ± SE</th><th>n</th>"
            "<th>level: mean ± SEM (n)</th><th>note</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _references_html(references: References, best: float | None) -> str:
    """The reference runs and the best trial's gap closed (or why there is none)."""
    if not references.levels:
        return ("<h2>References</h2><p class='note'>This experiment trains no reference runs "
                "(references: none), so no gap closed is reported.</p>")
    rows = "".join(
        f"<tr><td>{html.escape(rule)}</td><td class='num'>{_num(level.objective)}"
        f"{'' if level.sem is None else ' ± ' + _num(level.sem)}</td>"
        f"<td class='num'>{level.n}</td><td class='num'>{level.pending}</td></tr>"
        for rule, level in references.levels.items())
    gap = references.gap_closed(best)
    reason = references.gap_reason()
    closed = (f"<p>Best trial: objective {_num(best)}, <b>gap closed {_num(gap, 3)}</b> "
              "(0 at feedback alignment, 1 at backprop: (objective − fa) / (bp − fa)).</p>"
              if gap is not None else
              f"<p class='note'>No gap closed: {html.escape(reason or 'no finished trial')}.</p>")
    return ("<h2>References</h2><p>Rules trained under the experiment's budget and seed "
            "(mean ± SEM over replicates):</p><table><thead><tr><th>rule</th>"
            "<th>objective</th><th>n</th><th>pending</th></tr></thead><tbody>" + rows
            + "</tbody></table>" + closed)


def importance_html(report: ImportanceReport, figures: Mapping[str, bytes | None],
                    store_url: str, references: References | None = None,
                    best_so_far: Sequence[float | None] = ()) -> str:
    """The report page. ``figures`` maps "importance" and "progress" to PNG bytes (None when a
    figure could not be drawn, e.g. nothing estimable yet: the page says so); ``references``
    and the best-so-far curve give the references section and the best trial's gap closed."""
    counts = counts_text(report.counts)
    scope = ("all finished trials" if report.top_fraction is None
             else f"the best {report.top_fraction:g} of finished trials")
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>Experiment {html.escape(report.experiment)}</h1>",
        f"<p class='meta'>{html.escape(store_url)} · generated {when} · "
        f"localrules {html.escape(__version__)}</p>",
        f"<p>Trials: {html.escape(counts)}; {report.diverged} diverged (counted at chance "
        f"level); {report.analysed} analysed ({html.escape(scope)}). Failed and unfinished "
        "trials have no objective and are not analysed; reference runs are not search trials "
        "and are not analysed either."
        + (f" {report.paused} trial(s) paused at a lower rung of the multi-fidelity search "
           "are left out: only full-budget results are analysed." if report.paused else "")
        + "</p>",
        _references_html(references or References({}, ()),
                         next((b for b in reversed(best_so_far) if b is not None), None)),
        _figure("Importance of categorical metaparameters", figures.get("importance"),
                "No parameter has an estimable importance yet: each needs two levels with two "
                "or more finished trials."),
        "<p>Importance is the difference between the best and the worst level mean of the "
        "objective, with the standard error √(SEM<sub>best</sub>² + SEM<sub>worst</sub>²). "
        "Conditional parameters are analysed only over the trials where they are active.</p>",
        _importance_table(report),
        _figure("Search progress", figures.get("progress"), "No trial to plot yet."),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>localrules: {html.escape(report.experiment)}</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")

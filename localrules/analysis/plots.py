"""Figures for the reports: importance with error bars (Fig. S2), search progress, weight
metrics over training (Fig. S4), forward–backward weight scatters (Fig. S3) and neural-fit
scores per layer.

Figures are built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no global
figure state, no backend switch, nothing opened on a screen, so reports run on headless
controllers and inside tests. Each function returns the figure; ``save_png`` writes it and
``png_bytes`` gives the bytes an HTML report embeds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from localrules.analysis.importance import ParameterImportance
    from localrules.analysis.neural_fit import LayerFit
    from localrules.analysis.progress import SearchProgress

DPI = 150


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def png_bytes(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _level_label(level: Any) -> str:
    if isinstance(level, bool):
        return "on" if level else "off"
    return str(level)


def importance_figure(parameters: Sequence[ParameterImportance], title: str = "") -> Figure:
    """Fig. S2's style: each categorical parameter's importance (the spread of the objective's
    level means) with its standard error, most important on top; beside it, every level's mean
    ± SEM with its n, so a reader sees which level wins and on how many trials."""
    estimable = [p for p in parameters if p.estimable]
    if not estimable:
        raise ValueError("no parameter has an estimable importance (each needs 2 levels with "
                         "2 or more finished trials)")
    rows = estimable[::-1]  # barh draws bottom-up: most important on top
    fig = _figure(11, 1.2 + 0.45 * len(rows))
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=[1, 1.4])
    y = list(range(len(rows)))
    left.barh(y, [p.importance for p in rows], xerr=[p.importance_se for p in rows],
              color="#4c72b0", capsize=3, error_kw={"elinewidth": 1})
    left.set_yticks(y, [p.parameter for p in rows])
    left.set_xlabel("importance: best − worst level mean (± SE)")
    left.axvline(0, color="black", linewidth=0.6)
    markers = "os^Dv<>p"
    for row, p in zip(y, rows, strict=True):
        k = len(p.levels)
        for j, lv in enumerate(p.levels):
            offset = (j - (k - 1) / 2) * min(0.6 / max(k - 1, 1), 0.25)
            right.errorbar(lv.mean, row + offset, xerr=lv.sem or 0.0, fmt=markers[j % 8],
                           color=f"C{j % 10}", capsize=2, markersize=4, elinewidth=1)
            right.annotate(f"{_level_label(lv.level)} (n={lv.n})", (lv.mean, row + offset),
                           xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
    right.set_xlabel("objective: mean ± SEM per level")
    right.margins(x=0.2)  # room for the level labels
    right.tick_params(axis="y", left=False)
    if title:
        fig.suptitle(title)
    return fig


def progress_figure(progress: Sequence[SearchProgress], x: str = "trial") -> Figure:
    """Each trial's objective (dots) and the best so far (a step line) against trial number;
    the random startup phase shaded; failed or unfinished trials as crosses on the bottom edge
    and diverged ones as hollow markers; a warm start as a star; a trial paused at a lower rung
    (multi-fidelity) as a faint small marker at its rung objective, never in the best so far;
    each experiment's reference runs (bp, fa, …) as dashed horizontal lines. Several
    experiments share the axes, one colour each. ``x`` "trial-epochs": ``epochs_figure``."""
    if not progress:
        raise ValueError("no experiment to plot")
    if x == "trial-epochs":
        return epochs_figure(progress)
    if x != "trial":
        from localrules.analysis.progress import X_AXES

        raise ValueError(f"unknown x-axis {x!r}; valid: {', '.join(X_AXES)}")
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    scored = [p.objective for s in progress for p in s.points if p.objective is not None]
    scored += [level.objective for s in progress for level in s.references.levels.values()
               if level.objective is not None]
    bottom = min(scored, default=0.0)
    top = max(scored, default=1.0)
    pad = max((top - bottom) * 0.08, 0.01)
    floor = bottom - pad
    longest = max(len(s.points) for s in progress)
    # The random startup phase: shaded where any experiment's suggestion was random.
    random_at = sorted({x for s in progress
                        for x, p in enumerate(s.points, start=1) if p.startup})
    for n, (first, last) in enumerate(_runs(random_at)):
        ax.axvspan(first - 0.5, last + 0.5, color="0.92", zorder=0,
                   label=None if n else "random startup phase")
    for i, s in enumerate(progress):
        colour = f"C{i % 10}"
        xs = range(1, len(s.points) + 1)
        ok = [(x, p.objective) for x, p in zip(xs, s.points, strict=True)
              if p.full_budget and not p.diverged]
        paused = [(x, p.objective) for x, p in zip(xs, s.points, strict=True)
                  if p.objective is not None and not p.full_budget]
        div = [(x, p.objective) for x, p in zip(xs, s.points, strict=True)
               if p.objective is not None and p.diverged]
        missing = [x for x, p in zip(xs, s.points, strict=True) if p.objective is None]
        _results(ax, ok, div, paused, colour, s.experiment, "paused at a lower rung")
        if missing:
            ax.scatter(missing, [floor] * len(missing), marker="x", s=18, color=colour,
                       zorder=2, label=f"{s.experiment}: no objective ({len(missing)})")
        warm = [(x, p.objective) for x, p in zip(xs, s.points, strict=True)
                if p.warm_start is not None and p.objective is not None]
        if warm:
            ax.scatter(*zip(*warm, strict=True), marker="*", s=90, color=colour, zorder=4,
                       edgecolors="black", linewidths=0.5,
                       label=f"{s.experiment}: warm start ({s.points[warm[0][0] - 1].warm_start})")
        for n, (rule, level) in enumerate(s.references.levels.items()):
            if level.objective is None:
                continue
            sem = f" ± {level.sem:.3f}" if level.sem is not None else ""
            ax.axhline(level.objective, color=colour, linestyle=("--", ":", "-.")[n % 3],
                       linewidth=1.0, zorder=1,
                       label=f"{s.experiment}: {rule} reference ({level.objective:.4g}{sem})")
        best = s.best_so_far
        steps = [(x, b) for x, b in zip(xs, best, strict=True) if b is not None]
        if steps:
            ax.step(*zip(*steps, strict=True), where="post", color=colour, linewidth=1.8,
                    label=f"{s.experiment}: best so far ({steps[-1][1]:.4g})", zorder=3)
    ax.set_xlim(0.5, longest + 0.5)
    ax.set_ylim(floor - pad / 2, top + pad)
    ax.set_xlabel("trial number (creation order)")
    ax.set_ylabel("objective (validation top-1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _results(ax, full: Sequence[tuple[float, float]], diverged: Sequence[tuple[float, float]],
             rung: Sequence[tuple[float, float]], colour: str, experiment: str,
             rung_label: str) -> None:
    """One search's results: full-budget ones as dots, diverged ones hollow, rung results
    faint, small and behind everything, so they read as apart from the full-budget results
    without hiding where the search spent its epochs."""
    if full:
        ax.scatter(*zip(*full, strict=True), s=14, color=colour, alpha=0.6, zorder=2)
    if diverged:
        ax.scatter(*zip(*diverged, strict=True), s=22, facecolors="none", edgecolors=colour,
                   zorder=2, label=f"{experiment}: diverged ({len(diverged)})")
    if rung:
        ax.scatter(*zip(*rung, strict=True), s=10, marker="v", color=colour, alpha=0.35,
                   linewidths=0, zorder=1, label=f"{experiment}: {rung_label} ({len(rung)})")


def epochs_figure(progress: Sequence[SearchProgress]) -> Figure:
    """The best full-budget objective so far (a step line) against trial-epochs spent, every
    result placed where the search had spent that many epochs once it finished: full-budget
    results as dots (diverged ones hollow), rung results of paused trials as faint small
    markers, reference runs as horizontal lines. The fair comparison between a plain search
    and a multi-fidelity one: the same x means the same compute."""
    if not progress:
        raise ValueError("no experiment to plot")
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    scored = [c.objective for s in progress for c in s.curve if c.objective is not None]
    scored += [level.objective for s in progress for level in s.references.levels.values()
               if level.objective is not None]
    bottom, top = min(scored, default=0.0), max(scored, default=1.0)
    pad = max((top - bottom) * 0.08, 0.01)
    most = max((s.curve[-1].trial_epochs for s in progress if s.curve), default=1)
    for i, s in enumerate(progress):
        colour = f"C{i % 10}"
        full = [(c.trial_epochs, c.objective) for c in s.curve
                if c.full_budget and not c.diverged]
        div = [(c.trial_epochs, c.objective) for c in s.curve if c.full_budget and c.diverged]
        rung = [(c.trial_epochs, c.objective) for c in s.curve
                if not c.full_budget and c.objective is not None]
        _results(ax, full, div, rung, colour, s.experiment, "rung results")
        for n, (rule, level) in enumerate(s.references.levels.items()):
            if level.objective is not None:
                ax.axhline(level.objective, color=colour, linestyle=("--", ":", "-.")[n % 3],
                           linewidth=1.0, zorder=1,
                           label=f"{s.experiment}: {rule} reference ({level.objective:.4g})")
        steps = [(c.trial_epochs, b) for c, b in zip(s.curve, s.curve_best, strict=True)
                 if b is not None]
        if steps:
            steps.append((s.curve[-1].trial_epochs, steps[-1][1]))  # to what it spent
            ax.step(*zip(*steps, strict=True), where="post", color=colour, linewidth=1.8,
                    zorder=3, label=f"{s.experiment}: best full-budget so far "
                                    f"({steps[-1][1]:.4g} in {s.trial_epochs} trial-epochs)")
    ax.set_xlim(0, most * 1.02)
    ax.set_ylim(bottom - pad * 1.5, top + pad)
    ax.set_xlabel("trial-epochs spent (cumulative, in order of finishing)")
    ax.set_ylabel("objective (validation top-1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs of consecutive values: [1, 2, 3, 7] gives
    (1, 3), (7, 7)."""
    runs: list[tuple[int, int]] = []
    for x in numbers:
        if runs and x == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], x)
        else:
            runs.append((x, x))
    return runs


def weight_metrics_figure(epochs: Sequence[float], angles: Mapping[str, Sequence[float | None]],
                          norm_ratios: Mapping[str, Sequence[float | None]],
                          title: str = "") -> Figure:
    """Fig. S4: the angle between W and B and ‖B‖_F/‖W‖_F per layer over training, one line per
    layer coloured by depth (layers in the mapping's order, shallow to deep)."""
    from matplotlib import cm, colormaps
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    names = list(angles)
    if not names:
        raise ValueError("no layer metrics to plot")
    fig = _figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    norm = Normalize(1, max(len(names), 2))
    cmap = colormaps["viridis"]
    for depth, name in enumerate(names, start=1):
        colour = cmap(norm(depth))
        for ax, series in ((left, angles[name]), (right, norm_ratios[name])):
            pts = [(e, v) for e, v in zip(epochs, series, strict=True)
                   if v is not None and math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=colour, linewidth=1.2, marker=".",
                        markersize=3)
    left.set_ylabel("angle between W and B (degrees)")
    right.set_ylabel(r"$\|B\|_F\ /\ \|W\|_F$")
    right.axhline(1.0, color="black", linestyle=":", linewidth=0.8)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=[left, right], pad=0.01)
    bar.set_label("layer depth (1 = input side)")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def weight_scatter_figure(snapshots: Sequence[tuple[str, Any, Any]], layer: str) -> Figure:
    """Fig. S3: forward against backward weight values, (W_ij, B_ji), of one layer at several
    points in training, with the symmetry diagonal. ``snapshots`` is ``(label, w, b)`` with
    matching 1-D arrays."""
    import numpy as np

    if not snapshots:
        raise ValueError("no weight snapshot to plot")
    n = len(snapshots)
    fig = _figure(min(3.2 * n, 16), 3.6)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    for ax, (label, w, b) in zip(axes, snapshots, strict=True):
        w = np.asarray(w, np.float64)
        b = np.asarray(b, np.float64)
        finite = np.isfinite(w) & np.isfinite(b)
        if not finite.all():
            label = f"{label}; {int((~finite).sum())} non-finite left out"
            w, b = w[finite], b[finite]
        ax.scatter(w, b, s=2, alpha=0.4, color="#4c72b0", rasterized=True)
        lim = float(max(np.abs(w).max(initial=0), np.abs(b).max(initial=0), 1e-12)) * 1.05
        ax.plot([-lim, lim], [-lim, lim], linestyle=":", color="black", linewidth=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(r"forward weight $W_{ij}$")
    axes[0].set_ylabel(r"backward weight $B_{ji}$")
    fig.suptitle(f"{layer}: forward vs backward weights")
    return fig


def neural_fit_figure(fits: Sequence[LayerFit], title: str = "") -> Figure:
    """Median held-out r per layer, in layer order, with the interquartile range over sites as
    error bars (how uniformly the layer predicts the sites, not a confidence interval of the
    median); the noise-corrected median as a second series when there is one."""
    if not fits:
        raise ValueError("no layer fits to plot")
    fig = _figure(max(6.0, 0.9 * len(fits) + 2.0), 4.5)
    ax = fig.subplots()
    x = range(len(fits))

    def series(medians, quartiles, offset: float, label: str, marker: str) -> None:
        points = [(i + offset, m, max(m - q25, 0.0), max(q75 - m, 0.0))
                  for i, m, (q25, q75) in zip(x, medians, quartiles, strict=True)
                  if m is not None and not math.isnan(m)]
        if points:
            xs, ys, low, high = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=[low, high], fmt=marker + "-", capsize=4, label=label)

    series([f.median_r for f in fits], [f.r_quartiles for f in fits], 0.0, "r", "o")
    if all(f.r_corrected is not None for f in fits):
        series([f.median_corrected for f in fits], [f.corrected_quartiles for f in fits], 0.08,
               "noise-corrected r / √reliability", "s")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    tilt = len(fits) > 4
    ax.set_xticks(list(x), [f.layer for f in fits], rotation=30 if tilt else 0,
                  ha="right" if tilt else "center")
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out Pearson r (median over sites)\n"
                  "error bars: interquartile range over sites")
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return fig

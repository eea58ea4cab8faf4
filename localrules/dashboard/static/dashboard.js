// localrules dashboard: one script for the four pages. It reads the JSON API (/api/...), builds
// every element with textContent (never innerHTML: names, params and errors are user input) and
// polls while the page is open, so a running search updates in place.
"use strict";

const state = { refresh: 5, timer: null, view: null, plotted: {}, generation: 0 };

// --- small helpers -----------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return Number(value.toPrecision(digits)).toString();
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// Plotly reads a subset of HTML in titles, trace names, hover text and tick labels (<a href>,
// <b>, <span style>): every string from the database goes through this before it reaches a plot.
function plotText(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return new Date(seconds * 1000).toLocaleString();
}

function ago(seconds, now) {
  if (seconds === null || seconds === undefined) return "–";
  const d = Math.round(now - seconds);
  const span = Math.abs(d) < 120 ? `${Math.abs(d)} s` : Math.abs(d) < 7200
    ? `${Math.round(Math.abs(d) / 60)} min` : `${(Math.abs(d) / 3600).toFixed(1)} h`;
  return d >= 0 ? `${span} ago` : `in ${span}`;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin",
                                       headers: { accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setStatus(text, bad = false) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = bad ? "error" : "muted";
}

function card(label, value, title) {
  return el("div", { class: "card", title },
            el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
}

function stateCell(value) {
  return el("td", { class: `state-${value}`, text: value });
}

function table(headers, rows, options = {}) {
  const head = el("tr", {}, headers.map((h) => {
    const label = typeof h === "string" ? h : h.label;
    const th = el("th", { text: label });
    if (options.onSort && h.sort) {
      th.classList.add("sortable");
      if (canonical(options.sorted) === canonical(h.sort)) {
        th.classList.add("sorted");
        if (options.ascending) th.classList.add("up");
      }
      th.addEventListener("click", () => options.onSort(h.sort));
    }
    return th;
  }));
  const body = el("tbody", {}, rows);
  return el("div", { class: "scroll" }, el("table", { id: options.id }, el("thead", {}, head), body));
}

function experimentLink(name) {
  return el("a", { href: `/experiments/${encodeURIComponent(name)}`, text: name });
}

function trialLink(experiment, id) {
  return el("a", { href: `/experiments/${encodeURIComponent(experiment)}/trials/${id}`,
                   text: String(id) });
}

function plot(id, traces, layout) {
  const node = document.getElementById(id);
  if (!node || typeof Plotly === "undefined") return;
  // The container's CSS height sizes the plot (Plotly's responsive mode fills its container).
  node.classList.remove("empty");
  const base = { margin: { l: 55, r: 20, t: 36, b: 45 }, hovermode: "closest",
                 legend: { orientation: "h", y: -0.2 }, font: { size: 12 } };
  Plotly.react(node, traces, Object.assign(base, layout), { displaylogo: false, responsive: true });
  state.plotted[id] = true;
}

function note(id, text) {
  const node = document.getElementById(id);
  if (!node) return;
  if (state.plotted[id] && typeof Plotly !== "undefined") Plotly.purge(node);
  state.plotted[id] = false;
  node.classList.add("empty");
  node.replaceChildren(el("p", { class: "muted", text }));
}

// --- the experiments page ----------------------------------------------------------------------
async function experimentsView(main, get) {
  const data = await get("/api/experiments");
  const rows = data.experiments.map((e) => {
    const counts = e.counts || {};
    const refs = e.reference_objectives || {};
    return el("tr", { "data-experiment": e.name },
      el("td", {}, experimentLink(e.name)), el("td", { text: e.space }),
      el("td", { text: e.engine }), el("td", { text: e.fidelity }),
      el("td", { class: "budget", text: budgetText(e.budget) }),
      ...["done", "running", "queued", "failed", "cancelled"].map(
        (s) => el("td", { class: "num", text: fmt(counts[s] || 0) })),
      el("td", { class: "num", text: fmt(e.best_objective) }),
      el("td", { class: "num", title: e.best_gap_closed_reason || "",
                 text: fmt(e.best_gap_closed, 3) }),
      el("td", { class: "num", text: fmt(e.top_decile_median) }),
      el("td", { class: "num", text: fmt(e.trials_per_hour) }),
      el("td", { class: "num", text: fmt(refs.bp) }), el("td", { class: "num", text: fmt(refs.fa) }),
      el("td", { text: when(e.created_at) }));
  });
  const headers = ["experiment", "space", "engine", "fidelity", "budget", "done", "running",
                   "queued", "failed", "cancelled", "best", "gap closed", "top-decile median",
                   "trials/h", "bp", "fa", "created"];
  main.replaceChildren(
    el("h1", { text: "Experiments" }),
    data.experiments.length ? table(headers, rows, { id: "experiments" })
      : el("p", { class: "muted", text: "No experiment in this database yet." }));
}

function budgetText(budget) {
  if (!budget) return "–";
  const keys = ["dataset", "model", "epochs", "batch_size", "width"];
  return keys.filter((k) => budget[k] !== undefined).map((k) => `${k} ${fmt(budget[k])}`).join(", ");
}

// --- one experiment ----------------------------------------------------------------------------
const STATES = ["queued", "running", "done", "failed", "cancelled"];

function tableQuery() {
  const q = new URLSearchParams(location.search);
  return { states: q.getAll("state"), where: q.get("where") || "", sort: q.get("sort") || "trial_id",
           reverse: q.get("reverse"), page: Number(q.get("page") || 1),
           perPage: Number(q.get("per_page") || 100) };
}

function setTableQuery(next) {
  const q = new URLSearchParams();
  for (const s of next.states) q.append("state", s);
  if (next.where) q.set("where", next.where);
  if (next.sort && next.sort !== "trial_id") q.set("sort", next.sort);
  if (next.reverse !== null && next.reverse !== undefined) q.set("reverse", next.reverse);
  if (next.page > 1) q.set("page", String(next.page));
  if (next.perPage !== 100) q.set("per_page", String(next.perPage));
  const search = q.toString();
  history.replaceState(null, "", location.pathname + (search ? `?${search}` : ""));
  refreshNow();
}

function apiTrialQuery(t) {
  const q = new URLSearchParams();
  for (const s of t.states) q.append("state", s);
  if (t.where) q.set("where", t.where);
  q.set("sort", t.sort);
  if (t.reverse !== null) q.set("reverse", t.reverse);
  q.set("page", String(t.page));
  q.set("per_page", String(t.perPage));
  return q.toString();
}

function experimentSkeleton(main, name) {
  const t = tableQuery();
  const where = el("input", { type: "text", id: "where", value: t.where,
                              placeholder: 'filter, e.g. params.noise == true and objective > 0.5' });
  const boxes = STATES.map((s) => el("label", {},
    el("input", { type: "checkbox", name: "state", value: s, checked: t.states.includes(s) }), ` ${s}`));
  const form = el("form", { class: "filters", id: "filters", onsubmit: (event) => {
    event.preventDefault();
    const chosen = [...form.querySelectorAll("input[name=state]:checked")].map((b) => b.value);
    setTableQuery({ ...tableQuery(), states: chosen, where: where.value.trim(), page: 1 });
  } }, boxes, where, el("button", { type: "submit", text: "Apply" }));
  form.addEventListener("change", (event) => {
    if (event.target.name === "state") form.requestSubmit();
  });
  main.replaceChildren(
    el("h1", { text: name }),
    el("div", { id: "summary", class: "cards" }),
    el("h2", { text: "Trials" }), form, el("p", { id: "table-error", class: "error" }),
    el("div", { id: "trials" }), el("div", { id: "pager", class: "pager" }),
    el("h2", { text: "Search" }),
    el("div", { class: "plots" },
       el("div", { id: "plot-progress", class: "plot" }),
       el("div", { id: "plot-epochs", class: "plot" }),
       el("div", { id: "plot-importance", class: "plot" })),
    el("h2", { text: "Importance by level" }),
    el("div", { id: "levels", class: "plots" }),
    el("h2", { id: "top-title", text: "Top trials by parameter" }),
    el("div", { id: "slices", class: "plots" }));
}

async function experimentView(main, name, get) {
  if (state.view !== `experiment:${name}`) {
    experimentSkeleton(main, name);
    state.view = `experiment:${name}`;
    state.analysedVersion = null;
  }
  const base = `/api/experiments/${encodeURIComponent(name)}`;
  const head = await get(base);
  renderSummary(head.summary);
  await trialTable(name, base, get);
  // The analyses change only when a trial's outcome does (the header's version); the server
  // may hand back ones a few seconds older (it redoes them at most every few seconds), so they
  // are asked for again until they catch up.
  if (head.version !== state.analysedVersion) {
    const [progress, importance, top] = await Promise.all(
      [get(`${base}/progress`), get(`${base}/importance`), get(`${base}/top`)]);
    state.analysedVersion = progress.version;
    renderProgress(progress, head.summary);
    renderImportance(importance);
    renderTop(top);
  }
}

function renderSummary(s) {
  const counts = s.counts || {};
  document.getElementById("summary").replaceChildren(
    card("space", s.space), card("engine", s.engine), card("fidelity", s.fidelity),
    card("budget", budgetText(s.budget)),
    card("trials", STATES.filter((k) => counts[k]).map((k) => `${counts[k]} ${k}`).join(", ") || "none"),
    card("best objective", s.best_trial === null ? "–" : `${fmt(s.best_objective)} (#${s.best_trial})`),
    card("gap closed", fmt(s.best_gap_closed, 3), s.best_gap_closed_reason || ""),
    card("top-decile median", fmt(s.top_decile_median)),
    card("trials/hour", fmt(s.trials_per_hour)),
    card("bp", fmt((s.reference_objectives || {}).bp)), card("fa", fmt((s.reference_objectives || {}).fa)),
    card("trial-epochs", fmt(s.trial_epochs)));
}

async function trialTable(name, base, get) {
  const t = tableQuery();
  const errorBox = document.getElementById("table-error");
  let page;
  try {
    page = await get(`${base}/trials?${apiTrialQuery(t)}`);
    errorBox.textContent = "";
  } catch (err) {
    if (err.status !== 400) throw err;  // STALE too
    errorBox.textContent = err.message;
    document.getElementById("trials").replaceChildren();
    document.getElementById("pager").replaceChildren();
    return;
  }
  const fixed = [
    { label: "trial", sort: "trial_id", key: "trial_id" }, { label: "state", sort: "state", key: "state" },
    { label: "kind", key: "kind" }, { label: "objective", sort: "objective", key: "result.objective" },
    { label: "gap closed", sort: "gap_closed", key: "gap_closed" },
    { label: "top-1", sort: "top1", key: "result.top1" }, { label: "epoch", key: "epoch" },
    { label: "attempt", sort: "attempt", key: "attempt" }, { label: "worker", sort: "worker", key: "worker" },
    { label: "finished", sort: "finished_at", key: "finished_at" },
  ];
  const params = page.params.map((p) => ({ label: p, sort: `params.${p}`, key: `params.${p}` }));
  const ascending = isScore(page.sort) ? page.reverse : !page.reverse;
  const rows = page.rows.map((r) => el("tr", { "data-trial": r.trial_id, "data-state": r.state },
    el("td", {}, trialLink(name, r.trial_id)), stateCell(r.state),
    el("td", { text: kindText(r) }), el("td", { class: "num", text: fmt(r["result.objective"]) }),
    el("td", { class: "num", text: fmt(r.gap_closed, 3) }),
    el("td", { class: "num", text: fmt(r["result.top1"]) }),
    el("td", { class: "num", text: epochText(r) }), el("td", { class: "num", text: fmt(r.attempt) }),
    el("td", { text: r.worker || "–" }), el("td", { text: when(r.finished_at) }),
    ...params.map((p) => el("td", { text: fmt(r[p.key]) }))));
  document.getElementById("trials").replaceChildren(table([...fixed, ...params], rows, {
    id: "trial-table", sorted: page.sort, ascending,
    onSort: (field) => {
      const current = tableQuery();
      const reverse = canonical(current.sort) === canonical(field) ? String(!page.reverse) : null;
      setTableQuery({ ...current, sort: field, reverse, page: 1 });
    } }));
  const pages = page.total === null ? null : Math.max(1, Math.ceil(page.total / page.per_page));
  const go = (n) => setTableQuery({ ...tableQuery(), page: n });
  document.getElementById("pager").replaceChildren(
    el("button", { id: "prev", disabled: page.page <= 1, onclick: () => go(page.page - 1), text: "← previous" }),
    el("span", { id: "page-info", text: pages === null
      ? `page ${page.page}` : `page ${page.page} of ${pages} (${page.total} trials)` }),
    el("button", { id: "next", disabled: !page.more, onclick: () => go(page.page + 1), text: "next →" }));
}

const ALIASES = { "result.objective": "objective", "result.top1": "top1", "result.top5": "top5",
                  "result.gap_closed": "gap_closed" };

function canonical(field) {
  return ALIASES[field] || field;
}

function isScore(field) {
  return ["objective", "top1", "top5", "gap_closed", "result.objective", "result.top1",
          "result.top5", "result.gap_closed"].includes(field);
}

function kindText(r) {
  if (r.reference) return `reference ${r.reference}`;
  if (r.warm_start) return `warm start ${r.warm_start}`;
  if (r.rung !== null && r.rung !== undefined) return `rung ${r.rung}${r.stopped_early ? " (stopped)" : ""}`;
  return "tpe";
}

function epochText(r) {
  const done = r["progress.epoch"];
  const of = r["fidelity.epochs"] || r["progress.epochs"];
  if (done === null || done === undefined) return "–";
  return of ? `${done}/${of}` : String(done);
}

function referenceLines(refs, span) {
  const rules = (refs && refs.rules) || {};
  return Object.entries(rules).filter(([, level]) => level.objective !== null).map(([rule, level]) => ({
    x: span, y: [level.objective, level.objective], mode: "lines", name: `${plotText(rule)} reference`,
    line: { dash: "dot", width: 1.5 },
  }));
}

function renderProgress(progress, summary) {
  const trials = progress.trials || [];
  if (!trials.length) {
    note("plot-progress", progress.note || "No search trial yet.");
    note("plot-epochs", "");
    return;
  }
  const done = trials.filter((t) => t.objective !== null);
  const span = [1, trials.length];
  plot("plot-progress", [
    { x: done.map((t) => t.trial), y: done.map((t) => t.objective), mode: "markers",
      name: "objective", text: done.map((t) => `trial ${t.trial_id}`),
      marker: { size: 6, color: done.map((t) => (t.stopped_early ? "#9ca3af" : "#2563eb")) } },
    { x: trials.map((t) => t.trial), y: trials.map((t) => t.best_so_far), mode: "lines",
      name: "best so far", line: { shape: "hv", color: "#15803d" } },
    ...referenceLines(progress.references, span),
  ], { title: { text: "Objective by trial" }, xaxis: { title: { text: "trial" } },
       yaxis: { title: { text: "objective" } } });
  const curve = progress.curve || [];
  if (!curve.length) { note("plot-epochs", "No result yet."); return; }
  plot("plot-epochs", [
    { x: curve.map((c) => c.trial_epochs), y: curve.map((c) => c.objective), mode: "markers",
      name: "result", text: curve.map((c) => `trial ${c.trial_id}${c.rung !== null ? ` rung ${c.rung}` : ""}`),
      marker: { size: 6, color: curve.map((c) => (c.full_budget ? "#2563eb" : "#9ca3af")) } },
    { x: curve.map((c) => c.trial_epochs), y: curve.map((c) => c.best_so_far), mode: "lines",
      name: "best so far", line: { shape: "hv", color: "#15803d" } },
    ...referenceLines(progress.references, [0, curve[curve.length - 1].trial_epochs]),
  ], { title: { text: "Objective by trial-epochs spent" },
       xaxis: { title: { text: "trial-epochs" } }, yaxis: { title: { text: "objective" } } });
}

function renderImportance(report) {
  const params = (report.parameters || []).filter((p) => p.importance !== null);
  const levels = document.getElementById("levels");
  if (!params.length) {
    note("plot-importance", report.note || "Importance needs finished trials at two levels of a choice.");
    levels.replaceChildren();
    return;
  }
  const ordered = [...params].reverse();
  plot("plot-importance", [{
    type: "bar", orientation: "h", x: ordered.map((p) => p.importance),
    y: ordered.map((p) => plotText(p.parameter)),
    error_x: { type: "data", array: ordered.map((p) => p.importance_se || 0), visible: true },
    name: "importance",
  }], { title: { text: `Importance (best − worst level mean ± SE), ${report.analysed} trials` },
        margin: { l: 150, r: 20, t: 36, b: 45 }, xaxis: { title: { text: "objective difference" } } });
  const ids = params.map((p, i) => `plot-level-${i}`);
  levels.replaceChildren(...ids.map((id) => el("div", { id, class: "plot" })));
  params.forEach((p, i) => plot(ids[i], [{
    type: "bar", x: p.levels.map((l) => plotText(fmt(l.level))), y: p.levels.map((l) => l.mean),
    error_y: { type: "data", array: p.levels.map((l) => l.sem || 0), visible: true },
    text: p.levels.map((l) => `n=${l.n}`), name: plotText(p.parameter),
  }], { title: { text: `${plotText(p.parameter)}: mean objective ± SEM` }, xaxis: { type: "category" },
        yaxis: { title: { text: "objective" } } }));
}

function renderTop(top) {
  // A slice view (objective against each parameter, top trials only): SVG, so it draws where
  // WebGL (which parallel coordinates need) is missing, and conditional parameters simply have
  // fewer points.
  const trials = top.trials || [];
  const slices = document.getElementById("slices");
  if (trials.length < 2) {
    slices.replaceChildren(el("p", { class: "muted", text: "The top trials appear once two have finished." }));
    return;
  }
  document.getElementById("top-title").textContent = `Top ${trials.length} trials by parameter`;
  const names = [...new Set(trials.flatMap((t) => Object.keys(t.params)))].sort();
  const ids = names.map((_, i) => `plot-slice-${i}`);
  slices.replaceChildren(...ids.map((id) => el("div", { id, class: "plot small" })));
  names.forEach((name, i) => {
    const shown = trials.filter((t) => name in t.params);
    const values = shown.map((t) => t.params[name]);
    const numeric = values.every((v) => typeof v === "number" && !Number.isInteger(v));
    plot(ids[i], [{ x: values.map((v) => (numeric ? v : plotText(fmt(v)))), y: shown.map((t) => t.objective),
                    mode: "markers", text: shown.map((t) => `trial ${t.trial_id}`), name: plotText(name) }],
         { title: { text: plotText(name) }, showlegend: false, yaxis: { title: { text: "objective" } },
           xaxis: numeric ? { type: values.every((v) => v > 0) && Math.max(...values) / Math.min(...values) > 100 ? "log" : "linear" }
             : { type: "category", categoryorder: "array", categoryarray: levelOrder(values) } });
  });
}

function levelOrder(values) {
  // Categories in their natural order: numbers by value, then the rest as text.
  const unique = [...new Map(values.map((v) => [fmt(v), v])).entries()];
  unique.sort(([ta, a], [tb, b]) => (typeof a === "number" && typeof b === "number" ? a - b
    : (typeof a === "number") - (typeof b === "number") || ta.localeCompare(tb)));
  return unique.map(([text]) => plotText(text));
}

// --- one trial ---------------------------------------------------------------------------------
async function trialView(main, name, id, get) {
  const t = await get(`/api/experiments/${encodeURIComponent(name)}/trials/${id}`);
  if (state.view !== `trial:${name}:${id}`) {
    main.replaceChildren(
      el("p", {}, el("a", { href: `/experiments/${encodeURIComponent(name)}`, text: `← ${name}` })),
      el("h1", { text: `Trial ${id}` }), el("div", { id: "trial-cards", class: "cards" }),
      el("div", { id: "trial-error" }),
      el("h2", { text: "Curves" }),
      el("div", { class: "plots" }, ["accuracy", "loss", "rates", "angle", "ratio"].map(
        (k) => el("div", { id: `plot-${k}`, class: k === "angle" || k === "ratio" ? "plot tall" : "plot" }))),
      el("h2", { text: "Attempts" }), el("div", { id: "attempts" }),
      el("h2", { text: "Parameters" }), el("div", { id: "params" }),
      el("h2", { text: "Result" }), el("div", { id: "result" }),
      el("h2", { text: "Config" }), el("pre", { id: "config" }));
    state.view = `trial:${name}:${id}`;
  }
  const lease = t.lease_expires === null ? "–" : ago(t.lease_expires, t.now);
  document.getElementById("trial-cards").replaceChildren(
    card("state", t.state), card("objective", fmt((t.result || {}).objective)),
    card("gap closed", fmt(t.gap_closed, 3), t.gap_closed_reason || ""),
    card("epoch", t.progress ? `${fmt(t.progress.epoch)}/${fmt(t.progress.epochs)}` : "–"),
    card("attempt", fmt(t.attempt)), card("lapses", fmt(t.lapses)),
    card("worker", t.worker || "–"), card("lease expires", lease),
    card("kind", t.reference ? `reference ${t.reference.rule}` : (t.misc || {}).warm_start || "tpe"),
    card("created", when(t.created_at)), card("finished", when(t.finished_at)));
  document.getElementById("trial-error").replaceChildren(
    ...(t.error ? [el("h2", { text: "Error" }), el("pre", { class: "error", text: t.error })] : []));
  renderCurves(t.curve || []);
  const attempts = (t.attempts || []).map((a) => el("tr", {},
    el("td", { text: fmt(a.attempt) }), el("td", { text: a.worker || "–" }),
    el("td", { text: when(a.started_at) }), el("td", { text: when(a.ended_at) }),
    stateCell(a.outcome || "–"), el("td", { class: "wrap", text: a.error || "" })));
  document.getElementById("attempts").replaceChildren(attempts.length
    ? table(["attempt", "worker", "started", "ended", "outcome", "error"], attempts, { id: "attempt-table" })
    : el("p", { class: "muted", text: "No attempt recorded." }));
  document.getElementById("params").replaceChildren(keyValues(t.params || {}, "param-table"));
  document.getElementById("result").replaceChildren(keyValues(t.result || {}, "result-table"));
  document.getElementById("config").textContent = JSON.stringify(t.config, null, 2);
}

function keyValues(mapping, id) {
  const entries = Object.entries(mapping);
  if (!entries.length) return el("p", { class: "muted", text: "None yet." });
  return table(["name", "value"], entries.map(([k, v]) => el("tr", {},
    el("td", { text: k }), el("td", { class: "wrap", text: fmt(v) }))), { id });
}

function metricTraces(points, test) {
  const keys = [...new Set(points.flatMap((p) => Object.keys(p.metrics || {})))].filter(test).sort();
  return keys.map((k) => ({ x: points.map((p) => p.epoch), y: points.map((p) => (p.metrics || {})[k] ?? null),
                            mode: "lines+markers", name: plotText(k) }));
}

function layerTraces(points, metric) {
  const layers = [...new Set(points.flatMap((p) => Object.keys(p.layers || {})))];
  return layers.map((layer) => ({
    x: points.map((p) => p.epoch),
    y: points.map((p) => ((p.layers || {})[layer] || {})[metric] ?? null),
    mode: "lines", name: plotText(layer) }));
}

function renderCurves(points) {
  // The alignment loss (summed over layers, often large and negative) gets its own axis on the
  // right, so the task losses beside it stay readable; a network's 20-odd layers get a compact
  // legend beside their plot.
  const losses = metricTraces(points, (k) => /loss/.test(k)).map((t) => (
    /alignment/.test(t.name) ? { ...t, yaxis: "y2", line: { dash: "dot" } } : t));
  const layerLayout = { legend: { orientation: "v", x: 1.02, y: 1, font: { size: 9 } },
                        margin: { l: 55, r: 10, t: 36, b: 45 } };
  const charts = [
    ["accuracy", metricTraces(points, (k) => /top1|top5|acc/.test(k)), "Accuracy", "fraction", {}],
    ["loss", losses, "Losses", "loss", losses.some((t) => t.yaxis === "y2")
      ? { yaxis2: { title: { text: "alignment loss" }, overlaying: "y", side: "right" },
          margin: { l: 55, r: 60, t: 36, b: 45 } } : {}],
    ["rates", metricTraces(points, (k) => /(^|_)lr$|learning_rate/.test(k)), "Learning rates", "rate", {}],
    ["angle", layerTraces(points, "weight_angle_deg"), "Weight angle per layer (B vs W)", "degrees",
     layerLayout],
    ["ratio", layerTraces(points, "norm_ratio"), "‖B‖/‖W‖ per layer", "ratio", layerLayout],
  ];
  for (const [key, traces, title, unit, extra] of charts) {
    if (!traces.length) {
      note(`plot-${key}`, points.length ? `${title}: not reported by this rule.`
        : `${title}: no epoch reported yet.`);
    } else {
      plot(`plot-${key}`, traces, { title: { text: title }, xaxis: { title: { text: "epoch" } },
                                    yaxis: { title: { text: unit } }, ...extra });
    }
  }
}

// --- workers -----------------------------------------------------------------------------------
async function workersView(main, get) {
  const data = await get("/api/workers");
  const now = data.now;
  const rows = data.workers.map((w) => {
    const trial = w.trial;
    const leaseLeft = trial && trial.lease_expires !== null && trial.lease_expires !== undefined
      ? ago(trial.lease_expires, now) : "–";
    const stale = w.status !== "stopped" && now - w.last_seen > 120;
    const counts = w.counts || {};
    return el("tr", { "data-worker": w.worker },
      el("td", { text: w.worker }), el("td", { text: w.host }), stateCell(w.status),
      el("td", {}, trial ? [experimentLink(trial.experiment), " #", trialLink(trial.experiment, trial.trial_id)] : "–"),
      el("td", { class: "num", text: trial ? fmt(trial.attempt) : "–" }), el("td", { text: leaseLeft }),
      el("td", { class: stale ? "stale" : "", text: ago(w.last_seen, now) }),
      ...["completed", "failed", "released", "lapsed"].map((k) => el("td", { class: "num", text: fmt(counts[k] || 0) })));
  });
  const events = data.workers.flatMap((w) => (w.events || []).map((e) => ({ ...e, worker: w.worker })))
    .filter((e) => e.kind === "released" || e.kind === "lease lost" || e.kind === "failed")
    .sort((a, b) => b.at - a.at).slice(0, 100);
  main.replaceChildren(
    el("h1", { text: "Workers" }),
    data.workers.length ? table(["worker", "host", "status", "trial", "attempt", "lease expires",
                                 "last heartbeat", "completed", "failed", "handed back", "lost leases"],
                                rows, { id: "workers" })
      : el("p", { class: "muted", text: "No worker has reported to this database." }),
    el("h2", { text: "Recent hand-backs, lost leases and failures" }),
    events.length ? table(["when", "worker", "event", "trial", "attempt", "detail"], events.map((e) => el("tr", {},
      el("td", { text: when(e.at) }), el("td", { text: e.worker }), el("td", { text: e.kind }),
      el("td", {}, e.experiment ? [experimentLink(e.experiment), " #", trialLink(e.experiment, e.trial_id)] : "–"),
      el("td", { text: fmt(e.attempt) }), el("td", { class: "wrap", text: e.detail || "" }))), { id: "events" })
      : el("p", { class: "muted", text: "None." }));
}

// --- routing and polling -----------------------------------------------------------------------
function route() {
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return (main, get) => experimentsView(main, get);
  if (parts[0] === "workers" && parts.length === 1) return (main, get) => workersView(main, get);
  if (parts[0] === "experiments" && parts.length === 2) {
    return (main, get) => experimentView(main, parts[1], get);
  }
  if (parts[0] === "experiments" && parts.length === 4 && parts[2] === "trials") {
    return (main, get) => trialView(main, parts[1], Number(parts[3]), get);
  }
  return (main) => { main.replaceChildren(el("p", { class: "error", text: "No such page." })); };
}

// One refresh at a time counts: a user's action starts a new one, and whatever an older one is
// still waiting for is dropped when it arrives (STALE), so a slow answer to an old query never
// replaces a newer table, and only the newest refresh schedules the next.
const STALE = new Error("superseded by a newer refresh");

async function refreshNow() {
  clearTimeout(state.timer);
  const generation = ++state.generation;
  const get = async (path) => {
    const body = await api(path);
    if (generation !== state.generation) throw STALE;
    return body;
  };
  const main = document.getElementById("main");
  try {
    await route()(main, get);
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    if (err === STALE) return;
    if (err.status === 404) {
      state.view = null;
      main.replaceChildren(el("p", { class: "error", text: err.message }));
    }
    setStatus(`not updated: ${err.message}`, true);
  }
  state.timer = setTimeout(refreshNow, state.refresh * 1000);
}

async function start() {
  try {
    const meta = await api("/api/meta");
    state.refresh = meta.refresh_seconds;
    document.getElementById("database").textContent = meta.database
      + (meta.snapshot ? " (a copy of an older store taken at start: not live)" : "");
  } catch (err) {
    setStatus(`not connected: ${err.message}`, true);
  }
  refreshNow();
}

document.addEventListener("DOMContentLoaded", start);

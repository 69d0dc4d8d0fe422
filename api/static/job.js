// Job page: the analytics as cards, the job's insights, and charts of the step history, of any
// metric it logged and of the GPU readings. Charts ask the API for a downsampled history
// (max_points); a drag over a step chart asks for the finer range; double-click or "Reset zoom"
// returns to the whole run. Smoothing and the x axis (step or elapsed time) are redrawn from the
// rows already fetched; the URL keeps them (&smooth=0.6&x=time&metric=grad_norm).
import {
  api, chartControls, el, main, showError, ready, markNav, num, pct, duration, when, statusBadge, lineChart, card, every, epochSeconds, shortDuration,
  severityBadge, stepRange, PALETTE, ApiError, compareHref, apiJobPath, unreachableJobId, withUnit, gpuName, DASH,
} from "./common.js";

const STEP_FIELDS = ["ts", "loss", "eval_loss", "samples_per_second", "iteration_time"]; // ts is not downsampled by
const MAX_POINTS = 1600; // per request: 4 numeric fields -> about 200 buckets, each keeping its extremes
const GPU_POINTS = 3200; // in all, shared by the GPUs: about 400 each for 8 GPUs
const METRIC_POINTS = 800;
// Step-row fields the metric picker offers when the job has them (besides those charted above).
const PICKABLE = ["learning_rate", "grad_norm", "epoch", "loss", "eval_loss", "samples_per_second", "iteration_time", "samples", "seconds"];
const CHARTED = new Set(["loss", "eval_loss", "samples_per_second", "iteration_time"]); // by the charts above
const EXTRA = ["learning_rate", "grad_norm", "epoch", "samples", "seconds"];
// Insight kinds drawn on the loss chart, on the throughput chart, and on both.
const LOSS_KINDS = new Set(["nonfinite_loss", "loss_spike", "loss_divergence", "overfitting", "stall"]);
const SPEED_KINDS = new Set(["throughput_drop", "stall"]);
const STEP_KINDS = new Set([...LOSS_KINDS, ...SPEED_KINDS]); // the metric chart: where did grad_norm move?
const GPU_KINDS = new Set(["gpu_idle", "gpu_straggler", "gpu_throttled"]);

const query = new URLSearchParams(location.search);
const jobId = query.get("id");
const jobPath = apiJobPath(jobId);
const state = {
  zoom: null, charts: {}, checkpoints: [], best: null, status: null, logLoss: query.get("log") === "1", rows: [],
  smoothing: Math.min(0.99, Math.max(0, Number(query.get("smooth")) || 0)),
  xAxis: query.get("x") === "time" ? "time" : "step",
  metric: query.get("metric"), metrics: [], metricRows: [], insights: [], t0: null, hasTime: false, gpus: null,
  holders: null, analytics: null,
};

function cards(a) {
  const d = a.duration, p = a.performance, l = a.losses, r = a.resource_utilization, c = a.checkpoints, e = a.efficiency;
  const list = [
    card("Duration", [
      ["Start", when(d.start_time), d.start_time], ["End", when(d.end_time), d.end_time],
      ["Total", duration(d.total_seconds)], ["Training", duration(d.training_seconds)], ["Overhead", duration(d.overhead_seconds)],
    ]),
    card("Performance", [
      ["Steps", num(p.total_iterations, 0)], ["Samples", num(p.total_samples, 0)],
      ["Average samples/s", num(p.average_samples_per_second)], ["Peak samples/s", num(p.peak_samples_per_second)],
      ["Average iteration", p.average_iteration_time == null ? "—" : `${num(p.average_iteration_time, 3)} s`],
    ]),
    card("Losses", [
      ["Initial", num(l.initial_loss, 4)], ["Final", num(l.final_loss, 4)], ["Best", num(l.best_loss, 4)],
      ["Reduction", pct(l.loss_reduction_percent)], ["Final eval", num(l.final_eval_loss, 4)], ["Best eval", num(l.best_eval_loss, 4)],
    ]),
    card("GPU use", [
      ["Average utilization", pct(r.average_gpu_utilization)],
      ["Average memory", r.average_gpu_memory_mb == null ? "—" : `${num(r.average_gpu_memory_mb, 0)} MiB`],
      ["Peak memory", r.peak_gpu_memory_mb == null ? "—" : `${num(r.peak_gpu_memory_mb, 0)} MiB`],
      ["Average temperature", r.average_gpu_temp_celsius == null ? "—" : `${num(r.average_gpu_temp_celsius, 1)} °C`],
      ["Peak temperature", r.peak_gpu_temp_celsius == null ? "—" : `${num(r.peak_gpu_temp_celsius, 1)} °C`],
    ]),
    card("Checkpoints", [
      ["Saved", num(c.total_checkpoints, 0)], ["Every", c.checkpoint_frequency_steps == null ? "—" : `${num(c.checkpoint_frequency_steps, 1)} steps`],
      ["Last", c.final_checkpoint ?? "—"], ["Best", c.best_checkpoint ?? "—"],
    ]),
    card("Efficiency (0–100)", [
      ["GPU utilization score", num(e.gpu_utilization_score, 1)], ["Throughput score", num(e.throughput_score, 1)],
      ["Overall score", num(e.overall_score, 1)],
    ]),
  ];
  if (a.energy && a.energy.total_energy_wh != null) {
    list.push(card("Energy", [
      ["Total", withUnit(a.energy.total_energy_wh, "Wh", 1)], ["Per 1,000 samples", withUnit(a.energy.energy_per_1000_samples_wh, "Wh", 3)],
      ["Idle GPUs", num(a.energy.idle_gpus, 0)], ["Throttled", a.energy.average_throttled_share == null ? "—" : pct(100 * a.energy.average_throttled_share)],
    ]));
  }
  return el("div", { class: "cards" }, list);
}

function warnings(list) {
  if (!list.length) return null;
  return el("section", { class: "warnings", "aria-label": "warnings" },
    el("h2", {}, "Why some figures are missing or approximate"),
    el("ul", {}, list.filter(Boolean).map((w) => el("li", {}, sentence(w)))));
}

// A warning as a sentence: its first word capitalised, unless it names a column ("total_samples
// is null: …" stays so: "Total_samples" names none), and a full stop.
function sentence(w) {
  const first = w.split(/[ ,:;(]/)[0];
  const start = /^[a-z]+$/.test(first) ? w[0].toUpperCase() + w.slice(1) : w;
  return start + (w.endsWith(".") ? "" : ".");
}

// --- insights

function insightList(answer) {
  const section = el("section", { id: "insights", class: "insights", "aria-label": "insights" }, el("h2", {}, "Insights"));
  if (answer === null) {
    section.append(el("p", { class: "muted" }, "This server does not list insights."));
    return section;
  }
  if (!answer.insights.length) {
    section.append(el("p", { class: "muted" }, "Nothing unusual found in this job."));
    return section;
  }
  const rows = answer.insights.map((i) => el("tr", { dataset: { kind: i.kind, severity: i.severity } },
    el("td", {}, severityBadge(i.severity)), el("td", {}, i.kind.replaceAll("_", " ")), el("td", { class: "num" }, stepRange(i)),
    el("td", {}, i.host != null || i.gpu_index != null ? gpuName(i.host, i.gpu_index, i.gpu_uuid) : DASH), el("td", { class: "wrap" }, i.message)));
  const thresholds = Object.entries(answer.thresholds || {}).map(([k, v]) => `${k} = ${v}`).join(", ");
  section.append(el("p", { class: "muted" }, "Shaded on the charts at their steps; a stall is a hatched gap. ",
    answer.as_of ? `As of ${when(answer.as_of)}.` : ""),
  el("div", { class: "scroll" }, el("table", { class: "insights" },
    thresholds ? el("caption", {}, el("details", {}, el("summary", {}, "Thresholds in force"), `${thresholds}.`)) : null,
    el("thead", {}, el("tr", {}, ["Severity", "Kind", "Steps", "GPU", "What"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows))));
  return section;
}

/** Shaded x ranges for the insights of the given kinds, on the current x axis. */
function bands(kinds) {
  const out = [];
  for (const i of state.insights) {
    if (!kinds.has(i.kind) || i.first_step == null) continue;
    let from = i.first_step, to = i.last_step ?? i.first_step;
    if (state.xAxis === "time") {
      from = elapsedAt(i.start_time, i.first_step);
      to = elapsedAt(i.end_time, i.last_step ?? i.first_step);
      if (from == null || to == null) continue;
    }
    out.push({ from, to, kind: i.kind, label: i.kind.replaceAll("_", " ") });
  }
  return out;
}

/** Seconds since the job's start of a time, else of the row at (or after) a step. */
function elapsedAt(iso, step) {
  if (iso) return epochSeconds(iso) - state.t0;
  const row = state.rows.find((r) => r.step >= step && r.ts);
  return row ? epochSeconds(row.ts) - state.t0 : null;
}

// --- step charts

async function steps(range) {
  const page = await api(`${jobPath}/steps`, {
    fields: STEP_FIELDS.join(","), max_points: MAX_POINTS, from_step: range?.[0], to_step: range?.[1],
  });
  return page.steps;
}

/** [xs, ...one column per field] on the current x axis; rows without a time dropped in time mode. */
function xy(rows, fields) {
  const byTime = state.xAxis === "time";
  const kept = byTime ? rows.filter((r) => r.ts) : rows;
  const xs = kept.map((r) => (byTime ? epochSeconds(r.ts) - state.t0 : r.step));
  return [xs, ...fields.map((f) => kept.map((r) => (r[f] === undefined ? null : r[f])))];
}

function checkpointMarkers() {
  if (state.xAxis === "step") return state.checkpoints.map((c) => ({ x: c.step, label: c.name, best: c.name === state.best }));
  return state.checkpoints.map((c) => ({ x: elapsedAt(null, c.step), label: c.name, best: c.name === state.best })).filter((m) => m.x != null);
}

function selectToSteps(min, max) {
  if (state.xAxis === "step") return [Math.max(0, Math.floor(min)), Math.ceil(max)];
  const inside = state.rows.filter((r) => r.ts && epochSeconds(r.ts) - state.t0 >= min && epochSeconds(r.ts) - state.t0 <= max);
  return inside.length ? [inside[0].step, inside.at(-1).step] : null;
}

const onSelect = (min, max) => {
  const range = selectToSteps(min, max);
  if (range) zoom(range).catch(showError);
};

function common() {
  return { onSelect, smoothing: state.smoothing, elapsed: state.xAxis === "time" };
}

function drawLossChart() {
  if (!state.rows.length && !state.zoom) {
    state.holders.loss.replaceChildren(el("p", { class: "muted no-steps", role: "note" }, noSteps()));
    delete state.charts.loss;
    return;
  }
  state.charts.loss = lineChart(state.holders.loss, {
    ...common(), title: state.logLoss ? "Loss (log scale)" : "Loss", data: xy(state.rows, ["loss", "eval_loss"]),
    markers: checkpointMarkers(), bands: bands(LOSS_KINDS), logY: state.logLoss,
    series: [{ label: "loss", color: PALETTE[0], smooth: true }, { label: "eval loss", color: PALETTE[1], points: true }],
  });
}

/** Said instead of an empty loss chart. A job may have steps but no step rows (a TensorFlow eval
 * run logs only metrics, at steps up to 20,000; a progress.json's current_step): the sentence
 * then agrees with the Steps card. */
function noSteps() {
  const steps = state.analytics.performance.total_iterations;
  if (steps == null) return "No steps logged yet.";
  const others = state.metrics.some((m) => m.source === "metrics");
  return `No step rows, so no loss curve: the ${num(steps, 0)} steps above are the highest step the job logged${others ? "; its metrics are charted under “Any metric”." : "."}`;
}

function hasSpeed(rows) {
  return rows.some((r) => r.samples_per_second != null || r.iteration_time != null);
}

function drawSpeedChart() {
  const holder = state.holders.speed;
  if (!state.speedKnown) {
    holder.replaceChildren(noThroughput());
    delete state.charts.speed;
    return;
  }
  state.charts.speed = lineChart(holder, {
    ...common(), title: "Throughput and iteration time", data: xy(state.rows, ["samples_per_second", "iteration_time"]),
    axes: { y: "samples/s", t: "seconds" }, bands: bands(SPEED_KINDS),
    series: [{ label: "samples/s", color: PALETTE[2], smooth: true }, { label: "iteration time (s)", color: PALETTE[3], scale: "t" }],
  });
}

/** Said instead of an empty chart: why there is no throughput curve, and what else to plot. */
function noThroughput() {
  const average = state.analytics.performance.average_samples_per_second;
  const others = state.metrics.map((m) => m.name).filter((n) => !["loss", "eval_loss"].includes(n));
  return el("div", { class: "notice no-throughput", role: "note" },
    el("p", {}, "No throughput curve: no step of this job logged samples per second or an iteration time. ",
      "A Hugging Face trainer_state.json, for one, writes throughput only once, in the run's final summary",
      average != null
        ? `; the average above (${num(average)} samples/s) comes from the steps' samples and times.`
        : " (the trainer's own figure, not this job's average: that needs steps with samples and times)."),
    others.length
      ? el("p", {}, "Metrics it does have: ", others.map((name) => el("button", { type: "button", class: "chip", dataset: { metric: name }, onclick: () => pickMetric(name, true) }, name)))
      : null);
}

function drawStepCharts() {
  drawLossChart();
  drawSpeedChart();
  drawMetricChart();
}

async function zoom(range) {
  state.zoom = range;
  const [rows] = await Promise.all([steps(range), loadMetric()]);
  state.rows = rows;
  drawStepCharts();
  document.getElementById("zoom-state").textContent = range ? `Steps ${range[0]}–${range[1]} (${rows.length} points)` : "";
  document.getElementById("reset-zoom").hidden = !range;
}

// --- any metric

/** What the picker needs to know, asked beside the page's other requests: which extra step
 * fields the job has (one tiny downsampled request keeps each field's extremes, so a field with
 * any value shows) and the API's list of the job's metrics (null where the server has none). */
function metricSources() {
  return Promise.all([
    api(`${jobPath}/steps`, { fields: EXTRA.join(","), max_points: 2 + 2 * EXTRA.length }).then((p) => p.steps).catch(() => []),
    api(`${jobPath}/metrics`).catch(() => null),
  ]);
}

/** The metrics the picker offers: step fields the job has, then the API's metric list. */
function metricList(rows, [extra, listed]) {
  const present = new Set(EXTRA.filter((f) => extra.some((r) => r[f] != null)));
  for (const f of ["loss", "eval_loss", "samples_per_second", "iteration_time"]) if (rows.some((r) => r[f] != null)) present.add(f);
  const metrics = PICKABLE.filter((f) => present.has(f)).map((name) => ({ name, source: "steps" }));
  const items = Array.isArray(listed) ? listed : listed?.metrics ?? [];
  for (const m of items) if (!present.has(m.name)) metrics.push({ name: m.name, source: "metrics", points: m.points });
  return metrics;
}

async function loadMetric() {
  const chosen = state.metrics.find((m) => m.name === state.metric);
  if (!chosen) {
    state.metricRows = [];
    return;
  }
  const range = { from_step: state.zoom?.[0], to_step: state.zoom?.[1] };
  if (chosen.source === "steps") {
    const page = await api(`${jobPath}/steps`, { fields: `ts,${chosen.name}`, max_points: METRIC_POINTS, ...range });
    state.metricRows = page.steps.filter((r) => r[chosen.name] != null).map((r) => ({ step: r.step, ts: r.ts, value: r[chosen.name] }));
  } else {
    const page = await api(`${jobPath}/metrics/history`, { name: chosen.name, max_points: METRIC_POINTS, ...range });
    state.metricRows = Array.isArray(page) ? page : page.points ?? page.history ?? [];
  }
}

function drawMetricChart() {
  const holder = state.holders.metric;
  if (!state.metrics.length || !state.metric) {
    holder.replaceChildren(el("p", { class: "muted" }, "This job logged no metric besides its steps."));
    return;
  }
  lineChart(holder, {
    ...common(), title: state.metric, data: xy(state.metricRows, ["value"]), bands: bands(STEP_KINDS),
    series: [{ label: state.metric, color: PALETTE[5], smooth: true }],
  });
}

async function pickMetric(name, scroll = false) {
  state.metric = name;
  setParam("metric", name);
  const select = document.getElementById("metric");
  if (select) select.value = name;
  await loadMetric();
  drawMetricChart();
  if (scroll) state.holders.metric.scrollIntoView({ block: "center" });
}

function setParam(key, value) {
  if (value === null || value === "" || value === undefined) query.delete(key);
  else query.set(key, value);
  history.replaceState(null, "", `/job?${query}`);
}

// --- controls

function controls() {
  const redraw = (which) => {
    drawStepCharts();
    if (which === "x" && state.gpus) gpuCharts(state.gpus, state.holders.gpu);
  };
  return el("div", { class: "toolbar controls" }, chartControls(state, { setParam, redraw, hasTime: state.hasTime }));
}

function metricPicker() {
  const select = el("select", { id: "metric", disabled: !state.metrics.length },
    state.metrics.map((m) => el("option", { value: m.name, selected: m.name === state.metric }, m.name)));
  select.addEventListener("change", () => pickMetric(select.value).catch(showError));
  return el("label", {}, "Metric ", select);
}

// --- GPUs

function gpuCharts(page, holder) {
  if (!page.readings.length) {
    holder.replaceChildren(el("p", { class: "muted" }, "No GPU readings for this job."));
    return;
  }
  const timed = page.readings.every((r) => r.ts);
  const elapsed = timed && state.xAxis === "time" && state.t0 != null;
  const byGpu = new Map();
  for (const r of page.readings) {
    // a GPU is its UUID when known: two containers' GPUs may share an index on one host
    const uuid = page.source === "step_readings" ? null : r.gpu_uuid || null;
    const key = gpuName(r.host, r.gpu_index, uuid);
    if (!byGpu.has(key)) byGpu.set(key, { rows: [], host: r.host || null, index: r.gpu_index, uuid });
    byGpu.get(key).rows.push(r);
  }
  const figures = [
    ["utilization_percent", "Utilization (%)"], ["memory_used_mb", "Memory used (MiB)"],
    ["temperature_c", "Temperature (°C)"], ["power_w", "Power (W)"],
  ];
  const source = page.source === "step_readings" ? "logged with the steps"
    : page.source === "gpu_minutes" ? "from GPU samples (their per-minute rollups: retention dropped some raw samples)" : "from GPU samples";
  // at minute resolution a reading is a bucket of minutes: its mean, and thin lines for its extremes
  const banded = page.resolution === "minute";
  const bucket = banded ? ` Each point is the mean over ${shortDuration(page.bucket_seconds)}; thin dotted lines: the lowest and highest sample.` : "";
  const flagged = state.insights.filter((i) => GPU_KINDS.has(i.kind));
  const flagsOf = (gpu) => flagged.filter((i) => sameGpu(i, gpu));
  holder.replaceChildren(el("p", { class: "muted" }, `Per GPU, ${source}.${bucket}`));
  if (flagged.length) {
    holder.append(el("ul", { class: "gpu-insights" }, flagged.map((i) => el("li", { dataset: { kind: i.kind } },
      severityBadge(i.severity), " ", gpuName(i.host, i.gpu_index, i.gpu_uuid), ": ", i.message))));
  }
  const gpus = [...byGpu.keys()];
  for (const [field, title] of figures) {
    if (!page.readings.some((r) => r[field] != null)) continue;
    const tables = gpus.map((key) => {
      const rows = byGpu.get(key).rows.filter((r) => (timed ? r.ts : r.step) != null);
      const xs = rows.map((r) => (timed ? epochSeconds(r.ts) - (elapsed ? state.t0 : 0) : r.step));
      const ys = rows.map((r) => r[field]);
      return banded ? [xs, ys, rows.map((r) => r.minimum?.[field] ?? null), rows.map((r) => r.maximum?.[field] ?? null)] : [xs, ys];
    });
    const data = uPlot.join(tables);
    const box = el("div", { class: "chart", dataset: { chart: `gpu-${field}` } });
    holder.append(box);
    lineChart(box, {
      title, data, time: timed && !elapsed, elapsed, height: 200,
      series: gpus.flatMap((g, i) => {
        const flags = flagsOf(byGpu.get(g));
        const color = PALETTE[i % PALETTE.length];
        // a flagged GPU says so in its legend and stands out with a thicker dashed line
        const line = flags.length
          ? { label: `${g} ⚠ ${flags.map((f) => f.kind.replace("gpu_", "")).join(", ")}`, color, dash: [6, 3], width: 3 }
          : { label: g, color };
        if (!banded) return [line];
        return [line, { label: `${g} min`, color, dash: [1, 3], width: 1, points: false }, { label: `${g} max`, color, dash: [1, 3], width: 1, points: false }];
      }),
    });
  }
}

/** Whether an insight is about a GPU of the charts: the same host (the insights' null and the
 * readings' "" are both no host) and, when both name one, the same UUID (two GPUs of a host may
 * share an index), else the same index. */
function sameGpu(insight, gpu) {
  if ((insight.host || null) !== gpu.host) return false;
  if (insight.gpu_uuid && gpu.uuid) return insight.gpu_uuid === gpu.uuid;
  return insight.gpu_index === gpu.index;
}

// --- the page

/** The jobs `.` and `..`: a browser resolves the path segment away before asking (apiJobPath),
 * so the page shows the job list's row and says where the rest is. */
async function unreachable() {
  const page = await api("/api/training/jobs", { id_prefix: jobId, sort: "job_id", limit: 10 });
  const job = page.jobs.find((j) => j.job_id === jobId);
  if (!job) {
    main(el("h1", {}, "Job not found"), el("p", {}, `The warehouse has no job named “${jobId}”. `, el("a", { href: "/" }, "All jobs")));
    return;
  }
  const escaped = jobId.replaceAll(".", "%2E");
  const resolved = jobId === ".." ? "/api/analytics" : "/api/training/analytics";
  document.title = `${jobId} · runlytics`;
  main(
    el("h1", {}, jobId, " ", statusBadge(job.status)),
    el("p", { class: "notice unreachable", role: "note" },
      `A browser can't ask the API for this job's answers: it resolves the URL path segment “${jobId}” away before sending, `,
      `even written ${escaped} (/api/training/${escaped}/analytics goes out as ${resolved}). Below is its row of the jobs list; `,
      el("code", {}, `runlytics analytics ${jobId}`), " prints its analytics, and curl gets every answer at ",
      el("code", {}, `/api/training/${escaped}/analytics`), " (", el("code", {}, "/steps"), ", …)."),
    el("div", { class: "cards" }, card("From the jobs list", [
      ["Model", job.model_name ?? DASH], ["Start", when(job.start_time), job.start_time], ["Duration", duration(job.total_seconds)],
      ["Steps", num(job.total_iterations, 0)], ["Samples/s", num(job.average_samples_per_second)], ["Final loss", num(job.final_loss, 4)],
      ["GPU utilization", pct(job.average_gpu_utilization)],
    ])),
    el("p", {}, el("a", { href: "/" }, "All jobs")),
  );
}

async function load() {
  if (!jobId) {
    main(el("h1", {}, "Job"), el("p", {}, "No job given: open a job from the ", el("a", { href: "/" }, "jobs list"), "."));
    return;
  }
  if (unreachableJobId(jobId)) {
    await unreachable();
    return;
  }
  let analytics, rows, checkpoints, gpus, insights, sources;
  try {
    // all at once: the page waits for the slowest answer, not for their sum
    [analytics, rows, checkpoints, gpus, insights, sources] = await Promise.all([
      api(`${jobPath}/analytics`), steps(null), api(`${jobPath}/checkpoints`), api(`${jobPath}/gpus`, { max_points: GPU_POINTS }),
      api(`${jobPath}/insights`).catch((error) => { if (error instanceof ApiError && error.status === 404) return null; throw error; }),
      metricSources(),
    ]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      main(el("h1", {}, "Job not found"), el("p", {}, `The warehouse has no job named “${jobId}”. `, el("a", { href: "/" }, "All jobs")));
      return;
    }
    throw error;
  }
  state.analytics = analytics;
  state.status = analytics.status;
  state.best = analytics.checkpoints.best_checkpoint;
  state.checkpoints = checkpoints.checkpoints;
  state.insights = insights?.insights ?? [];
  state.rows = rows;
  state.gpus = gpus;
  state.hasTime = rows.some((r) => r.ts);
  state.t0 = epochSeconds(analytics.duration.start_time) ?? epochSeconds(rows.find((r) => r.ts)?.ts);
  if (state.t0 == null) state.hasTime = false;
  if (!state.hasTime) state.xAxis = "step";
  state.speedKnown = hasSpeed(rows);
  state.metrics = metricList(rows, sources);
  if (!state.metrics.some((m) => m.name === state.metric)) {
    // the first not charted above: the learning rate or grad norm, else what the API lists, else the rest
    const rank = (m) => (["learning_rate", "grad_norm"].includes(m.name) ? 0 : m.source === "metrics" ? 1 : CHARTED.has(m.name) ? 3 : 2);
    state.metric = [...state.metrics].sort((a, b) => rank(a) - rank(b))[0]?.name ?? null;
  }
  await loadMetric();
  state.holders = {
    loss: el("div", { class: "chart", dataset: { chart: "loss" } }),
    speed: el("div", { class: "chart", dataset: { chart: "speed" } }),
    metric: el("div", { class: "chart", dataset: { chart: "metric" } }),
    gpu: el("div", { class: "gpu-charts" }),
  };
  const holders = state.holders;
  const best = state.best;
  document.title = `${jobId} · runlytics`;
  main(
    el("h1", {}, jobId, " ", statusBadge(analytics.status)),
    el("p", { class: "muted" }, analytics.model_name ? `Model ${analytics.model_name}. ` : "",
      el("a", { href: compareHref([jobId]) }, "Compare with other jobs")),
    cards(analytics),
    warnings(analytics.warnings),
    insightList(insights),
    el("h2", {}, "Training curves"),
    el("p", { class: "muted" }, `Checkpoints are dashed lines${best ? `; the best, ${best}, is the solid green one` : ""}. Drag across a chart to zoom into those steps.`),
    controls(),
    el("div", { class: "toolbar" }, el("span", { id: "zoom-state", "aria-live": "polite" }),
      el("label", {}, el("input", { type: "checkbox", id: "log-loss", checked: state.logLoss, onchange: (event) => {
        state.logLoss = event.target.checked;
        setParam("log", state.logLoss ? "1" : "0");
        drawLossChart();
      } }), " Loss on a log scale"),
      el("button", { type: "button", id: "reset-zoom", hidden: true, onclick: () => zoom(null).catch(showError) }, "Reset zoom")),
    holders.loss, holders.speed,
    el("h2", {}, "Any metric"), el("div", { class: "toolbar" }, metricPicker()), holders.metric,
    el("h2", {}, "GPUs"), holders.gpu,
  );
  drawStepCharts();
  gpuCharts(gpus, holders.gpu);
  for (const holder of [holders.loss, holders.speed, holders.metric]) holder.addEventListener("dblclick", () => zoom(null).catch(showError));
  if (location.hash === "#insights") document.getElementById("insights").scrollIntoView();
}

markNav("");
load().then(ready).catch((error) => { showError(error); ready(); });
// A running job refreshes itself (keeping the zoom the reader chose).
every(async () => {
  const [analytics, insights, gpus] = await Promise.all([
    api(`${jobPath}/analytics`), api(`${jobPath}/insights`).catch(() => null), api(`${jobPath}/gpus`, { max_points: GPU_POINTS }),
  ]);
  state.analytics = analytics;
  state.status = analytics.status;
  if (insights) {
    state.insights = insights.insights;
    document.getElementById("insights").replaceWith(insightList(insights));
  }
  document.querySelector(".cards").replaceWith(cards(analytics));
  const shown = document.querySelector(".warnings");
  const fresh = warnings(analytics.warnings);
  if (shown) shown.replaceWith(...(fresh ? [fresh] : []));
  else if (fresh) document.querySelector(".cards").after(fresh);
  await zoom(state.zoom);
  // What the page can chart grew (a first timestamp, throughput, GPU reading): drawn again as a
  // fresh load draws it (the zoom goes); each only turns on, so this happens once at most each.
  const gained = (!state.hasTime && state.rows.some((r) => r.ts)) || (!state.speedKnown && hasSpeed(state.rows))
    || (!state.gpus.readings.length && gpus.readings.length > 0);
  if (gained) {
    await load();
    return;
  }
  state.gpus = gpus;
  gpuCharts(gpus, state.holders.gpu);
}, () => state.status === "running");

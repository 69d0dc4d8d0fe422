// Job page: the analytics as cards, and charts of the step history and the GPU readings.
// Charts ask the API for a downsampled history (max_points); a drag over a step chart asks for
// the finer range; double-click or "Reset zoom" returns to the whole run.
import { api, el, main, showError, ready, markNav, num, pct, duration, when, statusBadge, lineChart, columns, card, every, epochSeconds, PALETTE, ApiError } from "./common.js";

const STEP_FIELDS = ["loss", "eval_loss", "samples_per_second", "iteration_time"];
const MAX_POINTS = 1600; // per request: 4 fields -> about 200 buckets, each keeping its extremes
const GPU_POINTS = 3200; // in all, shared by the GPUs: about 400 each for 8 GPUs

const query = new URLSearchParams(location.search);
const jobId = query.get("id");
const state = { zoom: null, charts: {}, markers: [], status: null, logLoss: query.get("log") === "1", rows: [] };

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
      ["Average memory", r.average_gpu_memory_mb == null ? "—" : `${num(r.average_gpu_memory_mb, 0)} MB`],
      ["Peak memory", r.peak_gpu_memory_mb == null ? "—" : `${num(r.peak_gpu_memory_mb, 0)} MB`],
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
      ["Total", `${num(a.energy.total_energy_wh, 1)} Wh`], ["Per 1,000 samples", `${num(a.energy.energy_per_1000_samples_wh, 3)} Wh`],
      ["Idle GPUs", num(a.energy.idle_gpus, 0)], ["Throttled", a.energy.average_throttled_share == null ? "—" : pct(100 * a.energy.average_throttled_share)],
    ]));
  }
  return el("div", { class: "cards" }, list);
}

function warnings(list) {
  if (!list.length) return null;
  return el("section", { class: "warnings", "aria-label": "warnings" },
    el("h2", {}, "Why some figures are missing or approximate"),
    el("ul", {}, list.filter(Boolean).map((w) => el("li", {}, w[0].toUpperCase() + w.slice(1) + (w.endsWith(".") ? "" : ".")))));
}

async function steps(range) {
  const page = await api(`/api/training/${encodeURIComponent(jobId)}/steps`, {
    fields: STEP_FIELDS.join(","), max_points: MAX_POINTS, from_step: range?.[0], to_step: range?.[1],
  });
  return page.steps;
}

function stepData(rows) {
  return {
    loss: columns(rows, "step", ["loss", "eval_loss"]),
    speed: columns(rows, "step", ["samples_per_second", "iteration_time"]),
  };
}

const onSelect = (min, max) => zoom([Math.max(0, Math.floor(min)), Math.ceil(max)]).catch(showError);

function drawLossChart(rows, holder) {
  state.charts.loss = lineChart(holder, {
    title: state.logLoss ? "Loss (log scale)" : "Loss", data: stepData(rows).loss, onSelect, markers: state.markers, logY: state.logLoss,
    series: [{ label: "loss", color: PALETTE[0] }, { label: "eval loss", color: PALETTE[1], points: true }],
  });
}

function drawStepCharts(rows, holders) {
  const data = stepData(rows);
  drawLossChart(rows, holders.loss);
  state.charts.speed = lineChart(holders.speed, {
    title: "Throughput and iteration time", data: data.speed, onSelect, axes: { y: "samples/s", t: "seconds" },
    series: [{ label: "samples/s", color: PALETTE[2] }, { label: "iteration time (s)", color: PALETTE[3], scale: "t" }],
  });
}

async function zoom(range) {
  state.zoom = range;
  const rows = await steps(range);
  state.rows = rows;
  const data = stepData(rows);
  state.charts.loss.setData(data.loss);
  state.charts.speed.setData(data.speed);
  document.getElementById("zoom-state").textContent = range ? `Steps ${range[0]}–${range[1]} (${rows.length} points)` : "";
  document.getElementById("reset-zoom").hidden = !range;
}

function gpuCharts(page, holder) {
  if (!page.readings.length) {
    holder.replaceChildren(el("p", { class: "muted" }, "No GPU readings for this job."));
    return;
  }
  const timed = page.readings.every((r) => r.ts);
  const byGpu = new Map();
  for (const r of page.readings) {
    // a GPU is its UUID when known: two containers' GPUs may share an index on one host
    const name = r.host ? `${r.host} GPU ${r.gpu_index}` : `GPU ${r.gpu_index}`;
    const key = r.gpu_uuid && page.source === "gpu_samples" ? `${name} (${r.gpu_uuid.slice(0, 12)})` : name;
    if (!byGpu.has(key)) byGpu.set(key, []);
    byGpu.get(key).push(r);
  }
  const figures = [
    ["utilization_percent", "Utilization (%)"], ["memory_used_mb", "Memory used (MB)"],
    ["temperature_c", "Temperature (°C)"], ["power_w", "Power (W)"],
  ];
  const source = page.source === "gpu_samples" ? "from GPU samples" : "logged with the steps";
  holder.replaceChildren(el("p", { class: "muted" }, `Per GPU, ${source}.`));
  const gpus = [...byGpu.keys()];
  for (const [field, title] of figures) {
    if (!page.readings.some((r) => r[field] != null)) continue;
    const tables = gpus.map((key) => {
      const rows = byGpu.get(key).filter((r) => (timed ? r.ts : r.step) != null);
      return [rows.map((r) => (timed ? epochSeconds(r.ts) : r.step)), rows.map((r) => r[field])];
    });
    const data = uPlot.join(tables);
    const box = el("div", { class: "chart", dataset: { chart: `gpu-${field}` } });
    holder.append(box);
    lineChart(box, { title, data, time: timed, height: 200, series: gpus.map((g, i) => ({ label: g, color: PALETTE[i % PALETTE.length] })) });
  }
}

async function load() {
  if (!jobId) {
    main(el("h1", {}, "Job"), el("p", {}, "No job given: open a job from the ", el("a", { href: "/" }, "jobs list"), "."));
    return;
  }
  const path = `/api/training/${encodeURIComponent(jobId)}`;
  let analytics, rows, checkpoints, gpus;
  try {
    // all at once: the page waits for the slowest answer, not for their sum
    [analytics, rows, checkpoints, gpus] = await Promise.all([
      api(`${path}/analytics`), steps(null), api(`${path}/checkpoints`), api(`${path}/gpus`, { max_points: GPU_POINTS }),
    ]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      main(el("h1", {}, "Job not found"), el("p", {}, `The warehouse has no job named “${jobId}”. `, el("a", { href: "/" }, "All jobs")));
      return;
    }
    throw error;
  }
  state.status = analytics.status;
  const best = analytics.checkpoints.best_checkpoint;
  state.markers = checkpoints.checkpoints.map((c) => ({ x: c.step, label: c.name, best: c.name === best }));
  const holders = {
    loss: el("div", { class: "chart", dataset: { chart: "loss" } }),
    speed: el("div", { class: "chart", dataset: { chart: "speed" } }),
    gpu: el("div", { class: "gpu-charts" }),
  };
  document.title = `${jobId} · runlytics`;
  main(
    el("h1", {}, jobId, " ", statusBadge(analytics.status)),
    el("p", { class: "muted" }, analytics.model_name ? `Model ${analytics.model_name}. ` : "", `${rows.length ? "" : "No steps logged yet. "}`,
      el("a", { href: `/compare?job_ids=${encodeURIComponent(jobId)}` }, "Compare with other jobs")),
    cards(analytics),
    warnings(analytics.warnings),
    el("h2", {}, "Training curves"),
    el("p", { class: "muted" }, `Checkpoints are dashed lines${best ? `; the best, ${best}, is the solid green one` : ""}. Drag across a chart to zoom into those steps.`),
    el("div", { class: "toolbar" }, el("span", { id: "zoom-state", "aria-live": "polite" }),
      el("label", {}, el("input", { type: "checkbox", id: "log-loss", checked: state.logLoss, onchange: (event) => {
        state.logLoss = event.target.checked;
        query.set("log", state.logLoss ? "1" : "0");
        history.replaceState(null, "", `/job?${query}`);
        drawLossChart(state.rows, holders.loss);
      } }), " Loss on a log scale"),
      el("button", { type: "button", id: "reset-zoom", hidden: true, onclick: () => zoom(null).catch(showError) }, "Reset zoom")),
    holders.loss, holders.speed,
    el("h2", {}, "GPUs"), holders.gpu,
  );
  state.rows = rows;
  drawStepCharts(rows, holders);
  gpuCharts(gpus, holders.gpu);
  for (const holder of [holders.loss, holders.speed]) holder.addEventListener("dblclick", () => zoom(null).catch(showError));
}

markNav("");
load().then(ready).catch((error) => { showError(error); ready(); });
// A running job refreshes itself (keeping the zoom the reader chose).
every(async () => {
  const analytics = await api(`/api/training/${encodeURIComponent(jobId)}/analytics`);
  state.status = analytics.status;
  document.querySelector(".cards").replaceWith(cards(analytics));
  await zoom(state.zoom);
}, () => state.status === "running");

// Compare page: up to 10 jobs side by side: winners, the comparison table, the keys of their
// configs that differ, and their curves overlaid: any metric (loss by default), throughput and
// GPU use. The URL (/compare?job_ids=a,b&metric=grad_norm&smooth=0.6&x=time) holds the choice,
// so it can be shared; job_ids reads as the API reads it (an id holding a comma in double quotes).
import { api, chartControls, el, main, showError, ready, markNav, num, pct, duration, jobLink, lineChart, flatten, epochSeconds, PALETTE, ApiError, compareHref, listField, parseJobIds, apiJobPath, apiJobRecordPath, unreachableJobId } from "./common.js";

const MAX = 10;
const POINTS = 500; // per job
const GPU_POINTS = 800; // per job, shared by its GPUs
// Fields of the step rows a curve can be drawn from; other metrics come from the metrics API.
const STEP_METRICS = ["loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "samples_per_second", "iteration_time"];

const params = new URLSearchParams(location.search);
const asked = params.getAll("job_ids");
const chosen = parseJobIds(asked);
let ids = chosen.slice(0, MAX); // the API's reading once its comparison is in (load)
const state = {
  metric: params.get("metric") || "loss",
  smoothing: Math.min(0.99, Math.max(0, Number(params.get("smooth")) || 0)),
  xAxis: params.get("x") === "time" ? "time" : "step",
  metrics: [...STEP_METRICS],
  histories: new Map(), // metric -> [{job, rows:[{step, ts, value}]}]
  speed: null, gpus: null, t0: new Map(), logged: new Map(), // job -> names of its metrics
};

const WINNERS = [
  ["best_throughput", "Best throughput"], ["best_loss", "Lowest final loss"],
  ["fastest", "Fastest"], ["most_efficient", "Most efficient (overall score)"],
];

const colour = (id) => PALETTE[ids.indexOf(id) % PALETTE.length];
/** One job's answer at `suffix` of its path; `empty` for the jobs `.` and `..`, whose path no
 * browser sends as written (common.js, apiJobPath): their rows stay in the table, without curves. */
const jobApi = (id, suffix, query, empty) => (unreachableJobId(id) ? Promise.resolve(empty) : api(`${apiJobPath(id)}${suffix}`, query));
// A job's record (its config) and its start as analytics.md defines it (started_at, else its first
// row's time less that row's seconds): each job's clock on the elapsed-time axis starts there.
const record = (id) => (unreachableJobId(id)
  ? Promise.resolve({ job_id: id, config: null, start_time: null })
  : Promise.all([api(apiJobRecordPath(id)), api(`${apiJobPath(id)}/analytics`)])
    .then(([job, analytics]) => ({ ...job, start_time: analytics.duration.start_time })));

function setIds(next) {
  location.assign(compareHref(next));
}

function setParam(key, value) {
  if (value === null || value === "" || value === undefined) params.delete(key);
  else params.set(key, value);
  history.replaceState(null, "", `/compare?${params.toString().replaceAll("%2C", ",")}`);
}

function picker() {
  const input = el("input", { id: "pick", list: "pick-jobs", placeholder: "job id", autocomplete: "off", size: 24 });
  const options = el("datalist", { id: "pick-jobs" });
  const form = el("form", { class: "filters", id: "picker" },
    el("label", { for: "pick" }, `Add a job (up to ${MAX}): `), input, options,
    el("button", { type: "submit", disabled: ids.length >= MAX }, "Add"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value && !ids.includes(value) && ids.length < MAX) setIds([...ids, value]);
  });
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const page = await api("/api/training/jobs", { sort: "job_id", limit: 20, id_prefix: input.value.trim() });
      options.replaceChildren(...page.jobs.map((j) => el("option", { value: j.job_id })));
    }, 150);
  });
  const chips = el("ul", { class: "chips", "aria-label": "jobs compared" }, ids.map((id, i) => el("li", { style: `border-color:${PALETTE[i % PALETTE.length]}` },
    jobLink(id), el("button", { type: "button", "aria-label": `remove ${id}`, onclick: () => setIds(ids.filter((x) => x !== id)) }, "×"))));
  return el("div", {}, form, chips);
}

function table(comparison) {
  const winner = comparison.winner;
  const wins = (jobId, key) => winner[key] === jobId;
  const mark = (jobId, key, text) => (wins(jobId, key) ? el("strong", { class: "winner", title: "winner" }, "★ ", text) : text);
  const rows = comparison.jobs.map((job) => el("tr", { dataset: { job: job.job_id } },
    el("th", { scope: "row" }, el("span", { class: "swatch", style: `background:${colour(job.job_id)}` }), jobLink(job.job_id)),
    el("td", {}, mark(job.job_id, "fastest", duration(job.duration_seconds))),
    el("td", {}, mark(job.job_id, "best_throughput", num(job.throughput))),
    el("td", {}, mark(job.job_id, "best_loss", num(job.final_loss, 4))),
    el("td", {}, pct(job.gpu_utilization)),
    el("td", {}, mark(job.job_id, "most_efficient", num(job.overall_score, 1)))));
  return el("div", { class: "scroll" }, el("table", { class: "compare" },
    el("caption", {}, "★ marks the winner of each figure (analytics.md: a job without the figure does not compete)."),
    el("thead", {}, el("tr", {}, ["Job", "Duration", "Samples/s", "Final loss", "GPU util.", "Overall score"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows)));
}

function winnerList(winner) {
  return el("ul", { class: "winners" }, WINNERS.map(([key, label]) => el("li", { dataset: { winner: key } }, `${label}: `, winner[key] ? jobLink(winner[key]) : "—")));
}

// --- config diff

/** The config keys whose values differ between the jobs (a key missing from a job differs). */
export function configDiff(configs) {
  const flat = configs.map((c) => flatten(c || {}));
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  const differ = keys.filter((k) => new Set(flat.map((f) => (k in f ? JSON.stringify(f[k]) : "\u0000missing"))).size > 1);
  return { keys, differ, flat };
}

function configSection(records) {
  const section = el("section", { "aria-label": "config diff", id: "config-diff" });
  if (ids.length < 2) return section.appendChild(el("p", { class: "muted" }, "Add another job to see how their configs differ.")).parentNode;
  const { keys, differ, flat } = configDiff(records.map((r) => r.config));
  if (!differ.length) {
    section.append(el("p", { class: "muted" }, keys.length ? `Their configs are the same (${keys.length} keys).` : "None of these jobs has a config."));
    return section;
  }
  const show = (v) => (v === undefined ? "—" : typeof v === "string" ? v : JSON.stringify(v));
  section.append(el("div", { class: "scroll" }, el("table", { class: "config-diff" },
    el("caption", {}, `${differ.length} of ${keys.length} config keys differ`,
      keys.length > differ.length ? `; the ${keys.length - differ.length} others are the same in every job` : "", ". — : not in that job's config."),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Key"), ids.map((id) => el("th", { scope: "col" }, el("span", { class: "swatch", style: `background:${colour(id)}` }), id)))),
    el("tbody", {}, differ.map((key) => el("tr", { dataset: { key } }, el("th", { scope: "row" }, key), flat.map((f) => el("td", {}, show(f[key])))))))));
  return section;
}

// --- curves

/** Each job's history of one metric: [{job, rows: [{step, ts, value}]}], kept per metric. */
async function metricHistory(metric) {
  if (state.histories.has(metric)) return state.histories.get(metric);
  if (STEP_METRICS.includes(metric)) {
    await stepHistories([metric]);
    return state.histories.get(metric);
  }
  const answers = await Promise.all(ids.map((id) => (state.logged.get(id)?.has(metric) // a job without it is not asked (the 404 would be logged)
    ? jobApi(id, "/metrics/history", { name: metric, max_points: POINTS }, []).then((p) => (Array.isArray(p) ? p : p.points ?? []))
    : Promise.resolve([]))));
  const result = ids.map((job, i) => ({ job, rows: answers[i].filter((r) => r.value != null) }));
  state.histories.set(metric, result);
  return result;
}

/** Several step fields of every job in one request per job (about POINTS rows per field). */
async function stepHistories(fields) {
  const pages = await Promise.all(ids.map((id) => jobApi(id, "/steps", { fields: ["ts", ...fields].join(","), max_points: 2 + POINTS * fields.length }, { steps: [] })));
  for (const field of fields) {
    state.histories.set(field, ids.map((job, i) => ({
      job, rows: pages[i].steps.filter((r) => r[field] != null).map((r) => ({ step: r.step, ts: r.ts, value: r[field] })),
    })));
  }
}

/** Overlaid curves, one per job with data, on the current x axis (elapsed: since the job's start,
 * else since its first timed row). */
function overlay(holder, title, perJob, { smooth = true, why = "", what = title } = {}) {
  const byTime = state.xAxis === "time";
  const tables = perJob.map(({ job, rows, peaks }) => {
    const kept = byTime ? rows.filter((r) => r.ts) : rows;
    const t0 = state.t0.get(job) ?? epochSeconds(kept[0]?.ts);
    const table = [kept.map((r) => (byTime ? epochSeconds(r.ts) - t0 : r.step)), kept.map((r) => r.value)];
    if (peaks) table.push(kept.map((r) => r.peak ?? null)); // a GPU chart's bucket maxima (gpuHistories)
    return { job, table, peaks };
  }).filter((t) => t.table[0].length);
  const missing = perJob.filter((p) => !tables.some((t) => t.job === p.job)).map((p) => p.job);
  const name = holder.dataset.chart;
  if (!tables.length) {
    holder.replaceChildren(el("p", { class: "muted empty" }, `None of these jobs has logged ${what}${byTime ? " with timestamps" : ""}. ${why}`));
    if (window.runlyticsCharts) delete window.runlyticsCharts[name];
    return;
  }
  // the chart in a box of its own, so that a note may follow it
  const box = el("div", { dataset: { chart: name } });
  holder.replaceChildren(box, missing.length ? el("p", { class: "muted missing" }, `Not logged by ${missing.join(", ")}. ${why}`) : "");
  lineChart(box, {
    title, data: uPlot.join(tables.map((t) => t.table)), smoothing: smooth ? state.smoothing : 0, elapsed: byTime,
    series: tables.flatMap((t) => [
      { label: t.job, color: colour(t.job), smooth },
      ...(t.peaks ? [{ label: `${t.job} max`, color: colour(t.job), dash: [1, 3], width: 1, points: false }] : []),
    ]),
  });
}

async function drawMetric(holder) {
  overlay(holder, state.metric, await metricHistory(state.metric));
}

async function drawSpeed(holder) {
  state.speed = state.speed || await metricHistory("samples_per_second");
  overlay(holder, "Throughput (samples/s)", state.speed, { what: "a throughput (samples/s) per step", why: "(Hugging Face's trainer_state.json, for one, logs throughput only in its final summary.)" });
}

/** Each job's GPU utilization and memory: at each reading's time, the mean over its GPUs of
 * each GPU's latest reading. The downsampled readings of two GPUs fall at different times, so a
 * mean of the readings at one timestamp would zigzag between one GPU and the other. At minute
 * resolution (a long job) a reading is a bucket whose mean averages a spike away: then `peak`,
 * the highest of its GPUs' latest bucket maxima, is drawn too (a dotted line, `<job> max`). */
async function gpuHistories() {
  const pages = await Promise.all(ids.map((id) => jobApi(id, "/gpus", { max_points: GPU_POINTS }, { readings: [], resolution: "sample" })));
  const perField = { utilization_percent: [], memory_used_mb: [] };
  pages.forEach((page, i) => {
    const timed = page.readings.filter((r) => r.ts).sort((a, b) => epochSeconds(a.ts) - epochSeconds(b.ts));
    const buckets = page.resolution === "minute";
    for (const field of Object.keys(perField)) {
      const latest = new Map(); // GPU -> its latest value
      const highest = new Map(); // GPU -> its latest bucket's maximum
      const rows = [];
      for (const r of timed) {
        if (r[field] == null) continue;
        const gpu = `${r.host ?? ""}/${r.gpu_uuid ?? r.gpu_index}`;
        latest.set(gpu, r[field]);
        const values = [...latest.values()];
        const row = { ts: r.ts, value: values.reduce((a, b) => a + b, 0) / values.length };
        if (buckets) {
          highest.set(gpu, r.maximum?.[field] ?? r[field]);
          row.peak = Math.max(...highest.values());
        }
        if (rows.length && rows.at(-1).ts === r.ts) rows[rows.length - 1] = row; // one point per time
        else rows.push(row);
      }
      perField[field].push({ job: ids[i], rows, peaks: buckets });
    }
  });
  return perField;
}

function drawGpus(holders) {
  // GPU samples are timed, not stepped: on the step axis they have no place, so the GPU charts run on elapsed time
  const saved = state.xAxis;
  state.xAxis = "time";
  // a long job's readings are minute buckets: its dotted line is the highest reading of its GPUs
  const peaks = (perJob) => (perJob.some((p) => p.peaks) ? "; dotted: the highest reading" : "");
  overlay(holders.util, `GPU utilization (%, mean of the job's GPUs${peaks(state.gpus.utilization_percent)})`, state.gpus.utilization_percent, { smooth: false, what: "GPU utilization" });
  overlay(holders.memory, `GPU memory used (MiB, mean of the job's GPUs${peaks(state.gpus.memory_used_mb)})`, state.gpus.memory_used_mb, { smooth: false, what: "GPU memory" });
  state.xAxis = saved;
}

function controls(redraw) {
  // data-complete: every job's metric list is in (tests wait for it)
  const select = el("select", { id: "metric" }, state.metrics.map((m) => el("option", { value: m, selected: m === state.metric }, m)));
  if (!STEP_METRICS.includes(state.metric)) select.dataset.complete = "true";
  select.addEventListener("change", () => {
    state.metric = select.value;
    setParam("metric", state.metric === "loss" ? null : state.metric);
    redraw().catch(showError);
  });
  return el("div", { class: "toolbar controls" }, el("label", {}, "Metric ", select),
    chartControls(state, { setParam, redraw: () => redraw().catch(showError) }));
}

async function load() {
  markNav("compare");
  if (!ids.length) {
    main(el("h1", {}, "Compare jobs"), el("p", {}, "Pick jobs here, or tick them in the ", el("a", { href: "/" }, "jobs list"), "."), picker());
    return;
  }
  const stepMetric = STEP_METRICS.includes(state.metric);
  const lists = () => Promise.all(ids.map((id) => jobApi(id, "/metrics", undefined, null).catch(() => null))).then(addMetrics);
  const perJob = () => Promise.all([
    Promise.all(ids.map(record)),
    gpuHistories(),
    stepHistories([...new Set(["loss", "samples_per_second", ...(stepMetric ? [state.metric] : [])])]),
    stepMetric ? null : lists(),
  ]);
  let comparison, records, gpus;
  try {
    // one wave: the comparison, and the loss, the throughput and a picked step field in one
    // request per job. The comparison is asked with job_ids as the URL has them, so the API's
    // reading decides (it joins unquoted fields that name no job: `job_ids=bs=8,lr=1e-4` typed by
    // hand or linked before ids were quoted); when its ids differ from the page's, the per-job
    // requests go again with its ids (a second wave, for such links only).
    const [answer, local] = await Promise.allSettled([
      api("/api/training/analytics/compare", { job_ids: chosen.length <= MAX ? asked : ids.map(listField) }),
      perJob(),
    ]);
    if (answer.status === "rejected") throw answer.reason;
    comparison = answer.value;
    const theirs = comparison.jobs.map((job) => job.job_id);
    if (theirs.length !== ids.length || theirs.some((id, i) => id !== ids[i])) {
      ids = theirs;
      state.histories.clear();
      state.logged.clear();
      state.metrics = [...STEP_METRICS];
      [records, gpus] = await perJob();
    } else if (local.status === "rejected") throw local.reason;
    else [records, gpus] = local.value;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      main(el("h1", {}, "Compare jobs"), picker());
      showError(error);
      return;
    }
    throw error;
  }
  if (!state.metrics.includes(state.metric)) state.metric = "loss";
  for (const r of records) state.t0.set(r.job_id, epochSeconds(r.start_time));
  const holders = {
    metric: el("div", { class: "chart", dataset: { chart: "compare-metric" } }),
    speed: el("div", { class: "chart", dataset: { chart: "compare-throughput" } }),
    util: el("div", { class: "chart", dataset: { chart: "compare-gpu-utilization" } }),
    memory: el("div", { class: "chart", dataset: { chart: "compare-gpu-memory" } }),
  };
  const redraw = async () => {
    await Promise.all([drawMetric(holders.metric), drawSpeed(holders.speed)]);
  };
  const picked = controls(redraw);
  main(el("h1", {}, `Compare ${ids.length} job${ids.length > 1 ? "s" : ""}`), picker(), winnerList(comparison.winner), table(comparison),
    el("h2", {}, "Config differences"), configSection(records),
    el("h2", {}, "Curves"), picked, holders.metric, holders.speed,
    el("h2", {}, "GPUs"), el("p", { class: "muted" }, "By time since each job started: GPU readings are timed, not stepped."), holders.util, holders.memory);
  await redraw();
  state.gpus = gpus;
  drawGpus(holders);
  // the other metrics the jobs logged join the picker once their lists come (not waited for)
  if (stepMetric) lists().then(() => fillPicker(picked.querySelector("#metric"))).catch(showError);
}

/** The metric lists of the jobs: which names each logged, and every name for the picker. */
function addMetrics(lists) {
  lists.forEach((list, i) => {
    const names = (Array.isArray(list) ? list : list?.metrics ?? []).map((m) => m.name);
    state.logged.set(ids[i], new Set(names));
    for (const name of names) if (!state.metrics.includes(name)) state.metrics.push(name);
  });
}

function fillPicker(select) {
  const known = new Set([...select.options].map((o) => o.value));
  select.append(...state.metrics.filter((m) => !known.has(m)).map((m) => el("option", { value: m }, m)));
  select.dataset.complete = "true";
}

load().then(ready).catch((error) => { showError(error); ready(); });

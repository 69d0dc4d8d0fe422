// Shared by every page: API calls, formatting, DOM building and charts (uPlot).
// Values from the API go into the page as text nodes only, never as HTML.

export const STATUSES = ["queued", "running", "paused", "completed", "failed", "cancelled", "unknown"];

// Seconds between refreshes of a page showing running jobs (?refresh=N overrides).
export const REFRESH_SECONDS = Number(new URLSearchParams(location.search).get("refresh")) || 15;

// Colours with at least 3:1 contrast against white (WCAG non-text), distinct for colour-blind eyes.
export const PALETTE = ["#1f5fbf", "#c2410c", "#15803d", "#9333ea", "#b91c1c", "#0e7490", "#a16207", "#be185d", "#4d7c0f", "#475569"];

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

/** GET an API path with query parameters (null and "" left out, a list as the key repeated); the
 * parsed JSON or ApiError. */
export async function api(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
    else if (value !== null && value !== undefined && value !== "") query.set(key, value);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  const headers = {};
  const token = localStorage.getItem("runlytics-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { headers });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { detail: response.statusText };
  }
  if (response.status === 401) askToken();
  if (!response.ok) throw new ApiError(response.status, body.detail ?? response.statusText);
  return body;
}

function askToken() {
  if (document.getElementById("token-form")) return;
  const input = el("input", { type: "password", id: "token", autocomplete: "off" });
  const form = el("form", { id: "token-form", class: "notice" },
    el("label", { for: "token" }, "This server needs an API token: "), input, el("button", { type: "submit" }, "Use token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("runlytics-token", input.value);
    location.reload();
  });
  document.querySelector("main").prepend(form);
}

/** An element with attributes (on* as listeners) and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") node.style.cssText = value; // CSSOM: the CSP allows no style attribute
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/**
 * The smoothing slider and the x-axis choice of a chart page. A change updates
 * state.smoothing / state.xAxis and the page's URL (setParam), then calls redraw("smoothing")
 * or redraw("x"). Without timestamps (hasTime false) elapsed time cannot be chosen.
 */
export function chartControls(state, { setParam, redraw, hasTime = true }) {
  const slider = el("input", { type: "range", id: "smoothing", min: 0, max: 0.99, step: 0.01, value: state.smoothing, "aria-describedby": "smoothing-value" });
  const shown = el("output", { id: "smoothing-value", for: "smoothing" }, state.smoothing.toFixed(2));
  slider.addEventListener("input", () => {
    state.smoothing = Number(slider.value);
    shown.textContent = state.smoothing.toFixed(2);
    setParam("smooth", state.smoothing > 0 ? state.smoothing : null);
    redraw("smoothing");
  });
  const radio = (value, text) => el("label", {}, el("input", {
    type: "radio", name: "x-axis", id: `x-${value}`, value, checked: state.xAxis === value,
    disabled: value === "time" && !hasTime,
    onchange: () => {
      state.xAxis = value;
      setParam("x", value === "time" ? "time" : null);
      redraw("x");
    },
  }), ` ${text}`);
  return [
    el("label", { for: "smoothing" }, "Smoothing ", slider, " ", shown),
    el("fieldset", { class: "inline" }, el("legend", {}, "X axis"), radio("step", "step"), radio("time", "elapsed time"),
      hasTime ? null : el("span", { class: "muted" }, " (no timestamps logged)")),
  ];
}

export function main(...children) {
  const root = document.getElementById("main");
  root.replaceChildren(...children.filter((child) => child !== null && child !== undefined));
  return root;
}

export function showError(error, where = document.getElementById("main")) {
  const text = error instanceof ApiError ? `The API answered ${error.status}: ${error.message}` : String(error.message || error);
  where.prepend(el("p", { class: "error", role: "alert" }, text));
  console.warn(error);
}

/** Tell tests and the benchmark that the page has drawn: body[data-ready] and a timing. */
export function ready() {
  if (document.body.dataset.ready) return;
  window.runlyticsReadyMs = performance.now();
  document.body.dataset.ready = "true";
}

export function markNav(page) {
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
  }
}

// --- formatting: null is "—" (never 0 in disguise)

export const DASH = "—";

export function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  const v = Number(value);
  const text = v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  // a figure too small for the digits is never 0: 4.72e-5, or 0.3 with no decimals asked
  if (v !== 0 && Number.isFinite(v) && /^-?0$/.test(text)) {
    return Math.abs(v) < 1e-3 ? v.toExponential(2).replace(/\.?0+e/, "e") : v.toLocaleString("en-US", { maximumSignificantDigits: 3 });
  }
  return text;
}

/** A figure and its unit ("12.5 Wh"), or the dash alone when there is no figure (not "— Wh"). */
export function withUnit(value, unit, digits = 2) {
  return value === null || value === undefined || Number.isNaN(value) ? DASH : `${num(value, digits)} ${unit}`;
}

export function pct(value) {
  if (value === null || value === undefined) return DASH;
  let text = num(value, 1);
  // a share just below 100 % never reads 100: a loss reduction of 99.995 % is no final loss of 0
  const near = (t) => t === "100" || t === "-100";
  for (let digits = 2; digits <= 15 && Math.abs(Number(value)) < 100 && near(text); digits++) text = num(value, digits);
  return `${text} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  if (Math.abs(seconds) < 59.5) return `${num(seconds, 0)} s`; // 0.3 s is never "0 s"
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h === 0) return `${m} min ${String(r).padStart(2, "0")} s`;
  if (h < 48) return `${h} h ${String(m).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** An API time (ISO, UTC) as "YYYY-MM-DD HH:MM" UTC; the full value in a tooltip is the caller's. */
export function when(iso) {
  if (!iso) return DASH;
  return iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "").replace(/Z$/, "") + " UTC";
}

export function epochSeconds(iso) {
  return iso ? Date.parse(iso) / 1000 : null;
}

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

// --- a job's API answers

/** The path of a job's answers, `/api/training/{job_id}` (add `/analytics`, `/steps`, ...): every
 * page builds it here. The id is one path segment, `/` and `%` escaped. A browser resolves a
 * segment `.` or `..` away before it asks, written `%2E` or not (WHATWG URL: `%2E%2E` is a
 * double-dot segment), so the jobs `.` and `..` have no path a page can ask: see
 * unreachableJobId. */
export function apiJobPath(jobId) {
  return `/api/training/${encodeURIComponent(jobId)}`;
}

/** A job's record: under /jobs/, which no other answer's path can be (an id `x/steps` or `insights`). */
export function apiJobRecordPath(jobId) {
  return `/api/training/jobs/${encodeURIComponent(jobId)}`;
}

/** Whether a job's answers are out of a browser's reach: its id is `.` or `..` (apiJobPath). */
export function unreachableJobId(jobId) {
  return jobId === "." || jobId === "..";
}

export function jobLink(jobId) {
  return el("a", { href: `/job?id=${encodeURIComponent(jobId)}` }, jobId);
}

// --- lists of job ids (compare links): written and read as the API's job_ids (warehouse/job_lists.py)

// The blanks around an id or a quoted field: ASCII's, as job_lists.BLANKS (not \s, which also takes
// a no-break space or a byte order mark, nor trim()): any other character is part of the id.
const BLANK = /[ \t\n\r\f\v]/;
const EDGE_BLANKS = /^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g;

/** One id as a field of a job_ids list: in double quotes ("" for a quote) when it holds a comma, a
 * quote or edge blanks (a sweep folder `bs=8,lr=1e-4`), since the API takes a quoted field whole. */
export function listField(jobId) {
  const quote = /[",]/.test(jobId) || BLANK.test(jobId.slice(0, 1)) || BLANK.test(jobId.slice(-1));
  return quote ? `"${jobId.replaceAll('"', '""')}"` : jobId;
}

/** The compare page's link for these jobs: `/compare?job_ids=a,"bs=8,lr=1e-4"`. */
export function compareHref(jobIds) {
  return jobIds.length ? `/compare?job_ids=${jobIds.map((id) => encodeURIComponent(listField(id))).join(",")}` : "/compare";
}

/** The ids of job_ids values (given once or repeated) as the API reads them: each value split as
 * CSV splits a line (listFields), a quoted field whole, blanks around an unquoted one dropped, each
 * id once. The API also joins unquoted fields that name no job with the following ones when the
 * join names one (`job_ids=bs=8,lr=1e-4` typed by hand): the compare page takes the API's ids then. */
export function parseJobIds(values) {
  const ids = [];
  for (const value of values) {
    for (const [text, quoted] of listFields(value)) ids.push(quoted ? text : text.replace(EDGE_BLANKS, ""));
  }
  return [...new Set(ids.filter(Boolean))];
}

/** [text, quoted] per field, as warehouse/job_lists.py `_fields` reads them: a `"` opens a quoted
 * field only at the start of a field (after blanks), `""` inside is a quote, and the field ends at
 * the next lone `"`, which only blanks may follow before the comma; any other `"` is plain text
 * (`q"uote`), and so is a quote never closed or followed by more text. */
function listFields(value) {
  const fields = [];
  let start = 0;
  for (;;) {
    const quoted = quotedField(value, start);
    let end;
    if (quoted) {
      fields.push([quoted[0], true]);
      end = quoted[1];
    } else {
      const comma = value.indexOf(",", start);
      end = comma < 0 ? value.length : comma;
      fields.push([value.slice(start, end), false]);
    }
    if (end >= value.length) return fields;
    start = end + 1;
  }
}

function quotedField(value, start) {
  let i = start;
  while (i < value.length && BLANK.test(value[i])) i++;
  if (i === value.length || value[i] !== '"') return null;
  const parts = [];
  i++;
  for (;;) {
    const close = value.indexOf('"', i);
    if (close < 0) return null; // never closed
    parts.push(value.slice(i, close));
    if (value[close + 1] === '"') {
      parts.push('"'); // "" is a quote
      i = close + 2;
      continue;
    }
    let end = close + 1;
    while (end < value.length && BLANK.test(value[end])) end++;
    if (end < value.length && value[end] !== ",") return null; // more text after the closing quote
    return [parts.join(""), end];
  }
}

// --- charts

/**
 * A uPlot line chart that fills its container's width.
 * series: [{label, color, scale?, dash?}]; data: [xs, ys1, ys2, ...].
 * opts.time: x is epoch seconds; opts.onSelect(min, max): a drag-selected x range;
 * opts.markers: [{x, label, best}] drawn as vertical lines; opts.bands: [{from, to, label, kind}]
 * shaded x ranges behind the series (insights); opts.axes: y axis labels by scale;
 * opts.logY: the "y" scale is logarithmic; opts.elapsed: x is seconds since the job started;
 * opts.smoothing: the weight (0 to <1) of the EMA applied to series marked {smooth: true}, each
 * then drawn over a faint copy of its raw values.
 * What was plotted is kept in window.runlyticsCharts[container's data-chart] for tests.
 */
export function lineChart(container, { title, series, data, time = false, elapsed = false, onSelect, markers = [], bands = [], axes = {}, height = 260, spanGaps = true, logY = false, smoothing = 0 }) {
  ({ series, data } = smoothed(series, data, smoothing));
  // a log scale can't place zero or negative values: they become gaps
  if (logY) data = [data[0], ...data.slice(1).map((ys) => ys.map((v) => (v != null && v > 0 ? v : null)))];
  const width = Math.max(280, container.clientWidth || 600);
  const scales = { x: { time } };
  const yAxes = [];
  for (const s of series) {
    const scale = s.scale || "y";
    if (!scales[scale]) {
      scales[scale] = logY && scale === "y" ? { auto: true, distr: 3, log: 10 } : { auto: true };
      yAxes.push({ scale, label: axes[scale] || "", side: yAxes.length === 0 ? 3 : 1, grid: { show: yAxes.length === 0 }, size: 60, values: (u, splits) => splits.map(axisNumber) });
    }
  }
  const options = {
    title,
    width,
    height,
    scales,
    // a time axis reads UTC, as labelled, not the browser's local time
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    series: [
      { label: time ? "time (UTC)" : elapsed ? "elapsed" : "step", value: time ? (u, v) => (v == null ? DASH : new Date(v * 1000).toISOString().slice(0, 19).replace("T", " ")) : elapsed ? (u, v) => (v == null ? DASH : duration(v)) : undefined },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: s.width ?? 1.5,
        scale: s.scale || "y",
        dash: s.dash,
        spanGaps: s.spanGaps ?? spanGaps,
        // a series of few points shows them: one point alone draws no line
        points: { show: s.points ?? data[i + 1].filter((v) => v != null).length < 30, size: 5 },
        value: (u, v) => (v == null ? DASH : num(v, 4)),
      })),
    ],
    axes: [elapsed ? { label: "elapsed", space: 80, values: (u, splits) => splits.map(shortDuration) } : { label: time ? "" : "step", space: 80 }, ...yAxes],
    cursor: { drag: { x: Boolean(onSelect), y: false, setScale: false } },
    hooks: {
      drawClear: [(u) => drawBands(u, bands)],
      draw: [(u) => drawMarkers(u, markers), (u) => keepTicks(u, record)],
      setSelect: onSelect ? [(u) => {
        if (u.select.width < 5) return;
        const min = u.posToVal(u.select.left, "x");
        const max = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        onSelect(min, max);
      }] : [],
    },
    legend: { live: true },
  };
  observers.get(container)?.disconnect(); // a chart drawn again in the same place
  container.replaceChildren();
  const record = { title, labels: series.map((s) => s.label), data, bands, smoothing, x: options.series[0].label, xSplits: [], xTicks: [] };
  const chart = new uPlot(options, data, container);
  const resize = new ResizeObserver(() => {
    const w = Math.max(280, container.clientWidth);
    if (Math.abs(w - chart.width) > 4) chart.setSize({ width: w, height });
  });
  resize.observe(container);
  observers.set(container, resize);
  if (container.dataset.chart) {
    window.runlyticsCharts = window.runlyticsCharts || {};
    window.runlyticsCharts[container.dataset.chart] = record;
  }
  return chart;
}

/** The x axis's ticks as drawn, for tests: their values and their labels (uPlot's own). */
function keepTicks(u, record) {
  const axis = u.axes[0];
  record.xSplits = [...(axis._splits ?? [])];
  record.xTicks = (axis._values ?? []).map(String);
}

/**
 * TensorBoard's smoothing: an exponential moving average debiased like Adam's (the first values
 * are not pulled towards 0). weight 0 leaves the values as they are; a gap or a non-finite value
 * is passed through and does not move the average.
 */
export function ema(values, weight) {
  if (!(weight > 0)) return values.slice();
  let last = 0, n = 0;
  return values.map((v) => {
    if (v == null || !Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    n += 1;
    return last / (1 - weight ** n);
  });
}

/** Series marked {smooth} become two: the raw values, faint, then their EMA in full colour. */
function smoothed(series, data, weight) {
  if (!(weight > 0) || !series.some((s) => s.smooth)) return { series, data };
  const outSeries = [], outData = [data[0]];
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    if (s.smooth) {
      outSeries.push({ ...s, label: `${s.label} (raw)`, color: `${color}40`, points: false, raw: true });
      outData.push(data[i + 1]);
      outSeries.push({ ...s, color, points: false });
      outData.push(ema(data[i + 1], weight));
    } else {
      outSeries.push(s);
      outData.push(data[i + 1]);
    }
  });
  return { series: outSeries, data: outData };
}

/** An axis tick: tiny values (a learning rate of 2e-5) in exponent form, not rounded to 0. */
function axisNumber(v) {
  if (v == null) return "";
  return v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential() : uPlot.fmtNum(v);
}

/** Seconds as a short axis label: 45s, 12m, 3.5h, 2.1d. */
export function shortDuration(seconds) {
  if (seconds == null) return "";
  const s = Math.abs(seconds);
  if (s < 120) return `${num(seconds, 0)}s`;
  if (s < 7200) return `${num(seconds / 60, 1)}m`;
  if (s < 172800) return `${num(seconds / 3600, 1)}h`;
  return `${num(seconds / 86400, 1)}d`;
}

// Insight kinds by the colour of their bands: losses red, speed amber.
const BAND_COLORS = { stall: "rgba(100, 116, 139, 0.28)", throughput_drop: "rgba(217, 119, 6, 0.22)" };

function drawBands(u, bands) {
  if (!bands.length) return;
  const ctx = u.ctx;
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  bands.forEach((b, n) => {
    let x0 = u.valToPos(b.from, "x", true), x1 = u.valToPos(b.to, "x", true);
    const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
    if (x1 < left || x0 > right) return;
    x0 = Math.max(left, x0);
    x1 = Math.min(right, x1);
    const width = Math.max(3 * dpr, x1 - x0); // a one-step spike stays visible
    ctx.fillStyle = BAND_COLORS[b.kind] || "rgba(185, 28, 28, 0.18)";
    ctx.fillRect(x0 - (width - (x1 - x0)) / 2, u.bbox.top, width, u.bbox.height);
    if (b.kind === "stall") { // a gap: hatched, the line across it is not data
      ctx.strokeStyle = "rgba(71, 85, 105, 0.6)";
      ctx.lineWidth = dpr;
      ctx.setLineDash([3 * dpr, 3 * dpr]);
      for (const x of [x0, x1]) {
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
      }
      ctx.setLineDash([]);
    }
    if (b.label) { // staggered in three rows, so that neighbours' labels do not overlap
      ctx.fillStyle = b.kind === "stall" ? "#334155" : "#7f1d1d";
      ctx.font = `${11 * dpr}px sans-serif`;
      ctx.fillText(b.label, Math.min(x0 + 3 * dpr, right - 60 * dpr), u.bbox.top + u.bbox.height - (6 + 13 * (n % 3)) * dpr);
    }
  });
  ctx.restore();
}

const observers = new WeakMap();

function drawMarkers(u, markers) {
  if (!markers.length) return;
  const ctx = u.ctx;
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  for (const m of markers) {
    const x = u.valToPos(m.x, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = m.best ? "#15803d" : "#64748b";
    ctx.lineWidth = (m.best ? 3 : 1) * dpr;
    ctx.setLineDash(m.best ? [] : [4 * dpr, 4 * dpr]);
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    if (m.best) {
      ctx.fillStyle = "#15803d";
      ctx.font = `${12 * dpr}px sans-serif`;
      ctx.fillText(`★ ${m.label}`, x + 4 * dpr, u.bbox.top + 14 * dpr);
    }
  }
  ctx.restore();
}

/** Rows of objects to uPlot columns: [xs, ...one array per key]; null for missing values. */
export function columns(rows, x, keys) {
  return [rows.map((r) => r[x]), ...keys.map((k) => rows.map((r) => (r[k] === undefined ? null : r[k])))];
}

/** A bar chart drawn as SVG by our code: bars [{label, value, title}]. */
export function barChart({ bars, width = 560, height = 200, color = PALETTE[0], label = "" }) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 -18 ${width} ${height + 58}`); // room for the value above the tallest bar
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.classList.add("bars");
  const max = Math.max(1, ...bars.map((b) => b.value));
  const step = width / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const h = (b.value / max) * height;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", i * step + 1);
    rect.setAttribute("y", height - h);
    rect.setAttribute("width", Math.max(1, step - 2));
    rect.setAttribute("height", Math.max(0, h));
    rect.setAttribute("fill", color);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = b.title || `${b.label}: ${b.value}`;
    rect.append(tip);
    rect.dataset.label = b.label;
    svg.append(rect);
    if (b.value > 0) {
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", i * step + step / 2);
      text.setAttribute("y", height - h - 4);
      text.setAttribute("text-anchor", "middle");
      text.setAttribute("class", "bar-value");
      text.textContent = b.value;
      svg.append(text);
    }
    if (bars.length <= 12 || i % Math.ceil(bars.length / 8) === 0) {
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", i * step + step / 2);
      text.setAttribute("y", height + 16);
      text.setAttribute("text-anchor", "middle");
      text.setAttribute("class", "bar-label");
      text.textContent = b.label;
      svg.append(text);
    }
  });
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", 0);
  axis.setAttribute("x2", width);
  axis.setAttribute("y1", height);
  axis.setAttribute("y2", height);
  axis.setAttribute("stroke", "#475569");
  svg.append(axis);
  return svg;
}

/** A card: a titled list of figures [[name, value, title?]]. */
export function card(title, figures, extra = null) {
  return el("section", { class: "card" },
    el("h3", {}, title),
    el("dl", {}, figures.flatMap(([name, value, tip]) => [el("dt", {}, name), el("dd", { title: tip || null }, value)])),
    extra);
}

/** Every REFRESH_SECONDS, call fn when wanted() holds and the page is visible. */
export function every(fn, wanted) {
  const tick = async () => {
    if (wanted() && document.visibilityState === "visible") {
      try {
        await fn();
      } catch (error) {
        console.warn(error);
      }
    }
    setTimeout(tick, REFRESH_SECONDS * 1000);
  };
  setTimeout(tick, REFRESH_SECONDS * 1000);
}

// --- insights (shared/spec/insights.md)

export const SEVERITIES = ["critical", "warning", "info"];
export const INSIGHT_KINDS = [
  "nonfinite_loss", "loss_spike", "loss_divergence", "overfitting", "throughput_drop", "stall", "slow_vs_peers",
  "gpu_idle", "gpu_straggler", "gpu_throttled", "low_gpu_utilization", "memory_headroom", "work_at_risk", "silent_running",
];

export function severityBadge(severity) {
  return el("span", { class: `badge sev-${severity}` }, severity);
}

/** A GPU as the pages name it: "node-1 GPU 0", or "GPU 0" without a host; with a UUID (two GPUs of
 * a host may share an index: containers, Slurm cgroups) its start in brackets, as the job page's
 * GPU charts' legends name it: "node-1 GPU 0 (GPU-8f2c41d0)". */
export function gpuName(host, index, uuid = null) {
  const name = host ? `${host} GPU ${index}` : `GPU ${index}`;
  return uuid ? `${name} (${uuid.slice(0, 12)})` : name;
}

/** "12–40", "12" or "—": the steps an insight covers. */
export function stepRange(insight) {
  if (insight.first_step == null) return DASH;
  return insight.first_step === insight.last_step ? num(insight.first_step, 0) : `${num(insight.first_step, 0)}–${num(insight.last_step, 0)}`;
}

/** The badge of a job row: its critical and warning insights, linking to the job's list of them. */
export function insightBadge(jobId, counts) {
  if (!counts || !(counts.critical || counts.warning)) return null;
  const worst = counts.critical ? "critical" : "warning";
  const parts = [counts.critical ? `${counts.critical} critical` : null, counts.warning ? `${counts.warning} warning${counts.warning > 1 ? "s" : ""}` : null].filter(Boolean);
  return el("a", { class: `badge insight-badge sev-${worst}`, href: `/job?id=${encodeURIComponent(jobId)}#insights`, title: parts.join(", "), dataset: { critical: counts.critical || 0, warning: counts.warning || 0 } },
    `⚠ ${(counts.critical || 0) + (counts.warning || 0)}`);
}

/** Bin labels that never read the same: the fewest decimals that tell every low edge apart. */
export function binLabels(edges) {
  for (let digits = 0; digits <= 6; digits++) {
    const labels = edges.map((v) => Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
    if (new Set(labels).size === labels.length) return labels;
  }
  return edges.map((v) => String(v));
}

/** A nested config as dotted keys -> values (arrays kept whole). */
export function flatten(config, prefix = "", out = {}) {
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    if (prefix) out[prefix] = config;
    return out;
  }
  const entries = Object.entries(config);
  if (!entries.length && prefix) out[prefix] = config; // an empty object is a value: {} differs from a missing key
  for (const [key, value] of entries) flatten(value, prefix ? `${prefix}.${key}` : key, out);
  return out;
}

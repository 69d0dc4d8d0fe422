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

/** GET an API path with query parameters (null and "" left out); the parsed JSON or ApiError. */
export async function api(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, value);
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
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function pct(value) {
  return value === null || value === undefined ? DASH : `${num(value, 1)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
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

export function jobLink(jobId) {
  return el("a", { href: `/job?id=${encodeURIComponent(jobId)}` }, jobId);
}

// --- charts

/**
 * A uPlot line chart that fills its container's width.
 * series: [{label, color, scale?, dash?}]; data: [xs, ys1, ys2, ...].
 * opts.time: x is epoch seconds; opts.onSelect(min, max): a drag-selected x range;
 * opts.markers: [{x, label, best}] drawn as vertical lines; opts.axes: y axis labels by scale;
 * opts.logY: the "y" scale is logarithmic.
 */
export function lineChart(container, { title, series, data, time = false, onSelect, markers = [], axes = {}, height = 260, spanGaps = true, logY = false }) {
  // a log scale can't place zero or negative values: they become gaps
  if (logY) data = [data[0], ...data.slice(1).map((ys) => ys.map((v) => (v != null && v > 0 ? v : null)))];
  const width = Math.max(280, container.clientWidth || 600);
  const scales = { x: { time } };
  const yAxes = [];
  for (const s of series) {
    const scale = s.scale || "y";
    if (!scales[scale]) {
      scales[scale] = logY && scale === "y" ? { auto: true, distr: 3, log: 10 } : { auto: true };
      yAxes.push({ scale, label: axes[scale] || "", side: yAxes.length === 0 ? 3 : 1, grid: { show: yAxes.length === 0 }, size: 60 });
    }
  }
  const options = {
    title,
    width,
    height,
    scales,
    series: [
      { label: time ? "time (UTC)" : "step", value: time ? (u, v) => (v == null ? DASH : new Date(v * 1000).toISOString().slice(0, 19).replace("T", " ")) : undefined },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: 1.5,
        scale: s.scale || "y",
        dash: s.dash,
        spanGaps,
        // a series of few points shows them: one point alone draws no line
        points: { show: s.points ?? data[i + 1].filter((v) => v != null).length < 30, size: 5 },
        value: (u, v) => (v == null ? DASH : num(v, 4)),
      })),
    ],
    axes: [{ label: time ? "" : "step", space: 80 }, ...yAxes],
    cursor: { drag: { x: Boolean(onSelect), y: false, setScale: false } },
    hooks: {
      draw: [(u) => drawMarkers(u, markers)],
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
  const chart = new uPlot(options, data, container);
  const resize = new ResizeObserver(() => {
    const w = Math.max(280, container.clientWidth);
    if (Math.abs(w - chart.width) > 4) chart.setSize({ width: w, height });
  });
  resize.observe(container);
  observers.set(container, resize);
  return chart;
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

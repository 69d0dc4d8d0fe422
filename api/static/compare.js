// Compare page: up to 10 jobs side by side, their loss curves overlaid, each winner marked.
// The URL (/compare?job_ids=a,b) holds the choice, so it can be shared.
import { api, el, main, showError, ready, markNav, num, pct, duration, jobLink, lineChart, PALETTE, ApiError } from "./common.js";

const MAX = 10;
const POINTS = 500; // per job

const chosen = (new URLSearchParams(location.search).get("job_ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
const ids = [...new Set(chosen)].slice(0, MAX);

const WINNERS = [
  ["best_throughput", "Best throughput"], ["best_loss", "Lowest final loss"],
  ["fastest", "Fastest"], ["most_efficient", "Most efficient (overall score)"],
];

function setIds(next) {
  const url = next.length ? `/compare?job_ids=${next.map(encodeURIComponent).join(",")}` : "/compare";
  location.assign(url);
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
  const rows = comparison.jobs.map((job, i) => el("tr", { dataset: { job: job.job_id } },
    el("th", { scope: "row" }, el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), jobLink(job.job_id)),
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

async function curves(holder) {
  const histories = await Promise.all(ids.map((id) => api(`/api/training/${encodeURIComponent(id)}/steps`, { fields: "loss", max_points: POINTS })));
  const tables = histories.map((h) => {
    const rows = h.steps.filter((r) => r.loss != null);
    return [rows.map((r) => r.step), rows.map((r) => r.loss)];
  });
  if (!tables.some((t) => t[0].length)) {
    holder.replaceChildren(el("p", { class: "muted" }, "None of these jobs has logged a loss."));
    return;
  }
  lineChart(holder, {
    title: "Loss", data: uPlot.join(tables.filter((t) => t[0].length)),
    series: ids.filter((_, i) => tables[i][0].length).map((id) => ({ label: id, color: PALETTE[ids.indexOf(id) % PALETTE.length] })),
  });
}

async function load() {
  markNav("compare");
  if (!ids.length) {
    main(el("h1", {}, "Compare jobs"), el("p", {}, "Pick jobs here, or tick them in the ", el("a", { href: "/" }, "jobs list"), "."), picker());
    return;
  }
  let comparison;
  try {
    comparison = await api("/api/training/analytics/compare", { job_ids: ids.join(",") });
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      main(el("h1", {}, "Compare jobs"), picker());
      showError(error);
      return;
    }
    throw error;
  }
  const holder = el("div", { class: "chart", dataset: { chart: "compare-loss" } });
  main(el("h1", {}, `Compare ${ids.length} job${ids.length > 1 ? "s" : ""}`), picker(), winnerList(comparison.winner), table(comparison),
    el("h2", {}, "Loss curves"), holder);
  await curves(holder);
}

load().then(ready).catch((error) => { showError(error); ready(); });

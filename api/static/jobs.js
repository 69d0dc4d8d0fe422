// Jobs page: every job, filtered and sorted by the API, in keyset pages; pick jobs to compare.
import { api, el, main, showError, ready, markNav, num, pct, duration, when, statusBadge, jobLink, insightBadge, STATUSES, every, compareHref } from "./common.js";

const COLUMNS = [
  // [sort key, heading, cell]
  // the badge: the job's critical and warning insights (shared/spec/insights.md), linking to them
  ["job_id", "Job", (j) => [jobLink(j.job_id), insightBadge(j.job_id, j.insights)]],
  ["status", "Status", (j) => statusBadge(j.status)],
  ["model_name", "Model", (j) => j.model_name ?? "—"],
  ["start_time", "Start", (j) => when(j.start_time)],
  ["total_seconds", "Duration", (j) => duration(j.total_seconds)],
  ["total_iterations", "Steps", (j) => num(j.total_iterations, 0)],
  ["average_samples_per_second", "Samples/s", (j) => num(j.average_samples_per_second)],
  ["final_loss", "Final loss", (j) => num(j.final_loss, 4)],
  ["average_gpu_utilization", "GPU util.", (j) => pct(j.average_gpu_utilization)],
];
const MAX_COMPARE = 10;
const PAGE = 50;

const params = new URLSearchParams(location.search);
const state = {
  status: params.get("status") || "",
  model: params.get("model") || "",
  since: params.get("since") || "",
  until: params.get("until") || "",
  sort: params.get("sort") || "-start_time",
  cursors: [null], // the cursor of each page seen so far; the last is the current page's
  selected: new Set((params.get("selected") || "").split(",").filter(Boolean)),
  rows: [],
};

const table = el("table", { class: "jobs", "aria-describedby": "count" });
const count = el("p", { id: "count", class: "muted", "aria-live": "polite" });
const prev = el("button", { type: "button", onclick: () => turn(-1) }, "← Previous");
const next = el("button", { type: "button", onclick: () => turn(1) }, "Next →");
const compare = el("a", { class: "button", id: "compare-selected", href: "/compare" }, "Compare selected");
const models = el("datalist", { id: "models" });

function filterForm() {
  const status = el("select", { name: "status", id: "f-status" },
    el("option", { value: "" }, "any"), STATUSES.map((s) => el("option", { value: s, selected: s === state.status }, s)));
  const model = el("input", { name: "model", id: "f-model", list: "models", value: state.model, placeholder: "any", size: 14 });
  const since = el("input", { name: "since", id: "f-since", type: "date", value: state.since });
  const until = el("input", { name: "until", id: "f-until", type: "date", value: state.until });
  const form = el("form", { class: "filters", role: "search" },
    el("label", {}, "Status ", status), el("label", {}, "Model ", model), models,
    el("label", {}, "Started from ", since), el("label", {}, "before ", until),
    el("button", { type: "submit" }, "Filter"),
    el("button", { type: "reset" }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(state, { status: status.value, model: model.value.trim(), since: since.value, until: until.value, cursors: [null] });
    load();
  });
  form.addEventListener("reset", () => {
    Object.assign(state, { status: "", model: "", since: "", until: "", cursors: [null] });
    setTimeout(load);
  });
  return form;
}

function query() {
  return {
    status: state.status,
    model: state.model,
    since: state.since ? `${state.since}T00:00:00Z` : "",
    until: state.until ? `${state.until}T00:00:00Z` : "",
    sort: state.sort,
    limit: PAGE,
  };
}

async function load() {
  const page = await api("/api/training/jobs", { ...query(), cursor: state.cursors.at(-1) });
  state.rows = page.jobs;
  state.nextCursor = page.next_cursor;
  render(page.total);
  const shown = new URLSearchParams();
  for (const key of ["status", "model", "since", "until"]) if (state[key]) shown.set(key, state[key]);
  if (state.sort !== "-start_time") shown.set("sort", state.sort);
  history.replaceState(null, "", shown.toString() ? `/?${shown}` : "/");
}

function render(total) {
  const [key, descending] = [state.sort.replace(/^-/, ""), state.sort.startsWith("-")];
  const head = el("tr", {}, el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Compare")),
    COLUMNS.map(([sortKey, heading]) => el("th", { scope: "col", "aria-sort": sortKey === key ? (descending ? "descending" : "ascending") : null },
      el("button", { type: "button", class: "sort", dataset: { sort: sortKey }, onclick: () => sortBy(sortKey) },
        heading, sortKey === key ? (descending ? " ▼" : " ▲") : ""))));
  const body = state.rows.map((job) => el("tr", { dataset: { job: job.job_id, status: job.status } },
    el("td", {}, el("input", {
      type: "checkbox", "aria-label": `compare ${job.job_id}`, checked: state.selected.has(job.job_id),
      onchange: (event) => select(job.job_id, event.target.checked),
    })),
    COLUMNS.map(([sortKey, , cell]) => el("td", { class: `c-${sortKey}` }, cell(job)))));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, body));
  const first = (state.cursors.length - 1) * PAGE;
  count.textContent = total ? `Jobs ${first + 1}–${first + state.rows.length} of ${total}` : "No jobs match.";
  prev.disabled = state.cursors.length <= 1;
  next.disabled = !state.nextCursor;
  updateCompare();
}

function sortBy(key) {
  state.sort = state.sort === `-${key}` ? key : state.sort === key ? `-${key}` : (["job_id", "model_name", "status"].includes(key) ? key : `-${key}`);
  state.cursors = [null];
  load().catch(showError);
}

function turn(direction) {
  if (direction > 0 && state.nextCursor) state.cursors.push(state.nextCursor);
  if (direction < 0 && state.cursors.length > 1) state.cursors.pop();
  load().catch(showError);
}

function select(jobId, on) {
  if (on && state.selected.size >= MAX_COMPARE) {
    showError(new Error(`At most ${MAX_COMPARE} jobs can be compared.`));
    for (const box of table.querySelectorAll(`tr[data-job] input`)) box.checked = state.selected.has(box.closest("tr").dataset.job);
    return;
  }
  if (on) state.selected.add(jobId);
  else state.selected.delete(jobId);
  updateCompare();
}

function updateCompare() {
  const ids = [...state.selected];
  compare.textContent = `Compare selected (${ids.length})`;
  compare.href = compareHref(ids);
  compare.classList.toggle("disabled", ids.length === 0);
  compare.setAttribute("aria-disabled", ids.length === 0 ? "true" : "false");
}

async function fillModels() {
  const trends = await api("/api/training/analytics/fleet", { bins: 1, buckets: 1 });
  models.replaceChildren(...trends.models.map((m) => el("option", { value: m.model_name })));
}

markNav("jobs");
main(el("h1", {}, "Jobs"), filterForm(), el("div", { class: "toolbar" }, count, compare),
  el("div", { class: "scroll" }, table), el("div", { class: "pager" }, prev, next));
load().then(ready).catch((error) => { showError(error); ready(); });
// the model suggestions cost a fleet query: asked for when the reader goes to the model field
document.getElementById("f-model").addEventListener("focus", () => fillModels().catch(() => {}), { once: true });
// Running jobs change with every ingest: refresh the page in place while it shows any.
every(() => load(), () => state.rows.some((job) => job.status === "running"));

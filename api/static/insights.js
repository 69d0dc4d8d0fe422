// Insights page: what went wrong across the fleet (shared/spec/insights.md), newest jobs first,
// filtered by kind, severity, job status, model and start time; "More" follows the API's keyset
// cursor, so rows added by an ingest in between are neither skipped nor shown twice. The filters
// go into the URL (/insights?severity=critical&kind=loss_spike).
import { api, el, main, showError, ready, markNav, num, when, jobLink, severityBadge, stepRange, gpuName, STATUSES, SEVERITIES, INSIGHT_KINDS, ApiError } from "./common.js";

const params = new URLSearchParams(location.search);
const PAGE = Math.min(1000, Number(params.get("limit")) || 100); // ?limit=N: smaller pages
const KEYS = ["kind", "severity", "status", "model", "since", "until"];
const state = Object.fromEntries(KEYS.map((k) => [k, params.get(k) || ""]));
let cursor = null;
let shown = 0;

const body = el("tbody", {});
const count = el("p", { id: "count", class: "muted", "aria-live": "polite" });
const more = el("button", { type: "button", id: "more", class: "more", hidden: true, onclick: () => page(false).catch(showError) }, "More");
const asOf = el("span", {});
const thresholdList = el("span", {});
const thresholds = el("details", { class: "muted", id: "thresholds" }, el("summary", {}, "Thresholds in force ", asOf), thresholdList);

function choice(name, label, values) {
  return el("label", {}, `${label} `, el("select", { name, id: `f-${name}` },
    el("option", { value: "" }, "any"), values.map((v) => el("option", { value: v, selected: v === state[name] }, v.replaceAll("_", " ")))));
}

function filterForm() {
  const form = el("form", { class: "filters", role: "search" },
    choice("kind", "Kind", INSIGHT_KINDS), choice("severity", "Severity", SEVERITIES), choice("status", "Job status", STATUSES),
    el("label", {}, "Model ", el("input", { name: "model", id: "f-model", value: state.model, placeholder: "any", size: 14 })),
    el("label", {}, "Job started from ", el("input", { name: "since", id: "f-since", type: "date", value: state.since })),
    el("label", {}, "before ", el("input", { name: "until", id: "f-until", type: "date", value: state.until })),
    el("button", { type: "submit" }, "Filter"), el("button", { type: "reset" }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const k of KEYS) state[k] = form.elements[k].value.trim();
    page(true).catch(showError);
  });
  form.addEventListener("reset", () => {
    for (const k of KEYS) state[k] = "";
    setTimeout(() => page(true).catch(showError));
  });
  return form;
}

function row(i) {
  return el("tr", { dataset: { job: i.job_id, kind: i.kind, severity: i.severity } },
    el("td", {}, severityBadge(i.severity)), el("td", {}, i.kind.replaceAll("_", " ")), el("td", {}, jobLink(i.job_id)),
    el("td", { class: "num" }, stepRange(i)), el("td", {}, i.gpu_index != null ? gpuName(i.host, i.gpu_index, i.gpu_uuid) : "—"),
    el("td", { class: "num" }, num(i.value, 4)), el("td", { class: "num" }, num(i.reference, 4)),
    el("td", { class: "wrap" }, i.message));
}

/** The first page (fresh) or the next one, appended; body[data-busy] while asking. */
async function page(fresh) {
  document.body.dataset.busy = "true";
  try {
    await turn(fresh);
  } finally {
    delete document.body.dataset.busy;
  }
}

async function turn(fresh) {
  if (fresh) {
    cursor = null;
    shown = 0;
    body.replaceChildren();
    const url = new URLSearchParams();
    for (const k of KEYS) if (state[k]) url.set(k, state[k]);
    if (params.get("limit")) url.set("limit", PAGE);
    history.replaceState(null, "", url.toString() ? `/insights?${url}` : "/insights");
  }
  const answer = await api("/api/training/insights", {
    kind: state.kind, severity: state.severity, status: state.status, model: state.model,
    since: state.since ? `${state.since}T00:00:00Z` : "", until: state.until ? `${state.until}T00:00:00Z` : "",
    limit: PAGE, cursor,
  });
  body.append(...answer.insights.map(row));
  shown += answer.insights.length;
  cursor = answer.next_cursor;
  more.hidden = !cursor;
  count.textContent = shown ? `${shown} insight${shown > 1 ? "s" : ""} shown${cursor ? "; more follow" : ""}.` : "No insight matches.";
  const t = Object.entries(answer.thresholds || {}).map(([k, v]) => `${k} = ${v}`).join(", ");
  asOf.textContent = answer.as_of ? `(as of ${when(answer.as_of)})` : "";
  thresholdList.textContent = t ? `${t}.` : "none";
}

async function load() {
  markNav("insights");
  main(el("h1", {}, "Insights"),
    el("p", { class: "muted" }, "What went wrong in the fleet's runs, found by the warehouse: newest jobs first."),
    filterForm(), count,
    el("div", { class: "scroll" }, el("table", { class: "fleet-insights" },
      el("thead", {}, el("tr", {}, ["Severity", "Kind", "Job", "Steps", "GPU", "Value", "Reference", "What"].map((h) => el("th", { scope: "col" }, h)))),
      body)),
    more, thresholds);
  try {
    await page(true);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      count.textContent = "This server does not list insights.";
      return;
    }
    throw error;
  }
}

load().then(ready).catch((error) => { showError(error); ready(); });

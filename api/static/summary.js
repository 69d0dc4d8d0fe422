// Summary page: the fleet at a glance: jobs by status, GPU hours, the throughput distribution,
// the top jobs, and GPU utilization over time across every job.
import { api, el, main, showError, ready, markNav, num, pct, duration, jobLink, lineChart, barChart, binLabels, card, epochSeconds, withUnit, STATUSES, PALETTE } from "./common.js";

const params = new URLSearchParams(location.search);
const filters = { status: params.get("status") || "", model: params.get("model") || "" };

function byStatus(counts) {
  const total = Math.max(1, ...Object.values(counts));
  return el("section", { class: "card wide", "aria-label": "jobs by status" }, el("h3", {}, "Jobs by status"),
    el("ul", { class: "hbars" }, STATUSES.filter((s) => s in counts).map((s) => el("li", {},
      el("a", { class: "hbar-label", href: `/?status=${s}` }, s),
      el("span", { class: `hbar status-${s}`, style: `width:${(100 * counts[s]) / total}%` }),
      el("span", { class: "hbar-value" }, String(counts[s]))))));
}

function topJobs(summary) {
  // analytics.md: a job without a throughput is not ranked
  const section = { class: "card wide", "aria-label": "top jobs" };
  if (!summary.top_performing_jobs.length) {
    return el("section", section, el("h3", {}, "Top jobs by throughput"), el("p", { class: "muted" }, "No job has a throughput yet."));
  }
  return el("section", section, el("h3", {}, "Top jobs by throughput"),
    el("div", { class: "scroll" }, el("table", { class: "top" },
      el("thead", {}, el("tr", {}, ["#", "Job", "Samples/s", "Duration"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, summary.top_performing_jobs.map((j, i) => el("tr", {},
        el("td", {}, String(i + 1)), el("td", {}, jobLink(j.job_id)), el("td", {}, num(j.throughput)), el("td", {}, duration(j.duration))))))));
}

function histogram(trends) {
  const bins = trends.throughput_histogram;
  const holder = el("section", { class: "card wide", dataset: { chart: "throughput" } }, el("h3", {}, "Throughput distribution (jobs by average samples/s; each bar labelled by its lower edge)"));
  if (!bins.length) return holder.appendChild(el("p", { class: "muted" }, "No job has a throughput yet.")).parentNode;
  const labels = binLabels(bins.map((b) => b.low));
  holder.append(barChart({
    label: "jobs by average samples per second",
    color: PALETTE[0],
    // each bin by its low edge, with as many decimals as it takes for no two to read the same
    bars: bins.map((b, i) => ({ label: labels[i], value: b.jobs, title: `${num(b.low)}–${num(b.high)} samples/s: ${b.jobs} jobs` })),
  }));
  return holder;
}

function utilization(trends, holder) {
  const buckets = trends.utilization_over_time;
  if (!buckets.length) {
    holder.replaceChildren(el("p", { class: "muted" }, "No timed GPU readings yet."));
    return;
  }
  // the API leaves out buckets without readings: a gap in the line, not a slope across it
  const xs = [], util = [], jobs = [];
  buckets.forEach((b, i) => {
    if (i > 0 && b.start !== buckets[i - 1].end) {
      xs.push(epochSeconds(buckets[i - 1].end));
      util.push(null);
      jobs.push(null);
    }
    xs.push((epochSeconds(b.start) + epochSeconds(b.end)) / 2);
    util.push(b.average_gpu_utilization);
    jobs.push(b.jobs);
  });
  lineChart(holder, {
    title: "GPU utilization across the fleet (%)", time: true, height: 240, spanGaps: false,
    data: [xs, util, jobs],
    axes: { y: "%", jobs: "jobs" },
    series: [{ label: "average utilization (%)", color: PALETTE[0], points: true }, { label: "jobs reporting", color: PALETTE[1], scale: "jobs", dash: [4, 4] }],
  });
}

async function load() {
  markNav("summary");
  const [summary, trends] = await Promise.all([
    api("/api/training/analytics/summary", { ...filters, limit: 10 }),
    api("/api/training/analytics/fleet", { ...filters, bins: 20, buckets: 120 }),
  ]);
  const rt = summary.resource_trends;
  const over = el("div", { class: "chart", dataset: { chart: "utilization" } });
  main(
    el("h1", {}, "Summary", filters.status ? ` · ${filters.status}` : "", filters.model ? ` · ${filters.model}` : ""),
    el("div", { class: "cards" },
      card("Jobs", [["Total", num(summary.total_jobs, 0)], ["Running", num(summary.jobs_by_status.running ?? 0, 0)]]),
      card("GPU time", [
        ["GPU hours", num(trends.gpu_hours, 1), "total_seconds × GPUs, summed over jobs"],
        ["Training hours", num(summary.total_training_time_hours, 1)],
        ["Jobs counted", `${num(trends.gpu_hours_jobs, 0)} of ${num(trends.jobs, 0)}`, "jobs with a duration and a GPU count"],
      ]),
      card("Averages", [
        ["Completed job duration", duration(summary.average_training_duration_seconds)],
        ["Throughput", withUnit(summary.average_throughput_samples_per_sec, "samples/s")],
        ["GPU utilization", pct(rt.average_gpu_utilization)],
        ["Peak GPU memory", withUnit(rt.average_peak_memory_mb, "MiB", 0)],
      ])),
    el("div", { class: "cards" }, byStatus(summary.jobs_by_status), topJobs(summary)),
    histogram(trends),
    el("h2", {}, "GPU utilization over time"), over,
  );
  utilization(trends, over);
}

load().then(ready).catch((error) => { showError(error); ready(); });

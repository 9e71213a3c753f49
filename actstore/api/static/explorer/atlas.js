// The atlas: every pair of a set of models compared layer by layer with one measure. Small
// multiples (every pair's matrix), the argmax-depth lines of all pairs, the max similarity per
// layer, the mean resized matrix and the on/off diagonal scatter; a click on a pair opens the
// Compare view for it. A query too large for the server's budget can be run as a job
// (runAtlas, behind the API token) whose progress is followed, then asked again.
import { gql } from "./api.js";
import { href, save } from "./state.js";
import { el, field, select, run, fmt, dl, formValues, optInt, table } from "./ui.js";
import { colourScale, newPlot, plotText } from "./charts.js";

const ARGS = "$models: [String!]!, $measure: String!, $k: Int!, $dataset: String, $grid: Int, $resize: Int!";
const PASS = "models: $models, measure: $measure, k: $k, dataset: $dataset, grid: $grid, resize: $resize";
const ATLAS = `query Atlas(${ARGS}) {
  atlas(${PASS}) {
    models measure direction k n resize meanResized maxSimilarity warning datasets { name n }
    pairs { modelA modelB layersA layersB depthsA depthsB values argmax argmaxDepths maxValue
            diagonal { onDiagonalMean offDiagonalMean tStatistic pValue } }
  }
}`;
const RUN_ATLAS = `mutation RunAtlas(${ARGS}) { runAtlas(${PASS}) { id state done total message } }`;
const JOB = `query Job($id: ID!) { job(id: $id) { id state done total message } }`;
const MEASURES = ["mutual_knn", "unbiased_cka", "cka"];
const POLL_MS = 400;

/** The pair's name as plotly may show it (escaped: plotly reads tags in strings). */
const pairName = (p) => plotText(`${p.modelA} × ${p.modelB}`);

/** Each row's largest value: the max similarity at each of model A's layers. */
export function rowMaxima(values) {
  return values.map((row) => Math.max(...row));
}

export async function render(root, params, { models, datasets }) {
  root.append(el("h2", {}, "Atlas of models"));
  if (models.length < 2) {
    root.append(el("p", { class: "note" }, "An atlas needs at least two stored models."));
    return;
  }
  const keys = models.map((m) => m.key);
  // the models of the URL first, in its order (the order of the pairs), then the others
  const chosen = (params.get("models") || keys.join(",")).split(",").filter((k) => keys.includes(k));
  const order = [...chosen, ...keys.filter((k) => !chosen.includes(k))];
  const picker = el("select", { name: "models", multiple: true, size: Math.min(8, keys.length), class: "wide" },
    order.map((k) => el("option", { value: k, selected: chosen.includes(k) }, k)));
  const measure = params.get("measure") || "mutual_knn";
  const form = el("form", { class: "controls" },
    field("models (pick two or more)", picker),
    field("dataset", select("dataset", [{ value: "", label: "(all shared prompts)" }, ...datasets.map((d) => d.name)],
      params.get("dataset") || "")),
    field("measure", select("measure", MEASURES.includes(measure) ? MEASURES : [...MEASURES, measure], measure)),
    field("k (k-NN)", el("input", { type: "number", name: "k", min: 1, value: params.get("k") || "10" })),
    field("grid (blank: all layers)", el("input", { type: "number", name: "grid", min: 2, value: params.get("grid") || "" })),
    field("resize", el("input", { type: "number", name: "resize", min: 2, value: params.get("resize") || "20" })),
    field("API token (runAtlas)", el("input", { type: "password", name: "token", autocomplete: "off" })),
    el("button", { type: "submit" }, "Draw the atlas"));
  const status = el("div", { class: "status", id: "atlas-status" });
  const job = el("div", { id: "atlas-job" });
  const out = el("div", { id: "atlas-out" });
  root.append(form, status, job, out);

  let timer = null;
  const stop = () => { if (timer) clearTimeout(timer); timer = null; };
  window.addEventListener("hashchange", stop, { once: true });

  function request() {
    const v = formValues(form);
    const picked = [...picker.selectedOptions].map((o) => o.value);
    const state = { models: picked.join(","), dataset: v.dataset, measure: v.measure, k: v.k, grid: v.grid,
      resize: v.resize };
    save("atlas", state);
    return { v, variables: { models: picked, measure: v.measure, k: Number(v.k), dataset: v.dataset || null,
      grid: optInt(v.grid), resize: Number(v.resize) } };
  }

  /** Ask the atlas query; `afterJob` keeps the finished job's panel on show. */
  async function ask(afterJob = false) {
    stop();
    if (!afterJob) job.replaceChildren();
    const { v, variables } = request();
    let refused = null;
    const answer = await run(status, async (signal) => {
      if (variables.models.length < 2) throw new Error("pick at least two models");
      try {
        return (await gql(ATLAS, variables, { signal })).atlas;
      } catch (e) {
        const limit = (e.errors || []).some((x) => x.extensions?.code === "LIMIT_EXCEEDED"
          && /run_?atlas/i.test(x.message || ""));
        if (limit) refused = e.message;
        throw e;
      }
    });
    if (answer) draw(answer, v);
    else if (refused) offerJob(variables);
  }

  function offerJob(variables) {
    const button = el("button", { type: "button", id: "atlas-run-job", onclick: () => startJob(variables) },
      "Run it as a job (runAtlas)");
    job.replaceChildren(el("p", { class: "note" }, "Too large to answer at once: run it as a background job with the "
      + "API token, then the atlas is asked again (stored pairs are kept if the job stops)."), button);
  }

  async function startJob(variables) {
    const token = formValues(form).token;
    const started = await run(status, async (signal) => {
      if (!token) throw new Error("give the API token to run the atlas as a job");
      return (await gql(RUN_ATLAS, variables, { signal, token })).runAtlas;
    });
    if (started) follow(started.id, variables);
  }

  function showJob(j) {
    job.replaceChildren(
      el("progress", { id: "atlas-job-progress", max: String(Math.max(j.total, 1)), value: String(j.done) }),
      el("span", { id: "atlas-job-count" }, ` ${j.done} / ${j.total} pairs`),
      dl([["job", j.id], ["state", el("span", { id: "atlas-job-state" }, j.state)], j.message ? ["message", j.message] : null]));
  }

  async function follow(id) {
    stop();
    const j = await run(status, async (signal) => (await gql(JOB, { id }, { signal })).job);
    if (!j) return;
    showJob(j);
    if (j.state === "QUEUED" || j.state === "RUNNING") timer = setTimeout(() => follow(id), POLL_MS);
    else if (j.state === "SUCCEEDED") ask(true);
  }

  function draw(a, v) {
    const open = (p) => {
      location.hash = href("compare", { a: p.modelA, b: p.modelB, dataset: v.dataset, k: a.k ?? v.k, grid: v.grid });
    };
    const tested = a.pairs.filter((p) => p.diagonal);
    const scale = colourScale(a.pairs.flatMap((p) => p.values));
    const above = tested.filter((p) => p.diagonal.onDiagonalMean > p.diagonal.offDiagonalMean);
    const multiples = el("div", { class: "multiples", id: "atlas-multiples" });
    out.replaceChildren(
      el("div", { class: "side", id: "atlas-side" }, dl([["models", a.models.length], ["pairs", a.pairs.length], ["prompts (n)", a.n], ["measure", a.measure],
        a.k !== null ? ["k", a.k] : null, ["datasets", a.datasets.map((d) => `${d.name} (${d.n})`).join(", ")],
        ["pairs with on > off", `${above.length} of ${tested.length} tested`], a.warning ? ["warning", a.warning] : null])),
      el("h3", {}, "Every pair (click one to compare the two models)"),
      el("p", { class: "note" }, `One colour scale for every pair: ${fmt(scale.zmin)} to ${fmt(scale.zmax)}; axes: relative depth `
        + "(rows model A, columns model B)."), multiples,
      el("div", { class: "row" },
        el("div", { class: "plot small", id: "atlas-argmax" }), el("div", { class: "plot small", id: "atlas-rowmax" })),
      el("div", { class: "row" },
        el("div", { class: "plot small", id: "atlas-mean" }), el("div", { class: "plot small", id: "atlas-onoff" })),
      table(["model A", "model B", "max", "on", "off", "p", "compare"], a.pairs.map((p) => [
        p.modelA, p.modelB, p.maxValue, p.diagonal?.onDiagonalMean ?? null, p.diagonal?.offDiagonalMean ?? null,
        p.diagonal?.pValue ?? null, el("a", { href: href("compare", { a: p.modelA, b: p.modelB, dataset: v.dataset,
          k: a.k ?? v.k, grid: v.grid }) }, "open")]), { id: "atlas-table" }));

    a.pairs.forEach((p, i) => {
      const div = el("div", { class: "plot tiny", id: `atlas-pair-${i}` });
      multiples.append(div);
      newPlot(div, [{
        type: "heatmap", x: p.depthsB, y: p.depthsA, z: p.values, ...scale, showscale: false, name: pairName(p),
        customdata: p.layersA.map((la) => p.layersB.map((lb) => [la, lb])), text: p.values.map((r) => r.map(() => pairName(p))),
        hovertemplate: "%{text}<br>layer %{customdata[0]} × %{customdata[1]}<br>%{z:.4f}<extra></extra>",
      }], {
        title: { text: pairName(p), font: { size: 11 } }, margin: { t: 28, l: 34, r: 8, b: 28 },
        xaxis: { range: [-0.05, 1.05], tickvals: [0, 0.5, 1] }, yaxis: { range: [-0.05, 1.05], tickvals: [0, 0.5, 1] },
      });
      div.on("plotly_click", () => open(p));
    });

    const diagonal = { type: "scatter", mode: "lines", name: "same depth", x: [0, 1], y: [0, 1],
      line: { dash: "dash", color: "#888" }, hoverinfo: "skip" };
    const lines = (ys) => a.pairs.map((p, i) => ({
      type: "scatter", mode: "lines+markers", name: pairName(p), x: p.depthsA, y: ys(p), line: { width: 1 },
      marker: { size: 4 }, text: p.depthsA.map(() => pairName(p)),
      hovertemplate: "%{text}<br>depth A %{x:.2f}: %{y:.4f}<extra></extra>",
    }));
    newPlot(document.getElementById("atlas-argmax"), [...lines((p) => p.argmaxDepths), diagonal], {
      title: { text: "Depth of model B's argmax, every pair" }, showlegend: a.pairs.length <= 8,
      xaxis: { title: { text: "model A: relative depth" } }, yaxis: { title: { text: "model B: depth of the argmax" } },
    });
    newPlot(document.getElementById("atlas-rowmax"), lines((p) => rowMaxima(p.values)), {
      title: { text: "Max similarity per layer of model A" }, showlegend: a.pairs.length <= 8,
      xaxis: { title: { text: "model A: relative depth" } }, yaxis: { title: { text: `max ${plotText(a.measure)}` } },
    });
    const depths = a.meanResized.map((_, j) => j / (a.resize - 1));
    newPlot(document.getElementById("atlas-mean"), [{
      type: "heatmap", x: depths, y: depths, z: a.meanResized, ...colourScale(a.meanResized),
      hovertemplate: "depth A %{y:.2f} × B %{x:.2f}<br>mean %{z:.4f}<extra></extra>",
    }], {
      title: { text: `Mean of ${a.pairs.length} pairs resized to ${a.resize} × ${a.resize}` },
      xaxis: { title: { text: "model B: relative depth" } }, yaxis: { title: { text: "model A: relative depth" } },
    });
    const on = tested.map((p) => p.diagonal.onDiagonalMean);
    const off = tested.map((p) => p.diagonal.offDiagonalMean);
    const lo = Math.min(...on, ...off);
    const hi = Math.max(...on, ...off);
    const scatter = document.getElementById("atlas-onoff");
    newPlot(scatter, [{
      type: "scatter", mode: "markers", name: "pairs", x: off, y: on, text: tested.map(pairName), marker: { size: 9 },
      hovertemplate: "%{text}<br>on %{y:.4f}, off %{x:.4f}<extra></extra>",
    }, { type: "scatter", mode: "lines", name: "on = off", x: [lo, hi], y: [lo, hi], line: { dash: "dash", color: "#888" },
      hoverinfo: "skip" }], {
      title: { text: `On- vs off-diagonal mean (${above.length} of ${tested.length} above)` }, showlegend: false,
      xaxis: { title: { text: "off-diagonal mean" } }, yaxis: { title: { text: "on-diagonal mean" } },
    });
    scatter.on("plotly_click", (event) => {
      const point = event.points.find((pt) => pt.curveNumber === 0);
      if (point) open(tested[point.pointIndex]);
    });
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  if (params.get("models")) await ask();
}

// A layer's nearest neighbours of a stored prompt or of new text (texts and labels), and for a
// stored prompt how its neighbours change across depth (scores per layer and rank, and the
// share of each layer's neighbours that are also neighbours at the chosen layer).
import { gql } from "./api.js";
import { save } from "./state.js";
import { el, field, select, run, table, formValues, fmt } from "./ui.js";
import { newPlot, layerAxis, plotText } from "./charts.js";

const FIELDS = "rank promptId score text label dataset";
const PROMPTS = `query Prompts($dataset: String!) { prompts(dataset: $dataset, limit: 200) { id text label } }`;

function neighborsQuery(layers) {
  // One aliased field per layer: the neighbours of one prompt at every stored layer in one request.
  const parts = layers.map((l) => `l${l}: nearestNeighbors(at: {model: $model, layer: ${l}}, promptId: $prompt, `
    + `k: $k, dataset: $dataset, metric: $metric) { ${FIELDS} }`);
  return `query NeighborsAcrossDepth($model: String!, $prompt: ID!, $k: Int!, $dataset: String, $metric: Metric!) {\n  ${parts.join("\n  ")}\n}`;
}

const BY_TEXT = `query NeighborsOfText($model: String!, $layer: Int!, $text: String!, $k: Int!, $dataset: String, $metric: Metric!) {
  nearestNeighbors(at: {model: $model, layer: $layer}, text: $text, k: $k, dataset: $dataset, metric: $metric) { ${FIELDS} }
}`;

function neighborTable(list) {
  return table(["rank", "prompt", "score", "label", "dataset", "text"],
    list.map((n) => [n.rank, n.promptId, n.score, n.label ?? "—", n.dataset, n.text]), { id: "neighbors-table" });
}

/** The stored layer a URL's `layer` names (negative counts from the end); the last one otherwise. */
function storedLayer(model, wanted) {
  const last = model.layers[model.layers.length - 1];
  if (wanted === null || wanted === "" || !Number.isInteger(Number(wanted))) return last;
  const layer = Number(wanted) < 0 ? model.nLayers + Number(wanted) : Number(wanted);
  return model.layers.includes(layer) ? layer : last;
}

export async function render(root, params, { models, datasets }) {
  root.append(el("h2", {}, "Nearest neighbours at a layer"));
  if (!models.length) {
    root.append(el("p", { class: "note" }, "No models stored yet."));
    return;
  }
  const byKey = Object.fromEntries(models.map((m) => [m.key, m]));
  const model = byKey[params.get("model")] || models[0];
  const modelSel = select("model", models.map((m) => m.key), model.key);
  const layerSel = select("layer", model.layers, storedLayer(model, params.get("layer")));
  const source = select("from", model.datasets, params.get("from") || model.datasets[0] || "");
  const promptSel = select("prompt", [], null, { class: "wide" });
  const form = el("form", { class: "controls" },
    field("model", modelSel), field("layer", layerSel),
    field("k", el("input", { type: "number", name: "k", min: 1, value: params.get("k") || "10" })),
    field("neighbours from dataset", select("dataset", [{ value: "", label: "(all)" }, ...datasets.map((d) => d.name)],
      params.get("dataset") || "")),
    field("metric", select("metric", ["COSINE", "L2", "DOT"], params.get("metric") || "COSINE")),
    field("stored prompt of", source), field("prompt", promptSel),
    field("or new text (needs the model's weights on the server)",
      el("input", { type: "text", name: "text", class: "wide", value: params.get("text") || "" })),
    el("button", { type: "submit" }, "Find neighbours"));
  const status = el("div", { class: "status", id: "neighbors-status" });
  const out = el("div", { id: "neighbors-out" });
  root.append(form, status, out);

  async function loadPrompts(wanted) {
    promptSel.replaceChildren();
    if (!source.value) return;
    try {
      const list = (await gql(PROMPTS, { dataset: source.value })).prompts;
      for (const p of list) {
        promptSel.append(el("option", { value: p.id }, `${p.id}: ${p.text.slice(0, 70)}${p.label !== null ? ` [${p.label}]` : ""}`));
      }
      if (wanted && !list.some((p) => String(p.id) === wanted)) promptSel.append(el("option", { value: wanted }, `${wanted}`));
      if (wanted) promptSel.value = wanted;
    } catch (e) {
      promptSel.append(el("option", { value: "" }, `(could not list prompts: ${e.message})`));
    }
  }
  modelSel.addEventListener("change", () => {
    const m = byKey[modelSel.value];
    layerSel.replaceChildren(...m.layers.map((l) => el("option", { value: String(l) }, String(l))));
    layerSel.value = String(m.layers[m.layers.length - 1]);
    source.replaceChildren(...m.datasets.map((d) => el("option", { value: d }, d)));
    loadPrompts();
  });
  source.addEventListener("change", () => loadPrompts());
  await loadPrompts(params.get("prompt"));

  async function find() {
    const v = formValues(form);
    const m = byKey[v.model];
    const layer = Number(v.layer);
    const common = { model: v.model, k: Number(v.k), dataset: v.dataset || null, metric: v.metric };
    if (v.text) {
      save("neighbors", { model: v.model, layer: v.layer, k: v.k, dataset: v.dataset, metric: v.metric, text: v.text });
      await run(status, async (signal) => {
        const list = (await gql(BY_TEXT, { ...common, layer, text: v.text }, { signal })).nearestNeighbors;
        out.replaceChildren(el("h3", {}, `Neighbours of the text at layer ${layer}`),
          el("div", { id: "neighbors-plot", class: "plot wide" }), neighborTable(list));
        scoreBars(out.querySelector("#neighbors-plot"), list, layer, v.metric);
      });
      return;
    }
    save("neighbors", { model: v.model, layer: v.layer, k: v.k, dataset: v.dataset, metric: v.metric,
      from: v.from, prompt: v.prompt });
    if (!v.prompt) {
      out.replaceChildren(el("div", { class: "error", role: "alert" }, "choose a stored prompt or type a text"));
      return;
    }
    await run(status, async (signal) => {
      const data = await gql(neighborsQuery(m.layers), { ...common, prompt: v.prompt }, { signal });
      const perLayer = m.layers.map((l) => data[`l${l}`]);
      const chosen = perLayer[m.layers.indexOf(layer)];
      out.replaceChildren(
        el("h3", {}, `Neighbours of prompt ${v.prompt} at layer ${layer}`),
        el("div", { id: "neighbors-plot", class: "plot wide" }), neighborTable(chosen),
        el("h3", {}, "Across depth"),
        el("div", { class: "row" }, el("div", { id: "depth-plot", class: "plot" }), el("div", { id: "overlap-plot", class: "plot small" })));
      scoreBars(out.querySelector("#neighbors-plot"), chosen, layer, v.metric);
      acrossDepth(out.querySelector("#depth-plot"), out.querySelector("#overlap-plot"), m, perLayer, layer);
    });
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); find(); });
  if (params.get("prompt") || params.get("text")) await find();
}

/** A y range around the scores: cosine scores of close neighbours sit at 0.94–0.98, where bars
 *  on a 0–1 axis all look alike. The range starts at the lowest score less a margin (never
 *  pretending to start at 0), and the title says where. */
export function scoreRange(scores) {
  const lo = Math.min(...scores);
  const hi = Math.max(...scores);
  const pad = Math.max((hi - lo) * 0.15, Math.abs(hi) * 1e-4, 1e-6);
  return [lo - pad, hi + pad];
}

function scoreBars(div, list, layer, metric) {
  const range = scoreRange(list.map((n) => n.score));
  newPlot(div, [{
    type: "bar", x: list.map((n) => n.rank), y: list.map((n) => n.score),
    customdata: list.map((n) => [n.promptId, plotText(n.label ?? "—"), plotText((n.text || "").slice(0, 90))]),
    hovertemplate: "rank %{x}: prompt %{customdata[0]} (label %{customdata[1]})<br>%{customdata[2]}<br>score %{y:.4f}<extra></extra>",
  }], { title: { text: `${metric.toLowerCase()} score by rank, layer ${layer} (axis from ${fmt(range[0], 3)}, not 0)` },
    xaxis: { title: { text: "rank" }, dtick: 1 }, yaxis: { title: { text: "score" }, range } });
}

function acrossDepth(heatDiv, overlapDiv, model, perLayer, layer) {
  const k = Math.max(...perLayer.map((l) => l.length));
  const ranks = Array.from({ length: k }, (_, i) => i + 1);
  const z = perLayer.map((list) => ranks.map((r) => list[r - 1]?.score ?? null));
  const text = perLayer.map((list) => ranks.map((r) => {
    const n = list[r - 1];
    return n ? plotText(`prompt ${n.promptId} [${n.label ?? "—"}]: ${(n.text || "").slice(0, 70)}`) : "";
  }));
  newPlot(heatDiv, [{
    type: "heatmap", x: ranks, y: model.layers, z, text, colorscale: "Viridis", xgap: 1, ygap: 1,
    hovertemplate: "layer %{y}, rank %{x}<br>%{text}<br>score %{z:.4f}<extra></extra>",
  }], { title: { text: "neighbour scores per layer and rank" }, xaxis: { title: { text: "rank" }, dtick: 1 },
    yaxis: layerAxis(`${model.key} layer`, model.layers) });
  const chosen = new Set(perLayer[model.layers.indexOf(layer)].map((n) => n.promptId));
  const overlap = perLayer.map((list) => list.filter((n) => chosen.has(n.promptId)).length / Math.max(list.length, 1));
  newPlot(overlapDiv, [{
    type: "scatter", mode: "lines+markers", x: model.layers, y: overlap, name: "overlap",
    hovertemplate: "layer %{x}: %{y:.2f} of the neighbours shared<extra></extra>",
  }], { title: { text: `share of neighbours shared with layer ${layer}` },
    xaxis: layerAxis(`${plotText(model.key)} layer`, model.layers), yaxis: { title: { text: "share" }, range: [0, 1.05] } });
}

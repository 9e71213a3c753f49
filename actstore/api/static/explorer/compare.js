// Compare two models: the CKA matrix (biased or debiased, all layers or a relative-depth grid)
// and the mutual-k-NN affinity matrix as heatmaps, the generalized-diagonal test beside the
// affinity matrix and, for a clicked CKA cell, a permutation-test p-value.
import { gql } from "./api.js";
import { save } from "./state.js";
import { el, field, select, run, fmt, dl, formValues, optInt, table } from "./ui.js";
import { matrixHeatmap } from "./charts.js";

const CKA_MATRIX = `query CkaMatrix($a: String!, $b: String!, $debiased: Boolean!, $dataset: String, $grid: Int, $byDataset: Boolean!) {
  ckaMatrix(modelA: $a, modelB: $b, debiased: $debiased, dataset: $dataset, grid: $grid, byDataset: $byDataset) {
    modelA modelB layersA layersB depthsA depthsB values n argmax debiased warning datasets { name n }
    byDataset { dataset n values }
  }
}`;

const AFFINITY = `query Affinity($a: String!, $b: String!, $k: Int!, $dataset: String, $layersA: [Int!], $layersB: [Int!], $byDataset: Boolean!) {
  affinityMatrix(modelA: $a, modelB: $b, k: $k, dataset: $dataset, layersA: $layersA, layersB: $layersB, byDataset: $byDataset) {
    modelA modelB layersA layersB depthsA depthsB values n argmax k nullMean recall warning
    byDataset { dataset n values nullMean }
    diagonal { onDiagonalMean offDiagonalMean tStatistic df pValue log10P pValueIsBound transposed nOn nOff }
  }
}`;

const CKA_CELL = `query CkaCell($a: LayerRef!, $b: LayerRef!, $debiased: Boolean!, $permutations: Int!, $dataset: String) {
  cka(a: $a, b: $b, debiased: $debiased, permutations: $permutations, dataset: $dataset) {
    value pValue permutations n layerA layerB
  }
}`;

function pText(p, bound) {
  return `${bound ? "< " : ""}${fmt(p)}`;
}

/** The largest value of a matrix and its layers, e.g. "0.6214 at 10 × 3" (a dash for null). */
function best(values, layersA, layersB) {
  if (!values) return "— (too few prompts)";
  let top = [0, 0];
  values.forEach((row, i) => row.forEach((v, j) => { if (v > values[top[0]][top[1]]) top = [i, j]; }));
  return `${fmt(values[top[0]][top[1]])} at ${layersA[top[0]]} × ${layersB[top[1]]}`;
}

/** The per-dataset answers (byDataset) as a table: dataset, n, largest value and its layers. */
function perDataset(m, id) {
  if (!m.byDataset || !m.byDataset.length) return null;
  return el("div", {}, el("h4", {}, "within each dataset"),
    table(["dataset", "n", "max (layer A × B)"], m.byDataset.map((d) => [d.dataset, d.n, best(d.values, m.layersA, m.layersB)]),
      { id }));
}

export async function render(root, params, { models, datasets }) {
  root.append(el("h2", {}, "Compare two models"));
  if (models.length < 1) {
    root.append(el("p", { class: "note" }, "No models stored yet."));
    return;
  }
  const keys = models.map((m) => m.key);
  const form = el("form", { class: "controls" },
    field("model A", select("a", keys, params.get("a") || keys[0])),
    field("model B", select("b", keys, params.get("b") || keys[Math.min(1, keys.length - 1)])),
    field("dataset", select("dataset", [{ value: "", label: "(all shared prompts)" }, ...datasets.map((d) => d.name)],
      params.get("dataset") || "")),
    field("debiased CKA", el("input", { type: "checkbox", name: "debiased", checked: params.get("debiased") !== "0" })),
    field("per dataset (byDataset)", el("input", { type: "checkbox", name: "byDataset", checked: params.get("byDataset") === "1" })),
    field("grid (blank: all layers)", el("input", { type: "number", name: "grid", min: 2, value: params.get("grid") || "" })),
    field("k (affinity)", el("input", { type: "number", name: "k", min: 1, value: params.get("k") || "10" })),
    field("permutations (clicked cell)", el("input", { type: "number", name: "permutations", min: 1, value: params.get("permutations") || "200" })),
    el("button", { type: "submit" }, "Compare"));
  const ckaStatus = el("div", { class: "status", id: "cka-status" });
  const ckaPlot = el("div", { class: "plot square", id: "cka-plot" });
  const ckaSide = el("div", { class: "side", id: "cka-side" });
  const affStatus = el("div", { class: "status", id: "affinity-status" });
  const affPlot = el("div", { class: "plot square", id: "affinity-plot" });
  const affSide = el("div", { class: "side", id: "affinity-side" });
  root.append(form, el("div", { class: "row" },
    el("div", { class: "col" }, el("h3", {}, "Linear CKA"), ckaStatus, ckaPlot, ckaSide),
    el("div", { class: "col" }, el("h3", {}, "Mutual k-NN affinity"), affStatus, affPlot, affSide)));

  async function compare() {
    const v = formValues(form);
    save("compare", v);
    const common = { a: v.a, b: v.b, dataset: v.dataset || null, byDataset: v.byDataset === "1" };
    // a mixed-dataset warning comes with a way to act on it: per-dataset values, one click away
    const warning = (w) => w && ["warning", el("span", {}, w.replace(/; ask byDataset: true for per-dataset values$/, ""),
      v.byDataset === "1" ? null : [" ", el("button", { type: "button", class: "by-dataset", onclick: () => {
        form.elements.byDataset.checked = true;
        compare();
      } }, "show per-dataset values")])];
    const debiased = v.debiased === "1";
    const label = debiased ? "debiased CKA" : "CKA";
    const cka = run(ckaStatus, async (signal) => {
      const m = (await gql(CKA_MATRIX, { ...common, debiased, grid: optInt(v.grid) }, { signal })).ckaMatrix;
      matrixHeatmap(ckaPlot, m, { label, title: `${label}, n = ${m.n}`, onCell: (i, j) => cell(m, i, j) });
      ckaSide.replaceChildren(dl([
        ["prompts (n)", m.n], ["estimator", m.debiased ? "debiased (unbiased HSIC)" : "biased"],
        ["datasets", m.datasets.map((d) => `${d.name} (${d.n})`).join(", ")],
        warning(m.warning),
      ]), perDataset(m, "cka-by-dataset"),
      el("p", { class: "note" }, `Click a cell for a permutation test (${v.permutations} permutations).`),
      el("div", { id: "cka-cell" }));
      return m;
    });
    // With a grid, the affinity matrix is taken over the same layers as the CKA grid.
    const grid = optInt(v.grid);
    const layers = grid ? await cka : null;
    if (grid && !layers) {
      affStatus.replaceChildren(el("span", { class: "note" }, "Waiting for the CKA grid failed; the affinity matrix was not run."));
      return;
    }
    await run(affStatus, async (signal) => {
      const m = (await gql(AFFINITY, { ...common, k: Number(v.k), layersA: layers?.layersA ?? null,
        layersB: layers?.layersB ?? null }, { signal })).affinityMatrix;
      matrixHeatmap(affPlot, m, { label: "mutual k-NN", title: `mutual ${m.k}-NN, n = ${m.n}` });
      const d = m.diagonal;
      affSide.replaceChildren(dl([
        ["prompts (n)", m.n], ["k", m.k], ["null mean k/(n-1)", fmt(m.nullMean)],
        ["on-diagonal mean", fmt(d.onDiagonalMean)], ["off-diagonal mean", fmt(d.offDiagonalMean)],
        ["Welch t", fmt(d.tStatistic)], ["df", fmt(d.df, 1)],
        ["diagonal test p", pText(d.pValue, d.pValueIsBound)], ["log10 p", fmt(d.log10P, 2)],
        ["cells on / off", `${d.nOn} / ${d.nOff}`], d.transposed ? ["tested transposed", "yes"] : null,
        m.recall !== null ? ["k-NN recall", fmt(m.recall)] : null, warning(m.warning),
      ]), perDataset(m, "affinity-by-dataset"));
    });
    await cka;
  }

  async function cell(m, i, j) {
    const v = formValues(form);
    const target = ckaSide.querySelector("#cka-cell");
    target.replaceChildren();
    const status = el("div", { class: "status" });
    target.append(status);
    await run(status, async (signal) => {
      const c = (await gql(CKA_CELL, {
        a: { model: m.modelA, layer: m.layersA[i] }, b: { model: m.modelB, layer: m.layersB[j] },
        debiased: m.debiased, permutations: Number(v.permutations), dataset: v.dataset || null,
      }, { signal })).cka;
      target.append(el("h3", {}, `layer ${c.layerA} × layer ${c.layerB}`),
        dl([["CKA", fmt(c.value)], ["permutation p", fmt(c.pValue)], ["permutations", c.permutations], ["n", c.n]]));
    });
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); compare(); });
  if (params.get("a") && params.get("b")) await compare();
}

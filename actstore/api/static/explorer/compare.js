// Compare two models: the CKA matrix (biased or debiased, all layers or a relative-depth grid)
// and the mutual-k-NN affinity matrix as heatmaps, the generalized-diagonal test beside the
// affinity matrix and, for a clicked CKA cell, a permutation-test p-value. Each heatmap has a
// measure selector listing every registered measure (the `measures` query, its sensitive-to
// line as help): another measure than the view's own is drawn from `similarityMatrix`.
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

const MEASURES = `query Measures { measures { name direction options sensitiveTo } }`;

const SIMILARITY_MATRIX = `query SimilarityMatrix($a: String!, $b: String!, $measure: String!, $k: Int, $dataset: String,
    $grid: Int, $layersA: [Int!], $layersB: [Int!]) {
  similarityMatrix(modelA: $a, modelB: $b, measure: $measure, k: $k, dataset: $dataset, grid: $grid,
      layersA: $layersA, layersB: $layersB) {
    modelA modelB layersA layersB depthsA depthsB values n argmax measure direction k warning datasets { name n }
  }
}`;

const SIMILARITY_CELL = `query SimilarityCell($a: LayerRef!, $b: LayerRef!, $measure: String!, $k: Int, $permutations: Int!,
    $dataset: String) {
  similarity(a: $a, b: $b, measure: $measure, k: $k, permutations: $permutations, dataset: $dataset) {
    value pValue permutations n layerA layerB measure
  }
}`;

/** A measure selector: the view's own query first (value ""), then every registered measure,
 *  each option titled with what the measure is sensitive to; `help` shows that line. */
function measureSelect(name, own, measures, value, help) {
  const node = select(name, [{ value: "", label: own }, ...measures.map((m) => m.name)], value || "",
    { id: name });
  for (const opt of node.options) {
    const m = measures.find((x) => x.name === opt.value);
    if (m) opt.title = `${m.direction}: sensitive to ${m.sensitiveTo}`;
  }
  const show = () => {
    const m = measures.find((x) => x.name === node.value);
    help.textContent = m ? `${m.name} (${m.direction}) is sensitive to ${m.sensitiveTo}.` : "";
  };
  node.addEventListener("change", show);
  show();
  return node;
}

/** similarityMatrix variables for one registered measure (k only for the k-NN measures). */
function measureVars(measures, name, k) {
  const m = measures.find((x) => x.name === name);
  return { measure: name, k: m && m.options.includes("k") ? k : null };
}

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
  let measures = [];
  try {
    measures = (await gql(MEASURES)).measures;
  } catch (e) {
    measures = [];  // an older server: the views' own matrices only
  }
  const ckaHelp = el("p", { class: "note", id: "cka-measure-help" });
  const affHelp = el("p", { class: "note", id: "affinity-measure-help" });
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
    field("left measure", measureSelect("ckaMeasure", "linear CKA (ckaMatrix)", measures, params.get("ckaMeasure"), ckaHelp)),
    field("right measure", measureSelect("affinityMeasure", "mutual k-NN affinity (affinityMatrix)", measures,
      params.get("affinityMeasure"), affHelp)),
    el("button", { type: "submit" }, "Compare"));
  const ckaStatus = el("div", { class: "status", id: "cka-status" });
  const ckaPlot = el("div", { class: "plot square", id: "cka-plot" });
  const ckaSide = el("div", { class: "side", id: "cka-side" });
  const affStatus = el("div", { class: "status", id: "affinity-status" });
  const affPlot = el("div", { class: "plot square", id: "affinity-plot" });
  const affSide = el("div", { class: "side", id: "affinity-side" });
  const ckaTitle = el("h3", {}, "Linear CKA");
  const affTitle = el("h3", {}, "Mutual k-NN affinity");
  root.append(form, el("div", { class: "row" },
    el("div", { class: "col" }, ckaTitle, ckaHelp, ckaStatus, ckaPlot, ckaSide),
    el("div", { class: "col" }, affTitle, affHelp, affStatus, affPlot, affSide)));

  /** A registered measure's matrix drawn in `plot`, its facts in `side` (cells clickable). */
  async function other(status, plot, side, title, name, vars, withCell) {
    title.textContent = name;
    return run(status, async (signal) => {
      const m = (await gql(SIMILARITY_MATRIX, { ...vars, ...measureVars(measures, name, vars.k) }, { signal })).similarityMatrix;
      const label = m.k ? `${m.measure} (k = ${m.k})` : m.measure;
      matrixHeatmap(plot, m, { label: m.measure, title: `${label}, n = ${m.n}`,
        onCell: withCell ? (i, j) => cell(m, i, j, side) : undefined });
      side.replaceChildren(dl([
        ["prompts (n)", m.n], ["measure", m.measure], ["direction", `${m.direction} (line: most alike per row)`],
        m.k ? ["k", m.k] : null, ["datasets", m.datasets.map((d) => `${d.name} (${d.n})`).join(", ")],
        m.warning ? ["warning", m.warning] : null,
      ]), withCell ? el("p", { class: "note" }, "Click a cell for a permutation test.") : null,
      el("div", { id: side.id === "cka-side" ? "cka-cell" : "affinity-cell" }));
      return m;
    });
  }

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
    ckaTitle.textContent = "Linear CKA";
    affTitle.textContent = "Mutual k-NN affinity";
    const cka = v.ckaMeasure ? other(ckaStatus, ckaPlot, ckaSide, ckaTitle, v.ckaMeasure,
      { ...common, k: Number(v.k), grid: optInt(v.grid) }, true) : run(ckaStatus, async (signal) => {
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
    if (v.affinityMeasure) {
      await other(affStatus, affPlot, affSide, affTitle, v.affinityMeasure,
        { ...common, k: Number(v.k), layersA: layers?.layersA ?? null, layersB: layers?.layersB ?? null }, false);
      await cka;
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

  async function cell(m, i, j, side = ckaSide) {
    const v = formValues(form);
    const target = side.querySelector("#cka-cell");
    target.replaceChildren();
    const status = el("div", { class: "status" });
    target.append(status);
    await run(status, async (signal) => {
      if (m.measure) {  // a registered measure's matrix (similarityMatrix): its own permutation test
        const c = (await gql(SIMILARITY_CELL, {
          a: { model: m.modelA, layer: m.layersA[i] }, b: { model: m.modelB, layer: m.layersB[j] },
          measure: m.measure, k: m.k ?? null, permutations: Number(v.permutations), dataset: v.dataset || null,
        }, { signal })).similarity;
        target.append(el("h3", {}, `layer ${c.layerA} × layer ${c.layerB}`),
          dl([[c.measure, fmt(c.value)], ["permutation p", fmt(c.pValue)], ["permutations", c.permutations], ["n", c.n]]));
        return;
      }
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

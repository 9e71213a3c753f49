// Catalog: stored models, datasets and registered SAEs, with links into the other views.
import { el, table } from "./ui.js";
import { href } from "./state.js";
import { newPlot, plotText } from "./charts.js";

export async function render(root, params, { models, datasets, saes }) {
  const counts = Object.fromEntries(datasets.map((d) => [d.name, d.promptCount]));
  root.append(el("h2", {}, "Catalog"));
  root.append(el("h3", {}, `Models (${models.length})`));
  if (!models.length) root.append(el("p", { class: "note" }, "No models stored yet: run `actstore ingest` or the ingest mutation."));
  else {
    root.append(table(
      ["key", "architecture", "layers", "d_model", "dtype", "token", "source", "prompts per dataset", "explore"],
      models.map((m) => [
        m.key, m.architecture, m.nLayers, m.dModel, m.dtype, m.token, m.source,
        el("span", {}, m.datasets.map((d) => `${d} (${counts[d] ?? "?"})`).join(", "), el("br"), `${m.promptCount} stored`),
        el("span", {},
          el("a", { href: href("neighbors", { model: m.key, layer: m.layers[m.layers.length - 1] }) }, "neighbours"),
          models.length > 1 ? [" · ", el("a", { href: href("compare", { a: m.key, b: models.find((o) => o.key !== m.key).key }) }, "compare")] : null),
      ]), { id: "models-table" }));
  }
  root.append(el("h3", {}, `Datasets (${datasets.length})`));
  root.append(el("div", { class: "row" },
    table(["name", "prompts", "labelled"], datasets.map((d) => [d.name, d.promptCount, d.hasLabels ? "yes" : "no"]),
      { id: "datasets-table" }),
    el("div", { id: "datasets-plot", class: "plot small" })));
  if (datasets.length) {
    newPlot(root.querySelector("#datasets-plot"),
      [{ type: "bar", x: datasets.map((d) => plotText(d.name)), y: datasets.map((d) => d.promptCount), name: "prompts",
        hovertemplate: "%{x}: %{y} prompts<extra></extra>" }],
      { title: { text: "Prompts per dataset" }, yaxis: { title: { text: "prompts" } } });
  }
  root.append(el("h3", {}, `Sparse autoencoders (${saes.length})`));
  if (!saes.length) root.append(el("p", { class: "note" }, "No SAEs registered (registerSae mutation or `actstore sae add`)."));
  else {
    root.append(table(["id", "model", "layer", "d_in", "d_sae", "architecture", "hook"],
      saes.map((s) => [s.id, s.model, s.layer, s.dIn, s.dSae, s.architecture, s.hookName]), { id: "saes-table" }));
  }
}

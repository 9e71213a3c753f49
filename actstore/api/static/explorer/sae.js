// SAE matching: features of two SAEs matched by activation correlation; the matched-pair
// correlation histogram, and SVCCA / RSA of the matched features against random pairings.
import { gql } from "./api.js";
import { save } from "./state.js";
import { el, field, select, run, dl, fmt, formValues } from "./ui.js";
import { newPlot } from "./charts.js";

const QUERY = `query SaeMatch($a: ID!, $b: ID!, $dataset: String, $matching: Matching!, $randomPairs: Int!) {
  saeFeatureCorrelation(a: {id: $a}, b: {id: $b}, dataset: $dataset, matching: $matching, randomPairs: $randomPairs) {
    modelA layerA modelB layerB n pairs meanCorrelation svcca rsa randomSvccaMean randomSvccaStd randomRsaMean
    pValue rsaPValue randomPairs featuresA featuresB droppedA droppedB method
    topPairs(limit: 2000) { featureA featureB correlation }
  }
}`;

export async function render(root, params, { saes, datasets }) {
  root.append(el("h2", {}, "SAE feature matching"));
  if (saes.length < 1) {
    root.append(el("p", { class: "note" }, "No SAEs registered (registerSae mutation or `actstore sae add`)."));
    return;
  }
  const options = saes.map((s) => ({ value: s.id, label: `${s.id}: ${s.model} layer ${s.layer} (${s.dSae})` }));
  const form = el("form", { class: "controls" },
    field("SAE A", select("a", options, params.get("a") || saes[0].id, { class: "wide" })),
    field("SAE B", select("b", options, params.get("b") || saes[Math.min(1, saes.length - 1)].id, { class: "wide" })),
    field("dataset", select("dataset", [{ value: "", label: "(all shared prompts)" }, ...datasets.map((d) => d.name)],
      params.get("dataset") || "")),
    field("matching", select("matching", ["ONE_TO_ONE", "MANY_TO_ONE"], params.get("matching") || "ONE_TO_ONE")),
    field("random pairings", el("input", { type: "number", name: "randomPairs", min: 1, value: params.get("randomPairs") || "100" })),
    el("button", { type: "submit" }, "Match"));
  const status = el("div", { class: "status", id: "sae-status" });
  const hist = el("div", { class: "plot small", id: "sae-hist" });
  const bars = el("div", { class: "plot small", id: "sae-bars" });
  const side = el("div", { class: "side", id: "sae-side" });
  root.append(form, status, el("div", { class: "row" }, hist, bars, side));

  async function match() {
    const v = formValues(form);
    save("sae", v);
    await run(status, async (signal) => {
      const r = (await gql(QUERY, { a: v.a, b: v.b, dataset: v.dataset || null, matching: v.matching,
        randomPairs: Number(v.randomPairs) }, { signal })).saeFeatureCorrelation;
      newPlot(hist, [{ type: "histogram", x: r.topPairs.map((p) => p.correlation), nbinsx: 30, name: "matched pairs" }],
        { title: { text: `correlation of ${r.topPairs.length} matched pairs` }, xaxis: { title: { text: "activation correlation" } },
          yaxis: { title: { text: "pairs" } } });
      newPlot(bars, [
        { type: "bar", name: "matched", x: ["SVCCA", "RSA"], y: [r.svcca, r.rsa] },
        { type: "bar", name: "random pairings (mean)", x: ["SVCCA", "RSA"], y: [r.randomSvccaMean, r.randomRsaMean],
          error_y: { type: "data", array: [r.randomSvccaStd, 0], visible: true } },
      ], { title: { text: "matched against random pairings" }, barmode: "group" });
      side.replaceChildren(dl([
        ["A", `${r.modelA} layer ${r.layerA}`], ["B", `${r.modelB} layer ${r.layerB}`], ["shared prompts", r.n],
        ["matched pairs", r.pairs], ["mean correlation", fmt(r.meanCorrelation)],
        ["SVCCA", fmt(r.svcca)], ["random SVCCA", `${fmt(r.randomSvccaMean)} ± ${fmt(r.randomSvccaStd)}`], ["SVCCA p", fmt(r.pValue)],
        ["RSA", fmt(r.rsa)], ["random RSA", fmt(r.randomRsaMean)], ["RSA p", fmt(r.rsaPValue)],
        ["features A / B", `${r.featuresA} / ${r.featuresB}`], ["never active A / B", `${r.droppedA} / ${r.droppedB}`],
      ]));
    });
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); match(); });
  if (params.get("a") && params.get("b")) await match();
}

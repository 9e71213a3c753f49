// Probe transfer and bridge sweeps: accuracy (or r2 / mean cosine) against bridge rank, with
// every baseline as a horizontal line.
import { gql } from "./api.js";
import { save } from "./state.js";
import { el, field, select, run, dl, fmt, formValues, intList } from "./ui.js";
import { linesWithBaselines, plotText } from "./charts.js";

const PROBE = `query ProbeSweep($source: LayerRef!, $target: LayerRef!, $task: String!, $ranks: [Int!]!, $bridge: String) {
  probeTransferSweep(source: $source, target: $target, taskDataset: $task, ranks: $ranks, bridgeDataset: $bridge) {
    ranks transferred taskSpecific sourceNative targetNative chance ridgeTransferred ridgeTaskSpecific
    alphaFrozen alphaTask nTrain nTest nBridge nClasses layerSource layerTarget
  }
}`;

const BRIDGE = `query BridgeSweep($source: LayerRef!, $target: LayerRef!, $ranks: [Int!]!, $train: String) {
  bridgeSweep(source: $source, target: $target, ranks: $ranks, trainDataset: $train) {
    ranks r2 meanCosine ridgeR2 ridgeMeanCosine alpha nTrain nTest layerSource layerTarget
  }
}`;

export async function render(root, params, { models, datasets }) {
  root.append(el("h2", {}, "Probe transfer and bridge sweeps"));
  if (!models.length) {
    root.append(el("p", { class: "note" }, "No models stored yet."));
    return;
  }
  const keys = models.map((m) => m.key);
  const labelled = datasets.filter((d) => d.hasLabels).map((d) => d.name);
  const form = el("form", { class: "controls" },
    field("sweep", select("mode", [{ value: "probe", label: "probe transfer" }, { value: "bridge", label: "bridge (r2, cosine)" }],
      params.get("mode") || "probe")),
    field("source model", select("source", keys, params.get("source") || keys[0])),
    field("source layer", el("input", { type: "number", name: "sl", value: params.get("sl") ?? "-1" })),
    field("target model", select("target", keys, params.get("target") || keys[Math.min(1, keys.length - 1)])),
    field("target layer", el("input", { type: "number", name: "tl", value: params.get("tl") ?? "-1" })),
    field("task dataset (labelled)", select("task", labelled, params.get("task") || labelled[0] || "")),
    field("bridge / train dataset", select("bridge", [{ value: "", label: "(default)" }, ...datasets.map((d) => d.name)],
      params.get("bridge") || "")),
    field("ranks", el("input", { type: "text", name: "ranks", value: params.get("ranks") || "1,2,4,8,16" })),
    el("button", { type: "submit" }, "Sweep"));
  const status = el("div", { class: "status", id: "transfer-status" });
  const plot = el("div", { class: "plot wide", id: "transfer-plot" });
  const side = el("div", { class: "side", id: "transfer-side" });
  root.append(form, status, el("div", { class: "row" }, plot, side));

  async function sweep() {
    const v = formValues(form);
    save("transfer", v);
    await run(status, async (signal) => {
      const ranks = intList(v.ranks, "ranks");
      const source = { model: v.source, layer: Number(v.sl) };
      const target = { model: v.target, layer: Number(v.tl) };
      if (v.mode === "bridge") {
        const s = (await gql(BRIDGE, { source, target, ranks, train: v.bridge || null }, { signal })).bridgeSweep;
        linesWithBaselines(plot, s.ranks, [{ name: "r2", y: s.r2 }, { name: "mean cosine", y: s.meanCosine }],
          [{ name: "full-rank ridge r2", value: s.ridgeR2 }, { name: "full-rank ridge cosine", value: s.ridgeMeanCosine, dash: "dot" }],
          { title: `bridge ${plotText(v.source)} L${s.layerSource} → ${plotText(v.target)} L${s.layerTarget}`, xTitle: "rank", yTitle: "held-out score" });
        side.replaceChildren(dl([["ridge alpha", fmt(s.alpha)], ["train prompts", s.nTrain], ["test prompts", s.nTest]]));
        return;
      }
      if (!v.task) throw new Error("probe transfer needs a labelled dataset, and none is stored");
      const s = (await gql(PROBE, { source, target, task: v.task, ranks, bridge: v.bridge || null }, { signal })).probeTransferSweep;
      linesWithBaselines(plot, s.ranks,
        [{ name: "transferred (frozen bridge)", y: s.transferred }, { name: "task-specific bridge", y: s.taskSpecific }],
        [{ name: "source native", value: s.sourceNative }, { name: "target native", value: s.targetNative },
          { name: "full-rank transferred", value: s.ridgeTransferred, dash: "dot" },
          { name: "full-rank task-specific", value: s.ridgeTaskSpecific, dash: "dot" },
          { name: "chance", value: s.chance, dash: "longdash" }],
        { title: `probe transfer on ${plotText(v.task)}: ${plotText(v.source)} L${s.layerSource} ← ${plotText(v.target)} L${s.layerTarget}`,
          xTitle: "bridge rank", yTitle: "accuracy" });
      side.replaceChildren(dl([
        ["source native", fmt(s.sourceNative)], ["target native", fmt(s.targetNative)], ["chance", fmt(s.chance)],
        ["full-rank transferred", fmt(s.ridgeTransferred)], ["full-rank task-specific", fmt(s.ridgeTaskSpecific)],
        ["classes", s.nClasses], ["train / test prompts", `${s.nTrain} / ${s.nTest}`], ["bridge prompts", s.nBridge],
        ["alpha frozen / task", `${fmt(s.alphaFrozen)} / ${fmt(s.alphaTask)}`],
      ]));
    });
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); sweep(); });
  if (params.get("source") && params.get("target")) await sweep();
}

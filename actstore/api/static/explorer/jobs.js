// Ingest jobs: start an ingest (needs the API token) and follow a job's progress live.
import { gql } from "./api.js";
import { save } from "./state.js";
import { el, field, select, run, dl, formValues, intList, showError } from "./ui.js";

const JOB = `query Job($id: ID!) { job(id: $id) { id state done total message } }`;
/** The ingest mutation; `key` and `token` (the token site) are sent only when set, so a
 *  blank field leaves the server's default (the model name's slug; the last token). */
function ingestMutation({ key, site }) {
  const vars = ["$model: String!", "$dataset: String!", "$layers: [Int!]"];
  const args = ["model: $model", "dataset: $dataset", "layers: $layers"];
  if (key) { vars.push("$key: String"); args.push("key: $key"); }
  if (site) { vars.push("$site: String"); args.push("token: $site"); }
  return `mutation Ingest(${vars.join(", ")}) {\n  ingest(${args.join(", ")}) { id state done total message }\n}`;
}
const POLL_MS = 500;

export async function render(root, params, { datasets }) {
  root.append(el("h2", {}, "Ingest jobs"));
  const start = el("form", { class: "controls" },
    field("model (hub id or folder on the server)", el("input", { type: "text", name: "model", class: "wide" })),
    field("dataset", select("dataset", datasets.map((d) => d.name))),
    field("layers (blank: all)", el("input", { type: "text", name: "layers" })),
    field("model key (blank: from the name)", el("input", { type: "text", name: "key" })),
    field("token site", select("site", [{ value: "", label: "last (default)" }, { value: "first", label: "first ([CLS])" },
      { value: "mean", label: "mean over tokens" }], "")),
    field("API token", el("input", { type: "password", name: "token", autocomplete: "off" })),
    el("button", { type: "submit" }, "Start ingest"));
  const follow = el("form", { class: "controls" },
    field("job id", el("input", { type: "text", name: "id", class: "wide", value: params.get("id") || "" })),
    el("button", { type: "submit" }, "Follow"));
  const status = el("div", { class: "status", id: "jobs-status" });
  const out = el("div", { id: "job-out" });
  root.append(el("h3", {}, "Start an ingest"), start, el("h3", {}, "Follow a job"), follow, status, out);

  let timer = null;
  const stop = () => { if (timer) clearTimeout(timer); timer = null; };
  window.addEventListener("hashchange", stop, { once: true });

  function show(job) {
    const running = job.state === "QUEUED" || job.state === "RUNNING";
    // total is 0 until the model is loaded and the prompts counted: an indeterminate bar, no "0 / 0"
    const counted = job.total > 0 || !running;
    const children = [
      counted ? el("progress", { id: "job-progress", max: String(Math.max(job.total, 1)), value: String(job.done) })
        : el("progress", { id: "job-progress" }),
      el("span", { id: "job-count" }, counted ? ` ${job.done} / ${job.total}` : " loading the model…"),
      dl([["job", job.id], ["state", el("span", { id: "job-state" }, job.state)], job.message ? ["message", job.message] : null]),
    ];
    if (running) children.push(el("p", { class: "note" }, "Updating live…"));
    out.replaceChildren(...children); // (replaceChildren writes a null child as the text "null")
    return running;
  }

  async function poll(id) {
    stop();
    save("jobs", { id });
    const job = await run(status, async (signal) => {
      const j = (await gql(JOB, { id }, { signal })).job;
      if (!j) throw new Error(`no job with id ${JSON.stringify(id)} (jobs live in the server's memory until it restarts)`);
      return j;
    });
    if (job && show(job)) timer = setTimeout(() => poll(id), POLL_MS);
  }

  start.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = formValues(start);
    const job = await run(status, async (signal) => {
      const layers = v.layers ? intList(v.layers, "layers") : null;
      const variables = { model: v.model, dataset: v.dataset, layers };
      if (v.key) variables.key = v.key;
      if (v.site) variables.site = v.site;
      return (await gql(ingestMutation(v), variables, { signal, token: v.token })).ingest;
    });
    if (job) {
      follow.elements.id.value = job.id;
      show(job);
      poll(job.id);
    }
  });
  follow.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = formValues(follow).id;
    if (!id) showError(status, "give a job id");
    else poll(id);
  });
  if (params.get("id")) await poll(params.get("id"));
}

// Ingest jobs: start an ingest (needs the API token) and follow a job's progress live.
import { gql } from "./api.js";
import { save } from "./state.js";
import { el, field, select, run, dl, formValues, intList, showError } from "./ui.js";

const JOB = `query Job($id: ID!) { job(id: $id) { id state done total message } }`;
const INGEST = `mutation Ingest($model: String!, $dataset: String!, $layers: [Int!]) {
  ingest(model: $model, dataset: $dataset, layers: $layers) { id state done total message }
}`;
const POLL_MS = 500;

export async function render(root, params, { datasets }) {
  root.append(el("h2", {}, "Ingest jobs"));
  const start = el("form", { class: "controls" },
    field("model (hub id or folder on the server)", el("input", { type: "text", name: "model", class: "wide" })),
    field("dataset", select("dataset", datasets.map((d) => d.name))),
    field("layers (blank: all)", el("input", { type: "text", name: "layers" })),
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
    out.replaceChildren(
      el("progress", { id: "job-progress", max: String(Math.max(job.total, 1)), value: String(job.done) }),
      el("span", { id: "job-count" }, ` ${job.done} / ${job.total}`),
      dl([["job", job.id], ["state", el("span", { id: "job-state" }, job.state)], job.message ? ["message", job.message] : null]),
      running ? el("p", { class: "note" }, "Updating live…") : null);
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
      return (await gql(INGEST, { model: v.model, dataset: v.dataset, layers }, { signal, token: v.token })).ingest;
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

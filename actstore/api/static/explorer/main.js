// The explorer's router: one view module per page, chosen by the URL hash (#compare?...).
// Every view is built on the public GraphQL API (/graphql) only.
import { gql } from "./api.js";
import { current } from "./state.js";
import { el, showError } from "./ui.js";
import * as catalog from "./catalog.js";
import * as compare from "./compare.js";
import * as neighbors from "./neighbors.js";
import * as transfer from "./transfer.js";
import * as sae from "./sae.js";
import * as jobs from "./jobs.js";
import * as atlas from "./atlas.js";

const VIEWS = { catalog, compare, atlas, neighbors, transfer, sae, jobs };

const CATALOG_QUERY = `{
  models { key source architecture nLayers dModel dtype token layers datasets promptCount }
  datasets { name promptCount hasLabels }
  saes { id model layer dIn dSae architecture hookName }
}`;

let cached = null;
/** The stored models, datasets and SAEs (loaded once per page; `fresh` reloads). */
function loadCatalog(fresh = false) {
  if (!cached || fresh) {
    cached = gql(CATALOG_QUERY);
    cached.catch(() => { cached = null; });
  }
  return cached;
}

let rendering = 0;
async function render() {
  const { view, params } = current();
  const root = document.getElementById("view");
  for (const a of document.querySelectorAll("#nav a[data-view]")) a.classList.toggle("active", a.dataset.view === view);
  const module = VIEWS[view];
  const ticket = ++rendering;
  root.replaceChildren();
  if (!module) {
    showError(root, `no view named ${JSON.stringify(view)}: the views are ${Object.keys(VIEWS).join(", ")}`);
    return;
  }
  let data;
  try {
    data = await loadCatalog(view === "catalog");
  } catch (e) {
    if (ticket === rendering) showError(root, `could not load the catalog: ${e.message}`);
    return;
  }
  if (ticket !== rendering) return;
  const page = el("section", { id: `view-${view}` });
  root.append(page);
  await module.render(page, params, data);
}

window.addEventListener("hashchange", render);
render();

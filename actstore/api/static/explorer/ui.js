// Small DOM helpers shared by the views: elements, form fields, tables, number formats and
// `run`, which shows a spinner with a Cancel button while a request runs and the API's
// message when it fails.

/** el("div", {class: "x", onclick: f}, child, ...) -> HTMLElement. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "value") node.value = value;
    else if (key === "checked") node.checked = Boolean(value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A labelled control for a form.controls. */
export function field(label, control) {
  return el("label", {}, label, control);
}

/** <select name> over options (strings or {value, label}); `value` selected. */
export function select(name, options, value, attrs = {}) {
  const node = el("select", { name, ...attrs });
  for (const o of options) {
    const opt = typeof o === "object" ? o : { value: o, label: o };
    node.append(el("option", { value: String(opt.value) }, opt.label));
  }
  if (value !== undefined && value !== null) node.value = String(value);
  return node;
}

/** A number for people: null as a dash, tiny or huge values in exponent form. */
export function fmt(x, digits = 4) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return x.toFixed(digits);
}

/** A definition list of [term, value] pairs (the panels beside a chart). */
export function dl(pairs) {
  return el("dl", {}, pairs.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** A table: headers and rows of cells (numbers are right-aligned and formatted). */
export function table(headers, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((c) =>
      typeof c === "number" ? el("td", { class: "num" }, fmt(c)) : el("td", {}, c ?? "—"))))));
}

/** Show `message` as an error in `target`. */
export function showError(target, message) {
  target.replaceChildren(el("div", { class: "error", role: "alert" }, message));
}

/** Run `work(signal)` with a spinner and Cancel button in `status`; a newer run on the same
 *  status cancels the older one. Resolves to work's value, or undefined when it failed (the
 *  error is shown) or was cancelled. */
export async function run(status, work) {
  if (status.controller) status.controller.abort();
  const controller = new AbortController();
  status.controller = controller;
  const cancel = el("button", { type: "button", class: "cancel", onclick: () => controller.abort() }, "Cancel");
  status.replaceChildren(el("span", { class: "spinner", role: "progressbar", "aria-label": "running" }),
    "Running… ", cancel);
  try {
    const value = await work(controller.signal);
    if (status.controller === controller) status.replaceChildren();
    return value;
  } catch (e) {
    if (status.controller !== controller) return undefined; // superseded by a newer run
    if (controller.signal.aborted) status.replaceChildren(el("span", { class: "note cancelled" }, "Cancelled."));
    else showError(status, e.message || String(e));
    return undefined;
  } finally {
    if (status.controller === controller) status.controller = null;
  }
}

/** The form's named values as an object of strings (checkboxes as "1" / "0"). */
export function formValues(form) {
  const out = {};
  for (const node of form.elements) {
    if (!node.name) continue;
    out[node.name] = node.type === "checkbox" ? (node.checked ? "1" : "0") : node.value.trim();
  }
  return out;
}

/** "1, 2,4" -> [1, 2, 4]; throws with a message on anything that is not a list of integers. */
export function intList(text, what) {
  const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
  const values = parts.map(Number);
  if (!parts.length || values.some((v) => !Number.isInteger(v))) {
    throw new Error(`${what} must be a comma-separated list of integers, got ${JSON.stringify(text)}`);
  }
  return values;
}

/** An integer form value or null when blank. */
export function optInt(text) {
  return text === "" || text === undefined ? null : Number(text);
}

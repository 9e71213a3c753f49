// View state in the URL hash, e.g. #compare?a=m1&b=m2&k=10, so a view can be shared.

/** The current view name and its parameters (a URLSearchParams). */
export function current() {
  const hash = decodeURIComponent(location.hash.slice(1));
  const at = hash.indexOf("?");
  const view = (at < 0 ? hash : hash.slice(0, at)) || "catalog";
  return { view, params: new URLSearchParams(at < 0 ? "" : hash.slice(at + 1)) };
}

/** The address of `view` with `values` (blank values left out). */
export function href(view, values = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== "" && value !== null && value !== undefined) params.set(key, String(value));
  }
  const qs = params.toString();
  return `#${view}${qs ? "?" + qs : ""}`;
}

/** Record `values` as the state of `view` without re-rendering it. */
export function save(view, values) {
  history.replaceState(null, "", href(view, values));
}

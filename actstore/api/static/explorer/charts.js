// plotly.js figures used by several views (plotly is loaded as the global `Plotly` from
// /static/vendor/plotly.min.js, the copy the plotly Python package ships).

const CONFIG = { displaylogo: false, responsive: true };

/** `text` safe to show in a plotly title, legend, tick or hover: plotly reads tags such as
 *  <a href> and <br> in strings, so &, < and > are written as entities (shown as typed). */
export function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Colour scale for a value range: diverging around 0 when values have both signs. */
export function colourScale(values) {
  const flat = values.flat();
  const lo = Math.min(...flat);
  const hi = Math.max(...flat);
  if (lo < 0 && hi > 0) {
    const r = Math.max(-lo, hi);
    return { colorscale: "RdBu", reversescale: true, zmin: -r, zmax: r };
  }
  return { colorscale: "Viridis", zmin: lo, zmax: hi > lo ? hi : lo + 1e-9 };
}

/** A plotly axis over layer numbers: every layer ticked when there are few. */
export function layerAxis(title, layers) {
  const axis = { title: { text: title } };
  if (layers.length <= 16) Object.assign(axis, { tickmode: "array", tickvals: layers });
  return axis;
}

/** Linear interpolation of `d` over increasing `xs` to `ys`, clamped at the ends. */
function interp(d, xs, ys) {
  if (d <= xs[0]) return ys[0];
  for (let i = 1; i < xs.length; i++) {
    if (d <= xs[i]) return ys[i - 1] + ((d - xs[i - 1]) / (xs[i] - xs[i - 1])) * (ys[i] - ys[i - 1]);
  }
  return ys[ys.length - 1];
}

/** A layer-by-layer matrix (ckaMatrix, affinityMatrix) as a heatmap: hover gives both layers,
 *  their relative depths and the value; the argmax path and the equal-depth (generalized)
 *  diagonal are drawn; values are written on the cells when the matrix is small.
 *  `onCell(i, j)` is called with the row and column index of a clicked cell. */
export function matrixHeatmap(div, m, { label, title, onCell } = {}) {
  const custom = m.layersA.map((_, i) => m.layersB.map((_, j) => [m.depthsA[i], m.depthsB[j]]));
  const heat = {
    type: "heatmap", name: label, x: m.layersB, y: m.layersA, z: m.values, customdata: custom,
    ...colourScale(m.values), xgap: 1, ygap: 1, colorbar: { title: { text: label } },
    hovertemplate: `${m.modelA} layer %{y} (depth %{customdata[0]:.2f})<br>`
      + `${m.modelB} layer %{x} (depth %{customdata[1]:.2f})<br>${label} %{z:.4f}<extra></extra>`,
  };
  if (m.layersA.length * m.layersB.length <= 144) {
    heat.texttemplate = "%{z:.2f}";
    heat.textfont = { size: 11 };
  }
  // Open squares around the argmax cells (and a thin line through them): the value written on a
  // cell stays readable under its marker.
  const argmax = {
    type: "scatter", mode: "lines+markers", name: "argmax per row", x: m.argmax.map((j) => m.layersB[j]),
    y: m.layersA, line: { color: "#ff3b30", width: 1 }, opacity: 0.9,
    marker: { symbol: "square-open", size: 24, line: { width: 2.5 }, color: "#ff3b30" }, hoverinfo: "skip",
  };
  const diagonal = {
    type: "scatter", mode: "lines", name: "equal relative depth", y: m.layersA,
    x: m.depthsA.map((d) => interp(d, m.depthsB, m.layersB)),
    line: { color: "#222", dash: "dash", width: 2 }, hoverinfo: "skip",
  };
  const layout = {
    title: { text: title || label }, margin: { t: 40, l: 60, r: 20, b: 90 },
    xaxis: layerAxis(`${m.modelB} layer`, m.layersB), yaxis: layerAxis(`${m.modelA} layer`, m.layersA),
    legend: { orientation: "h", y: -0.2 }, shapes: bandShapes(m),
  };
  Plotly.newPlot(div, [heat, argmax, diagonal], layout, CONFIG);
  if (onCell) {
    div.on("plotly_click", (event) => {
      const point = event.points.find((p) => p.curveNumber === 0);
      if (point) onCell(point.pointIndex[0], point.pointIndex[1]);
    });
  }
}

/** Cell edges of heatmap centres `xs` (plotly puts them half-way between centres). */
function edges(xs) {
  if (xs.length === 1) return [xs[0] - 0.5, xs[0] + 0.5];
  const mid = xs.slice(1).map((x, i) => (x + xs[i]) / 2);
  return [xs[0] - (mid[0] - xs[0]), ...mid, xs[xs.length - 1] + (xs[xs.length - 1] - mid[mid.length - 1])];
}

/** The generalized diagonal of an n1 x n2 matrix (METHODS.md): cells (i, j) with
 *  j <= i <= j + n1 - n2 when n1 >= n2, else the same with rows and columns swapped. */
export function generalizedDiagonal(n1, n2) {
  const cells = [];
  for (let i = 0; i < n1; i++) {
    for (let j = 0; j < n2; j++) {
      const on = n1 >= n2 ? j <= i && i <= j + n1 - n2 : i <= j && j <= i + n2 - n1;
      if (on) cells.push([i, j]);
    }
  }
  return cells;
}

/** Dotted outlines of the generalized-diagonal cells (the diagonal test's "on" cells). */
function bandShapes(m) {
  const ex = edges(m.layersB);
  const ey = edges(m.layersA);
  return generalizedDiagonal(m.layersA.length, m.layersB.length).map(([i, j]) => ({
    type: "rect", xref: "x", yref: "y", x0: ex[j], x1: ex[j + 1], y0: ey[i], y1: ey[i + 1],
    line: { color: "#111", width: 1.5, dash: "dot" }, fillcolor: "rgba(0,0,0,0)", name: "generalized diagonal",
  }));
}

/** Lines against x with horizontal baselines: series = [{name, y}], baselines = [{name, value}]. */
export function linesWithBaselines(div, x, series, baselines, { title, xTitle, yTitle } = {}) {
  const traces = series.map((s) => ({ type: "scatter", mode: "lines+markers", name: s.name, x, y: s.y }));
  const lo = Math.min(...x);
  const hi = Math.max(...x);
  for (const b of baselines) {
    traces.push({
      type: "scatter", mode: "lines", name: b.name, x: [lo, hi], y: [b.value, b.value],
      line: { dash: b.dash || "dash", width: 1.5 }, hovertemplate: `${b.name} %{y:.4f}<extra></extra>`,
    });
  }
  // Ranks spanning a factor of 16 or more go on a log axis, ticked at the ranks themselves
  // (plotly's own log ticks read 2, 5, 10, ... whatever ranks were swept) and titled so.
  const log = x.length > 2 && hi / Math.max(lo, 1) >= 16;
  const xaxis = log
    ? { title: { text: `${xTitle} (log scale)` }, type: "log", tickmode: "array", tickvals: x, ticktext: x.map(String) }
    : { title: { text: xTitle }, type: "linear" };
  const layout = {
    title: { text: title }, margin: { t: 40, l: 60, r: 20, b: 50 }, xaxis, yaxis: { title: { text: yTitle } },
  };
  Plotly.newPlot(div, traces, layout, CONFIG);
}

export function newPlot(div, traces, layout) {
  Plotly.newPlot(div, traces, { margin: { t: 40, l: 60, r: 20, b: 50 }, ...layout }, CONFIG);
}

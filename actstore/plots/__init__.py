"""PNG plots of query answers, shared by the API (``/plots/KEY.png``) and the CLI (``--plot``).

``render_png(result)`` draws any plottable result: the renderer registered for its class name
with ``@renders("ClassName")``, else the matrix heatmap. Renderers are registered by class
*name*, so this package imports nothing of service, api, store or ingest; matplotlib is
imported inside the drawing functions only, so importing this package is cheap.

- :mod:`.registry`  ``renders``, ``render_png``
- :mod:`.heatmaps`  CKA / affinity matrices (the default), SAE SVCCA matrices
- :mod:`.sweeps`    the probe-transfer accuracy-against-rank curve
- :mod:`.atlas`     the atlas: mean resized matrix, argmax-depth lines, on vs off scatter
"""

from __future__ import annotations

from . import atlas, heatmaps, sweeps  # noqa: F401 - importing them registers their renderers
from .registry import render_png, renderer_for, renders

__all__ = ["render_png", "renderer_for", "renders"]

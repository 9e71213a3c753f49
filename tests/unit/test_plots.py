"""actstore.plots: renderers registered by result class name, PNG output, lazy matplotlib."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from actstore.plots import render_png, renderer_for, renders
from actstore.plots.heatmaps import heatmap_png, sae_heatmap_png
from actstore.plots.sweeps import sweep_png

PNG = b"\x89PNG\r\n\x1a\n"


# Results are matched by class *name*: these stand in for the service's dataclasses.
@dataclass
class SimilarityMatrixResult:
    model_a: str = "a"
    model_b: str = "b"
    layers_a: list = field(default_factory=lambda: [0, 1, 2])
    layers_b: list = field(default_factory=lambda: [0, 2])
    values: list = field(default_factory=lambda: [[0.9, 0.1], [0.5, 0.6], [0.2, 0.8]])
    n: int = 50
    argmax: list = field(default_factory=lambda: [0, 1, 1])
    depths_a: list = field(default_factory=lambda: [0.0, 0.5, 1.0])
    depths_b: list = field(default_factory=lambda: [0.0, 1.0])
    debiased: bool = True


@dataclass
class SaeMatrixResult(SimilarityMatrixResult):
    p_values: list = field(default_factory=lambda: [[0.01, 0.5], [0.2, 0.03], [0.9, 0.01]])
    random_svcca_mean: list = field(default_factory=lambda: [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]])
    matching: str = "one_to_one"
    random_pairs: int = 9


@dataclass
class ProbeTransferSweepResult:
    ranks: tuple = (1, 2, 4, 8)
    transferred: tuple = (0.55, 0.6, 0.7, 0.72)
    task_specific: tuple = (0.6, 0.7, 0.8, 0.81)
    source_native: float = 0.85
    target_native: float = 0.8
    chance: float = 0.5
    ridge_transferred: float = 0.73
    ridge_task_specific: float = 0.82
    n_train: int = 70
    n_test: int = 30
    n_bridge: int = 60
    source: str = "a"
    target: str = "b"
    task_dataset: str = "task"
    layer_source: int = 1
    layer_target: int = 2


class ServiceSweep(ProbeTransferSweepResult):
    """A result extending a registered class (as service results extend analysis ones)."""


class Unregistered(SimilarityMatrixResult):
    pass


def test_renderers_are_found_by_class_name_base_classes_and_default():
    assert renderer_for(ProbeTransferSweepResult()) is sweep_png
    assert renderer_for(ServiceSweep()) is sweep_png  # a base class's name
    assert renderer_for(SaeMatrixResult()) is sae_heatmap_png  # its own name before its base's
    assert renderer_for(SimilarityMatrixResult()) is heatmap_png
    assert renderer_for(Unregistered()) is heatmap_png
    assert renderer_for(object()) is heatmap_png  # the default: the matrix heatmap


@pytest.mark.parametrize(
    "result",
    [SimilarityMatrixResult(), SaeMatrixResult(), ProbeTransferSweepResult(), ServiceSweep()],
    ids=lambda r: type(r).__name__,
)
def test_render_png_draws_a_png(result):
    png = render_png(result)
    assert png[:8] == PNG and len(png) > 2000


def test_registering_a_name_twice_is_refused():
    with pytest.raises(
        ValueError,
        match=r"ProbeTransferSweepResult already has a renderer: "
        r"actstore\.plots\.sweeps\.sweep_png",
    ):

        @renders("ProbeTransferSweepResult")
        def other(result) -> bytes:
            return b""

    with pytest.raises(ValueError, match=r"the default renderer is already actstore\.plots\.heatmaps\.heatmap_png"):
        renders(default=True)(lambda result: b"")
    renders("ProbeTransferSweepResult")(sweep_png)  # the same function again is fine
    with pytest.raises(TypeError, match=r"renders\(\) needs a result class name or default=True"):
        renders()


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, actstore.plots; print('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"

"""Text is text in the explorer's plotly charts (issue 22, item 7): a dataset name or prompt
text holding plotly pseudo-HTML (``<a href=...>``, ``<b>``, ``<br>``) is drawn literally and
creates no link, in the catalog chart's tick labels and in hover labels alike.

Headless Chromium against a real server over a store of its own (see tests/browser/harness.py);
the escaping function itself is also checked under Node (no browser needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.browser.harness import Server, browser_missing, launch

ROOT = Path(__file__).resolve().parents[2]
EVIL = '<a href="https://evil.example/">click me</a>'
BOLD = "<b>bold</b><br>%{x} & more"
EXPLORER = ROOT / "actstore" / "api" / "static" / "explorer"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_plot_text_escapes_pseudo_html_and_template_placeholders(tmp_path):
    script = (
        f"import {{ plotText }} from {json.dumps((EXPLORER / 'charts.js').as_uri())};\n"
        f"console.log(JSON.stringify([{json.dumps(EVIL)}, {json.dumps(BOLD)}, 'plain', null, 3].map(plotText)));"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        '&lt;a href="https://evil.example/"&gt;click me&lt;/a&gt;',
        "&lt;b&gt;bold&lt;/b&gt;&lt;br&gt;&#37;{x} &amp; more",
        "plain",
        "",
        "3",
    ]


MISSING = browser_missing()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from actstore import Store

    store = Store.open(tmp_path_factory.mktemp("plot-text") / "db")
    ids = store.add_prompts(EVIL, [f"{BOLD} number {i}" for i in range(6)] + [EVIL])
    store.add_prompts("plain", [f"plain {i}" for i in range(3)])
    rng = np.random.default_rng(0)
    store.activations.write(
        "m",
        {0: rng.standard_normal((7, 4)), 1: rng.standard_normal((7, 4))},
        ids,
        n_layers=2,
        source="local/m",
        architecture="llama",
        dtype="float32",
    )
    srv = Server(store.uri)
    srv.ids = ids
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if MISSING:
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(str(e)))
    yield pg
    context.close()
    assert not problems, problems


def _links_and_bold(page, div_id: str) -> dict:
    return page.evaluate(f"""() => {{
        const div = document.getElementById({div_id!r});
        return {{ links: div.querySelectorAll('a').length,
                  bold: [...div.querySelectorAll('tspan')].filter(t => (t.getAttribute('style') || '')
                        .includes('bold')).length }};
    }}""")


@pytest.mark.skipif(MISSING is not None and os.environ.get("CI", "").lower() != "true", reason=MISSING or "")
def test_a_dataset_name_with_a_link_is_drawn_as_text_in_the_catalog_chart(page, server):
    page.goto(f"{server.base}/#catalog")
    page.wait_for_function("() => document.getElementById('datasets-plot')?.data?.length > 0")
    page.wait_for_selector("#datasets-plot .xtick text")
    ticks = page.evaluate("() => [...document.querySelectorAll('#datasets-plot .xtick text')].map(t => t.textContent)")
    assert sorted(ticks) == sorted([EVIL, "plain"])  # the literal name, markup and all
    assert _links_and_bold(page, "datasets-plot") == {"links": 0, "bold": 0}
    # hover over the bar of the dataset: the label shows the name as text, no link
    page.evaluate(
        "() => Plotly.Fx.hover('datasets-plot', [{curveNumber: 0, pointNumber: %d}])"
        % sorted([EVIL, "plain"]).index(EVIL)
    )
    page.wait_for_selector("#datasets-plot .hoverlayer text")
    hover = page.evaluate("() => document.querySelector('#datasets-plot .hoverlayer').textContent")
    assert EVIL in hover
    assert _links_and_bold(page, "datasets-plot") == {"links": 0, "bold": 0}


@pytest.mark.skipif(MISSING is not None and os.environ.get("CI", "").lower() != "true", reason=MISSING or "")
def test_prompt_texts_with_markup_are_text_in_neighbour_hover_labels(page, server):
    from urllib.parse import quote

    page.goto(f"{server.base}/#neighbors?model=m&layer=1&k=3&from={quote(EVIL)}&prompt={server.ids[0]}")
    page.wait_for_function("() => document.getElementById('neighbors-plot')?.data?.length > 0")
    page.evaluate("() => Plotly.Fx.hover('neighbors-plot', [{curveNumber: 0, pointNumber: 0}])")
    page.wait_for_selector("#neighbors-plot .hoverlayer text")
    hover = page.evaluate("() => document.querySelector('#neighbors-plot .hoverlayer').textContent")
    assert "<b>bold</b><br>%{x} & more number" in hover or EVIL in hover, hover
    assert _links_and_bold(page, "neighbors-plot") == {"links": 0, "bold": 0}

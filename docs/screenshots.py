"""The README's screenshots (docs/img/*.png): the explorer's compare and atlas views and
GraphiQL, in headless Chromium. Run from the repository root:

    PYTHONPATH=. python docs/screenshots.py --store demo-store   # the offline demo's real models
    PYTHONPATH=. python docs/screenshots.py                      # the browser tests' tiny store

With ``--store`` the compare view shows SmolLM2-135M against MiniLM on the demo's general text
(``--a``, ``--b``, ``--dataset`` choose others) and the atlas of every stored model (real
and control); without it, the tiny random models of the
browser tests (the values then show the layout, not findings).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser.harness import MODEL_A, MODEL_B, Server, build_store, cleanup, launch

OUT = Path(__file__).resolve().parent / "img"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="an existing store (default: build the browser tests' tiny store)")
    ap.add_argument("--a", default="smollm2-135m")
    ap.add_argument("--b", default="minilm-l6")
    ap.add_argument("--dataset", default="demo-text")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="actstore-shots-"))
    if args.store:
        uri, view = args.store, f"a={args.a}&b={args.b}&dataset={args.dataset}&k=10&debiased=1"
        atlas = f"dataset={args.dataset}&k=10&resize=20"  # no models: every stored model
    else:
        uri, view = build_store(root)[0], f"a={MODEL_A}&b={MODEL_B}&dataset=moods&k=5&debiased=1"
        atlas = f"models={MODEL_A},{MODEL_B}&dataset=moods&k=5&resize=8"
    server = Server(uri)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{server.base}/#compare?{view}")
            page.wait_for_function("() => document.getElementById('affinity-plot')?.data?.length > 0", timeout=300_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT / "explorer-compare.png"))
            page.goto(f"{server.base}/#atlas?{atlas}")
            if "models=" not in atlas:
                page.wait_for_selector("#view-atlas form button[type=submit]")
                page.click("#view-atlas form button[type=submit]")
            page.wait_for_function("() => document.getElementById('atlas-onoff')?.data?.length > 0", timeout=300_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT / "explorer-atlas.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 720})
            page.goto(f"{server.base}/graphql")
            page.wait_for_selector(".graphiql-container")
            page.click(".graphiql-execute-button")
            page.wait_for_function("() => document.querySelector('.result-window')?.innerText.includes('promptCount')")
            page.screenshot(path=str(OUT / "graphiql.png"))
            browser.close()
    finally:
        server.stop()
        cleanup(root)
    print(f"wrote {OUT / 'explorer-compare.png'}, {OUT / 'explorer-atlas.png'} and {OUT / 'graphiql.png'}")


if __name__ == "__main__":
    main()

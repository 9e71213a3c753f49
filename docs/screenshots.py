"""The README's screenshots (docs/img/*.png): the explorer's compare view and GraphiQL, in
headless Chromium against the tiny store of the browser tests (tiny random models, so the
values show the layout, not findings). Run from the repository root:

    PYTHONPATH=. python docs/screenshots.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser.harness import MODEL_A, MODEL_B, Server, build_store, cleanup, launch

OUT = Path(__file__).resolve().parent / "img"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="actstore-shots-"))
    server = Server(build_store(root)[0])
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{server.base}/#compare?a={MODEL_A}&b={MODEL_B}&dataset=moods&k=5&debiased=1")
            page.wait_for_function("() => document.getElementById('affinity-plot')?.data?.length > 0")
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT / "explorer-compare.png"))
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
    print(f"wrote {OUT / 'explorer-compare.png'} and {OUT / 'graphiql.png'}")


if __name__ == "__main__":
    main()

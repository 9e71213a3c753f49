"""The explorer (/) and GraphiQL (/graphql) in headless Chromium against a real server.

One server (``actstore serve`` on 127.0.0.1) over a tiny store and one browser are shared by
the module (tests/browser/harness.py). Each view is opened from a shareable URL; the values
its plotly chart holds (read back from the graph div's ``data``) and its tables are compared
with the API's own JSON answer to the same query. Every page is checked to have asked no host
but the server and to have logged no error (CSP violations included).

Without Chromium or Playwright these tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.browser.harness import MODEL_A, MODEL_B, TOKEN, Server, browser_missing, build_store, launch

MISSING = browser_missing()
if MISSING and os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(f"browser tests cannot run in CI: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

WAIT_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    uri, folders = build_store(tmp_path_factory.mktemp("browser"))
    srv = Server(uri)
    srv.folders = folders
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page whose requests and console errors are checked when the test ends."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    requests: list[str] = []
    problems: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.requests, pg.problems = requests, problems
    yield pg
    context.close()
    foreign = [u for u in requests if not (u.startswith(server.base + "/") or u.startswith("data:"))]
    assert requests and not foreign, f"requests to other hosts: {foreign}"
    assert not problems, f"errors in the browser console (CSP violations, failed loads, exceptions): {problems}"


def plot_data(page, div_id: str) -> list[dict]:
    """The traces plotly drew in ``#div_id`` (waits until there are some)."""
    page.wait_for_function(f"() => document.getElementById({div_id!r})?.data?.length > 0")
    return page.evaluate(f"() => JSON.parse(JSON.stringify(document.getElementById({div_id!r}).data))")


def table_rows(page, table_id: str) -> list[list[str]]:
    return page.evaluate(f"""() => [...document.querySelectorAll('#{table_id} tbody tr')]
        .map(tr => [...tr.children].map(td => td.innerText.trim()))""")


def terms(page, selector: str) -> dict[str, str]:
    """The term -> value pairs of the definition list(s) under ``selector`` (the side panels)."""
    return page.evaluate(f"""() => Object.fromEntries([...document.querySelectorAll('{selector} dt')]
        .map(dt => [dt.innerText.trim(), dt.nextElementSibling.innerText.trim()]))""")


def fmt(x: float) -> str:
    """The explorer's number format (ui.js fmt) for values of moderate size."""
    return f"{x:.4f}"


# ------------------------------------------------------------------------------- GraphiQL
def test_graphiql_renders_from_the_server_and_runs_a_query(page, server):
    response = page.goto(f"{server.base}/graphql")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".graphiql-container")
    page.click(".graphiql-execute-button")
    page.wait_for_function("() => document.querySelector('.result-window')?.innerText.includes('promptCount')")
    text = page.inner_text(".result-window")
    models = server.data("{ models { key nLayers } }")["models"]
    for m in models:
        assert f'"key": "{m["key"]}"' in text and f'"nLayers": {m["nLayers"]}' in text
    assert {u.split("/")[3] for u in page.requests} >= {"graphql", "static"}


# ------------------------------------------------------------------------------- explorer
def test_catalog_lists_models_datasets_and_saes(page, server):
    response = page.goto(f"{server.base}/#catalog")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#saes-table")
    api = server.data(
        "{ models { key architecture nLayers dModel } datasets { name promptCount } saes { id model layer } }"
    )
    rows = table_rows(page, "models-table")
    assert [r[:4] for r in rows] == [
        [m["key"], m["architecture"], str(m["nLayers"]), str(m["dModel"])] for m in api["models"]
    ]
    assert sorted((r[0], r[1]) for r in rows) == [("tiny-gpt2", "gpt2"), ("tiny-llama", "llama")]
    assert rows[0][7].startswith("general (30), moods (48)") and "78 stored" in rows[0][7]
    bars = plot_data(page, "datasets-plot")[0]
    assert bars["x"] == ["extra", "general", "moods"] and bars["y"] == [12, 30, 48]
    assert [r[0] for r in table_rows(page, "saes-table")] == [s["id"] for s in api["saes"]]


def test_compare_draws_cka_and_affinity_with_the_api_values(page, server):
    page.goto(f"{server.base}/#compare?a={MODEL_A}&b={MODEL_B}&k=5&debiased=1&permutations=50")
    cka_traces = plot_data(page, "cka-plot")
    aff_traces = plot_data(page, "affinity-plot")
    api = server.data(f"""{{
      ckaMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", debiased: true) {{ layersA layersB values argmax depthsA }}
      affinityMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", k: 5) {{
        layersA layersB values argmax diagonal {{ pValue tStatistic }} }}
    }}""")
    cka, aff = api["ckaMatrix"], api["affinityMatrix"]
    heat, argmax, diagonal = cka_traces
    assert heat["type"] == "heatmap" and heat["z"] == cka["values"]
    assert heat["x"] == cka["layersB"] == [0, 1, 2, 3] and heat["y"] == cka["layersA"] == [0, 1, 2]
    assert argmax["x"] == [cka["layersB"][j] for j in cka["argmax"]]
    # the equal-depth diagonal: layer 0 -> 0, middle of 3 layers (depth 0.5) -> 1.5 of 4, last -> 3
    assert diagonal["x"] == pytest.approx([0.0, 1.5, 3.0]) and diagonal["y"] == [0, 1, 2]
    assert heat["texttemplate"] == "%{z:.2f}"  # a 3 x 4 matrix has its values written on the cells
    assert aff_traces[0]["z"] == aff["values"]
    assert aff_traces[1]["x"] == [aff["layersB"][j] for j in aff["argmax"]]
    side = terms(page, "#affinity-side")
    assert side["diagonal test p"] == fmt(aff["diagonal"]["pValue"])
    assert side["Welch t"] == fmt(aff["diagonal"]["tStatistic"])
    # the URL holds the view's state
    assert "a=tiny-llama" in page.url and "b=tiny-gpt2" in page.url and "k=5" in page.url

    # a clicked cell runs a permutation test beside the CKA matrix
    page.evaluate(
        "() => document.getElementById('cka-plot').emit('plotly_click', "
        "{points: [{curveNumber: 0, pointIndex: [2, 1]}]})"
    )
    page.wait_for_selector("#cka-cell dl")
    cell = server.data(f"""{{ cka(a: {{model: "{MODEL_A}", layer: 2}}, b: {{model: "{MODEL_B}", layer: 1}},
                               permutations: 50) {{ value pValue }} }}""")["cka"]
    side = terms(page, "#cka-cell")
    assert side["CKA"] == fmt(cell["value"]) and side["permutation p"] == fmt(cell["pValue"])


def test_compare_on_a_grid_uses_the_grid_layers_for_both_matrices(page, server):
    page.goto(f"{server.base}/#compare?a={MODEL_B}&b={MODEL_A}&k=4&debiased=0&grid=2")
    cka = plot_data(page, "cka-plot")[0]
    aff = plot_data(page, "affinity-plot")[0]
    api = server.data(f"""{{ ckaMatrix(modelA: "{MODEL_B}", modelB: "{MODEL_A}", debiased: false, grid: 2)
                            {{ layersA layersB values }} }}""")["ckaMatrix"]
    assert cka["z"] == api["values"] and cka["y"] == api["layersA"] == [0, 3] and cka["x"] == api["layersB"] == [0, 2]
    assert aff["y"] == [0, 3] and aff["x"] == [0, 2]


def test_neighbours_of_a_stored_prompt_across_depth(page, server):
    page.goto(f"{server.base}/#neighbors?model={MODEL_A}&layer=2&k=5&from=moods&prompt=3")
    bars = plot_data(page, "neighbors-plot")[0]
    depth = plot_data(page, "depth-plot")[0]
    fields = "rank promptId score text label dataset"
    api = server.data(
        f"""{{ {
            " ".join(
                f'l{l}: nearestNeighbors(at: {{model: "{MODEL_A}", layer: {l}}}, promptId: 3, k: 5) {{ {fields} }}'
                for l in range(3)
            )
        } }}"""
    )
    chosen = api["l2"]
    assert bars["y"] == [n["score"] for n in chosen]
    rows = table_rows(page, "neighbors-table")
    assert [(r[1], r[3], r[5]) for r in rows] == [
        (n["promptId"], "—" if n["label"] is None else str(n["label"]), n["text"]) for n in chosen
    ]
    assert rows[0][4] == "moods"
    assert depth["z"] == [[n["score"] for n in api[f"l{l}"]] for l in range(3)]
    overlap = plot_data(page, "overlap-plot")[0]
    ids = {n["promptId"] for n in chosen}
    assert overlap["y"] == [sum(n["promptId"] in ids for n in api[f"l{l}"]) / 5 for l in range(3)]
    assert overlap["y"][2] == 1.0


def test_neighbours_of_new_text(page, server):
    # layer -3 of 4 is layer 1
    page.goto(f"{server.base}/#neighbors?model={MODEL_B}&layer=-3&k=4&text=the%20soup%20was%20lovely")
    bars = plot_data(page, "neighbors-plot")[0]
    api = server.data(f"""{{ nearestNeighbors(at: {{model: "{MODEL_B}", layer: 1}}, text: "the soup was lovely", k: 4)
                            {{ score promptId }} }}""")["nearestNeighbors"]
    assert bars["y"] == pytest.approx([n["score"] for n in api], rel=1e-6)
    assert [r[1] for r in table_rows(page, "neighbors-table")] == [n["promptId"] for n in api]
    assert page.input_value("select[name=layer]") == "1" and "layer=1" in page.url


def test_probe_transfer_and_bridge_sweeps(page, server):
    page.goto(
        f"{server.base}/#transfer?mode=probe&source={MODEL_A}&sl=-1&target={MODEL_B}&tl=-1&task=moods&bridge=general&ranks=1,2,4"
    )
    traces = plot_data(page, "transfer-plot")
    api = server.data(f"""{{ probeTransferSweep(source: {{model: "{MODEL_A}", layer: -1}}, target: {{model: "{MODEL_B}", layer: -1}},
        taskDataset: "moods", bridgeDataset: "general", ranks: [1, 2, 4]) {{ ranks transferred taskSpecific sourceNative targetNative chance
        ridgeTransferred ridgeTaskSpecific }} }}""")["probeTransferSweep"]
    by_name = {t["name"]: t for t in traces}
    assert by_name["transferred (frozen bridge)"]["x"] == [1, 2, 4]
    assert by_name["transferred (frozen bridge)"]["y"] == api["transferred"]
    assert by_name["task-specific bridge"]["y"] == api["taskSpecific"]
    for name, key in (
        ("source native", "sourceNative"),
        ("target native", "targetNative"),
        ("chance", "chance"),
        ("full-rank transferred", "ridgeTransferred"),
        ("full-rank task-specific", "ridgeTaskSpecific"),
    ):
        assert by_name[name]["y"] == [api[key], api[key]], name

    page.select_option("select[name=mode]", "bridge")
    page.fill("input[name=ranks]", "2,8")
    page.click("#view-transfer button[type=submit]")
    page.wait_for_function("() => document.getElementById('transfer-plot').data[0].name === 'r2'")
    traces = plot_data(page, "transfer-plot")
    api = server.data(f"""{{ bridgeSweep(source: {{model: "{MODEL_A}", layer: -1}}, target: {{model: "{MODEL_B}", layer: -1}},
        ranks: [2, 8], trainDataset: "general") {{ r2 meanCosine ridgeR2 }} }}""")["bridgeSweep"]
    assert traces[0]["y"] == api["r2"] and traces[1]["y"] == api["meanCosine"]
    assert traces[2]["y"] == [api["ridgeR2"]] * 2
    assert "mode=bridge" in page.url and "ranks=2%2C8" in page.url


def test_sae_matching_histogram_and_baselines(page, server):
    saes = server.data("{ saes { id model } }")["saes"]
    a = next(s["id"] for s in saes if s["model"] == MODEL_A)
    b = next(s["id"] for s in saes if s["model"] == MODEL_B)
    page.goto(f"{server.base}/#sae?a={a}&b={b}&randomPairs=20")
    hist = plot_data(page, "sae-hist")[0]
    bars = plot_data(page, "sae-bars")
    api = server.data(f"""{{ saeFeatureCorrelation(a: {{id: "{a}"}}, b: {{id: "{b}"}}, randomPairs: 20) {{
        pairs svcca rsa randomSvccaMean randomRsaMean pValue topPairs(limit: 2000) {{ correlation }} }} }}""")
    r = api["saeFeatureCorrelation"]
    assert hist["type"] == "histogram" and hist["x"] == [p["correlation"] for p in r["topPairs"]]
    assert len(hist["x"]) == r["pairs"] > 0
    assert bars[0]["y"] == [r["svcca"], r["rsa"]] and bars[1]["y"] == [r["randomSvccaMean"], r["randomRsaMean"]]
    assert terms(page, "#sae-side")["SVCCA p"] == fmt(r["pValue"])


def test_ingest_job_progress(page, server):
    page.goto(f"{server.base}/#jobs")
    page.fill("input[name=model]", str(server.folders[MODEL_A]))
    page.select_option("select[name=dataset]", "extra")
    page.fill("input[name=layers]", "0")
    page.fill("input[name=token]", TOKEN)
    page.click("text=Start ingest")
    page.wait_for_function("() => ['SUCCEEDED', 'FAILED'].includes(document.getElementById('job-state')?.innerText)")
    job_id = page.input_value("input[name=id]")
    assert f"id={job_id}" in page.url
    job = server.data(f'{{ job(id: "{job_id}") {{ state done total }} }}')["job"]
    assert job == {"state": "SUCCEEDED", "done": 12, "total": 12}
    assert page.inner_text("#job-count").strip() == "12 / 12"
    assert page.evaluate("() => document.getElementById('job-progress').value") == 12


def test_errors_show_the_api_message(page, server):
    page.goto(f"{server.base}/#transfer?mode=bridge&source={MODEL_A}&sl=-1&target={MODEL_B}&tl=-1&ranks=0")
    page.wait_for_selector("#transfer-status .error")
    body = server.query(f"""{{ bridgeSweep(source: {{model: "{MODEL_A}", layer: -1}}, target: {{model: "{MODEL_B}", layer: -1}},
        ranks: [0]) {{ r2 }} }}""")
    message = body["errors"][0]["message"]
    assert "rank" in message
    assert page.inner_text("#transfer-status .error") == message
    # a job id the server does not know: the explorer's own message
    page.goto(f"{server.base}/#jobs?id=nope")
    page.wait_for_selector("#jobs-status .error")
    assert 'no job with id "nope"' in page.inner_text("#jobs-status .error")


def test_a_heavy_query_shows_a_spinner_and_can_be_cancelled(page, server):
    # Hold every GraphQL answer until the test has clicked Cancel.
    page.goto(f"{server.base}/#catalog")
    page.wait_for_selector("#models-table")
    # the heavy queries are never answered (they stay pending); the list of measures is
    page.route(
        re.compile(r".*/graphql$"),
        lambda route: None if "Matrix" in (route.request.post_data or "") else route.continue_(),
    )
    page.goto(f"{server.base}/#compare?a={MODEL_A}&b={MODEL_B}&k=5")
    page.wait_for_selector("#cka-status .spinner")
    page.click("#cka-status button.cancel")
    page.wait_for_selector("#cka-status .cancelled")
    assert page.inner_text("#cka-status") == "Cancelled."
    assert page.evaluate("() => document.getElementById('cka-plot').data") is None


# ------------------------------------------------------------------------------- issue 25: papercuts
def plot_layout(page, div_id: str) -> dict:
    page.wait_for_function(f"() => document.getElementById({div_id!r})?.data?.length > 0")
    return page.evaluate(f"() => JSON.parse(JSON.stringify(document.getElementById({div_id!r}).layout))")


def generalized_diagonal(n1: int, n2: int) -> list[tuple[int, int]]:
    """METHODS.md: cells (i, j) with j <= i <= j + n1 - n2 (n1 >= n2, else transposed)."""
    if n1 >= n2:
        return [(i, j) for i in range(n1) for j in range(n2) if j <= i <= j + n1 - n2]
    return [(i, j) for i in range(n1) for j in range(n2) if i <= j <= i + n2 - n1]


def edges(xs: list[int]) -> list[float]:
    mid = [(a + b) / 2 for a, b in zip(xs, xs[1:])]
    return [xs[0] - (mid[0] - xs[0]), *mid, xs[-1] + (xs[-1] - mid[-1])]


def test_compare_draws_the_band_keeps_values_readable_and_offers_per_dataset_values(page, server):
    page.goto(f"{server.base}/#compare?a={MODEL_A}&b={MODEL_B}&k=5&debiased=1")
    traces = plot_data(page, "affinity-plot")
    layout = plot_layout(page, "affinity-plot")
    aff = server.data(f"""{{ affinityMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", k: 5) {{ layersA layersB
        diagonal {{ nOn }} }} }}""")["affinityMatrix"]
    band = generalized_diagonal(len(aff["layersA"]), len(aff["layersB"]))  # 3 x 4: transposed, 6 cells
    assert len(band) == aff["diagonal"]["nOn"] == 6
    ex, ey = edges(aff["layersB"]), edges(aff["layersA"])
    rects = sorted((s["x0"], s["x1"], s["y0"], s["y1"]) for s in layout["shapes"])
    assert rects == sorted((ex[j], ex[j + 1], ey[i], ey[i + 1]) for i, j in band)
    argmax = traces[1]
    assert argmax["marker"]["symbol"] == "square-open"  # an outline: the value on the cell stays visible
    assert traces[0]["texttemplate"] == "%{z:.2f}"
    # the pooled answer warns about mixed datasets and offers the per-dataset values
    page.wait_for_selector("#cka-side button.by-dataset")
    assert "ask byDataset" not in page.inner_text("#cka-side")
    page.click("#cka-side button.by-dataset")
    page.wait_for_selector("#cka-by-dataset")
    page.wait_for_selector("#affinity-by-dataset")
    api = server.data(f"""{{ ckaMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", byDataset: true) {{
        layersA layersB byDataset {{ dataset n values }} }} }}""")["ckaMatrix"]
    want = []
    for d in api["byDataset"]:
        v = d["values"]
        i, j = max(((i, j) for i in range(len(v)) for j in range(len(v[0]))), key=lambda c: v[c[0]][c[1]])
        want.append([d["dataset"], str(d["n"]), f"{fmt(v[i][j])} at {api['layersA'][i]} × {api['layersB'][j]}"])
    assert table_rows(page, "cka-by-dataset") == want
    assert [r[0] for r in want] == ["general", "moods"] and "byDataset=1" in page.url


def test_transfer_log_axis_is_ticked_at_the_ranks(page, server):
    page.goto(f"{server.base}/#transfer?mode=bridge&source={MODEL_A}&sl=-1&target={MODEL_B}&tl=-1&ranks=1,2,4,16")
    layout = plot_layout(page, "transfer-plot")
    assert layout["xaxis"]["type"] == "log"
    assert layout["xaxis"]["tickvals"] == [1, 2, 4, 16] and layout["xaxis"]["ticktext"] == ["1", "2", "4", "16"]
    assert layout["xaxis"]["title"]["text"] == "rank (log scale)"
    page.goto(f"{server.base}/#transfer?mode=bridge&source={MODEL_A}&sl=-1&target={MODEL_B}&tl=-1&ranks=2,8")
    page.wait_for_function("() => document.getElementById('transfer-plot')?.layout?.xaxis?.type === 'linear'")
    assert plot_layout(page, "transfer-plot")["xaxis"]["title"]["text"] == "rank"


def test_neighbour_scores_are_drawn_on_their_own_range(page, server):
    page.goto(f"{server.base}/#neighbors?model={MODEL_A}&layer=2&k=5&from=moods&prompt=3")
    bars = plot_data(page, "neighbors-plot")[0]
    lo, hi = min(bars["y"]), max(bars["y"])
    pad = max((hi - lo) * 0.15, abs(hi) * 1e-4, 1e-6)
    layout = plot_layout(page, "neighbors-plot")
    assert layout["yaxis"]["range"] == pytest.approx([lo - pad, hi + pad])
    assert f"axis from {lo - pad:.3f}, not 0" in layout["title"]["text"]


def _fake_api(page, answers: dict[str, dict], seen: list[dict]) -> None:
    """Answer GraphQL operations whose text contains a key of ``answers`` with its data; the rest
    go to the server. Every request body is appended to ``seen``."""
    import json

    def handle(route):
        body = json.loads(route.request.post_data or "{}")
        seen.append(body)
        for marker, data in answers.items():
            if marker in body.get("query", ""):
                return route.fulfill(
                    status=200,
                    content_type="application/json",
                    body=json.dumps({"data": data() if callable(data) else data}),
                )
        return route.continue_()

    page.route(re.compile(r".*/graphql$"), handle)


def test_catalog_and_sae_views_name_sae_add(page, server):
    seen: list[dict] = []
    real = server.data(
        "{ models { key source architecture nLayers dModel dtype token layers datasets promptCount } "
        "datasets { name promptCount hasLabels } }"
    )
    _fake_api(page, {"saes {": {**real, "saes": []}}, seen)
    page.goto(f"{server.base}/#catalog")
    page.wait_for_selector("#datasets-table")
    notes = page.inner_text("#view-catalog")
    assert "(registerSae mutation or `actstore sae add`)" in notes and "sae register" not in notes
    page.goto(f"{server.base}/#sae")
    page.wait_for_selector("#view-sae .note")
    assert page.inner_text("#view-sae .note") == "No SAEs registered (registerSae mutation or `actstore sae add`)."


def test_ingest_jobs_loading_state_no_stray_null_and_key_and_token_site(page, server):
    seen: list[dict] = []
    polls = iter(
        [{"state": "RUNNING", "done": 0, "total": 0}, {"state": "RUNNING", "done": 4, "total": 12}]
        + [{"state": "SUCCEEDED", "done": 12, "total": 12}] * 1000
    )
    job = lambda: {"job": {"id": "j1", "message": None, **next(polls)}}  # noqa: E731
    _fake_api(
        page,
        {
            "query Job(": job,
            "mutation Ingest(": {"ingest": {"id": "j1", "state": "QUEUED", "done": 0, "total": 0, "message": None}},
        },
        seen,
    )
    page.goto(f"{server.base}/#jobs")
    page.fill("input[name=model]", "/models/some-model")
    page.select_option("select[name=dataset]", "extra")
    page.fill("input[name=token]", TOKEN)
    page.click("text=Start ingest")
    page.wait_for_function("() => document.getElementById('job-state')?.innerText === 'SUCCEEDED'")
    bodies = [b for b in seen if "mutation Ingest(" in b["query"]]
    assert bodies[0]["variables"] == {"model": "/models/some-model", "dataset": "extra", "layers": None}
    assert "key:" not in bodies[0]["query"] and "token:" not in bodies[0]["query"]
    # the first answers: total 0 while the model loads, then counted; at the end no stray "null"
    assert page.inner_text("#job-count").strip() == "12 / 12"
    assert "null" not in page.inner_text("#job-out")
    # a key and a token site are sent when set
    page.fill("input[name=key]", "some-model-mean")
    page.select_option("select[name=site]", "mean")
    page.click("text=Start ingest")
    page.wait_for_function("() => document.getElementById('job-state')?.innerText === 'SUCCEEDED'")
    body = [b for b in seen if "mutation Ingest(" in b["query"]][1]
    assert body["variables"] == {
        "model": "/models/some-model",
        "dataset": "extra",
        "layers": None,
        "key": "some-model-mean",
        "site": "mean",
    }
    assert "key: $key" in body["query"] and "token: $site" in body["query"]


def test_ingest_job_shows_loading_instead_of_zero_of_zero(page, server):
    seen: list[dict] = []
    _fake_api(
        page, {"query Job(": {"job": {"id": "j2", "state": "RUNNING", "done": 0, "total": 0, "message": None}}}, seen
    )
    page.goto(f"{server.base}/#jobs?id=j2")
    page.wait_for_selector("#job-count")
    assert page.inner_text("#job-count").strip() == "loading the model…"
    assert page.evaluate("() => document.getElementById('job-progress').position") == -1  # indeterminate
    assert "0 / 0" not in page.inner_text("#job-out") and "null" not in page.inner_text("#job-out")


def test_compare_with_other_registered_measures_draws_the_similarity_matrix(page, server):
    page.goto(
        f"{server.base}/#compare?a={MODEL_A}&b={MODEL_B}&k=4&ckaMeasure=cknna&affinityMeasure=lcs_knn&permutations=20"
    )
    left = plot_data(page, "cka-plot")
    right = plot_data(page, "affinity-plot")
    api = server.data(f"""{{
      left: similarityMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", measure: "cknna", k: 4) {{
        layersA layersB values argmax }}
      right: similarityMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", measure: "lcs_knn", k: 4) {{ values argmax }}
      measures {{ name direction sensitiveTo }}
    }}""")
    assert left[0]["z"] == api["left"]["values"] and right[0]["z"] == api["right"]["values"]
    assert left[0]["x"] == api["left"]["layersB"] and left[0]["y"] == api["left"]["layersA"]
    assert left[1]["x"] == [api["left"]["layersB"][j] for j in api["left"]["argmax"]]
    # every registered measure is offered, titled with what it is sensitive to
    options = page.evaluate("() => [...document.querySelectorAll('#ckaMeasure option')].map(o => [o.value, o.title])")
    assert options[1:] == [[m["name"], f"{m['direction']}: sensitive to {m['sensitiveTo']}"] for m in api["measures"]]
    cknna = next(m for m in api["measures"] if m["name"] == "cknna")
    assert page.inner_text("#cka-measure-help") == f"cknna (similarity) is sensitive to {cknna['sensitiveTo']}."
    assert terms(page, "#cka-side")["measure"] == "cknna"
    assert "ckaMeasure=cknna" in page.url

    # a clicked cell runs that measure's permutation test
    page.evaluate(
        "() => document.getElementById('cka-plot').emit('plotly_click', "
        "{points: [{curveNumber: 0, pointIndex: [1, 2]}]})"
    )
    page.wait_for_selector("#cka-cell dl")
    cell = server.data(f"""{{ similarity(a: {{model: "{MODEL_A}", layer: {api["left"]["layersA"][1]}}},
                               b: {{model: "{MODEL_B}", layer: {api["left"]["layersB"][2]}}}, measure: "cknna", k: 4,
                               permutations: 20) {{ value pValue }} }}""")["similarity"]
    side = terms(page, "#cka-cell")
    assert side["cknna"] == fmt(cell["value"]) and side["permutation p"] == fmt(cell["pValue"])


# ------------------------------------------------------------------------------- atlas
ATLAS_FIELDS = """models k n resize meanResized pairs { modelA modelB depthsA values argmaxDepths maxValue
                  diagonal { onDiagonalMean offDiagonalMean pValue } }"""


def test_atlas_draws_every_chart_with_the_api_values_and_a_click_opens_compare(page, server):
    page.goto(f"{server.base}/#atlas?models={MODEL_A},{MODEL_B}&dataset=moods&k=5&resize=4")
    small = plot_data(page, "atlas-pair-0")[0]
    argmax = plot_data(page, "atlas-argmax")
    rowmax = plot_data(page, "atlas-rowmax")
    mean = plot_data(page, "atlas-mean")[0]
    onoff = plot_data(page, "atlas-onoff")[0]
    api = server.data(
        f'{{ atlas(models: ["{MODEL_A}", "{MODEL_B}"], dataset: "moods", k: 5, resize: 4) {{ {ATLAS_FIELDS} }} }}'
    )["atlas"]
    (pair,) = api["pairs"]
    assert small["type"] == "heatmap" and small["z"] == pair["values"]
    assert argmax[0]["x"] == pair["depthsA"] and argmax[0]["y"] == pair["argmaxDepths"]
    assert argmax[0]["name"] == f"{MODEL_A} × {MODEL_B}" and argmax[1]["x"] == [0, 1]  # the dashed diagonal
    assert rowmax[0]["y"] == [max(row) for row in pair["values"]]
    assert mean["z"] == api["meanResized"] and mean["x"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    d = pair["diagonal"]
    assert onoff["x"] == [d["offDiagonalMean"]] and onoff["y"] == [d["onDiagonalMean"]]
    assert onoff["text"] == [f"{MODEL_A} × {MODEL_B}"]
    assert table_rows(page, "atlas-table")[0][:5] == [
        MODEL_A,
        MODEL_B,
        fmt(pair["maxValue"]),
        fmt(d["onDiagonalMean"]),
        fmt(d["offDiagonalMean"]),
    ]
    assert "models=tiny-llama%2Ctiny-gpt2" in page.url or "models=tiny-llama,tiny-gpt2" in page.url
    # a click on the pair's point opens the affinity (Compare) view for it, same dataset and k
    page.evaluate(
        "() => document.getElementById('atlas-onoff').emit('plotly_click', {points: [{curveNumber: 0, pointIndex: 0}]})"
    )
    aff = plot_data(page, "affinity-plot")[0]
    assert "#compare" in page.url and "k=5" in page.url and "dataset=moods" in page.url
    expected = server.data(
        f'{{ affinityMatrix(modelA: "{MODEL_A}", modelB: "{MODEL_B}", k: 5, dataset: "moods") {{ values }} }}'
    )["affinityMatrix"]
    assert aff["z"] == expected["values"]


def test_atlas_refused_over_budget_runs_as_a_job_then_asks_again(page, server):
    """The first atlas query is answered LIMIT_EXCEEDED (as the server does over its budget):
    the view offers runAtlas, runs it with the token, follows the job and asks again."""
    import json

    asked: list[str] = []

    def handle(route):
        body = json.loads(route.request.post_data or "{}")
        query = body.get("query", "")
        if "atlas(" in query:
            asked.append("atlas")
            if len(asked) == 1:
                return route.fulfill(
                    status=200,
                    content_type="application/json",
                    body=json.dumps(
                        {
                            "data": None,
                            "errors": [
                                {
                                    "message": "atlas of 2 models is over the budget; run it as a job with "
                                    "the run_atlas mutation (the same arguments), then ask this query again",
                                    "extensions": {"code": "LIMIT_EXCEEDED"},
                                }
                            ],
                        }
                    ),
                )
        elif "runAtlas(" in query:
            asked.append("runAtlas")
        return route.continue_()

    page.route(re.compile(r".*/graphql$"), handle)
    page.goto(f"{server.base}/#atlas?models={MODEL_B},{MODEL_A}&k=3&resize=3")
    page.wait_for_selector("#atlas-run-job")
    assert "LIMIT_EXCEEDED" not in page.inner_text("#atlas-status") and "run_atlas" in page.inner_text("#atlas-status")
    page.fill("input[name=token]", TOKEN)
    page.click("#atlas-run-job")
    small = plot_data(page, "atlas-pair-0")[0]
    assert asked == ["atlas", "runAtlas", "atlas"]
    assert page.inner_text("#atlas-job-state") == "SUCCEEDED"
    api = server.data(f'{{ atlas(models: ["{MODEL_B}", "{MODEL_A}"], k: 3, resize: 3) {{ {ATLAS_FIELDS} }} }}')["atlas"]
    assert small["z"] == api["pairs"][0]["values"]


def test_atlas_names_are_escaped_in_plotly(page, server):
    real = server.data(
        f'{{ atlas(models: ["{MODEL_A}", "{MODEL_B}"], k: 4, resize: 3) '
        "{ models measure direction k n resize meanResized maxSimilarity warning datasets { name n } "
        "pairs { modelA modelB layersA layersB depthsA depthsB values argmax argmaxDepths maxValue "
        "diagonal { onDiagonalMean offDiagonalMean tStatistic pValue } } } }"
    )["atlas"]
    real["pairs"][0]["modelA"] = "<a href='x'>evil</a><br>"
    _fake_api(page, {"atlas(": {"atlas": real}}, [])
    page.goto(f"{server.base}/#atlas?models={MODEL_A},{MODEL_B}&k=4&resize=3")
    small = plot_data(page, "atlas-pair-0")[0]
    escaped = "&lt;a href='x'&gt;evil&lt;/a&gt;&lt;br&gt; × tiny-gpt2"
    assert small["name"] == escaped and plot_layout(page, "atlas-pair-0")["title"]["text"] == escaped
    assert plot_data(page, "atlas-onoff")[0]["text"] == [escaped]
    assert plot_data(page, "atlas-argmax")[0]["name"] == escaped
    assert page.evaluate("() => document.querySelectorAll('#atlas-out a[href=\"x\"]').length") == 0

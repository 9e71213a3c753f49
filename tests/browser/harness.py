"""A tiny store, a real ``actstore serve`` under uvicorn on 127.0.0.1 and headless Chromium,
for the browser tests (tests/browser/test_browser.py) and the README's screenshots
(docs/screenshots.py).

The store: two tiny random models (llama, 3 layers and gpt2, 4 layers, d_model 32; built
offline by :mod:`tests.tiny_models`) ingested over 48 labelled prompts ("moods") and 30
unlabelled ones ("general", the bridge set of probe transfer), a third dataset ("extra",
12 prompts, not ingested: the ingest-job test uses it) and one registered
random ReLU SAE per model on its last layer.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium opens connections of its own, which this
# closed network refuses (and the tests assert that the page asks no host but the server).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-token"
MODEL_A, MODEL_B = "tiny-llama", "tiny-gpt2"
D_SAE = 64


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


def mood_texts() -> tuple[list[str], list[int]]:
    """48 short sentences, label 1 = pleased, 0 = annoyed (alternating)."""
    things = [
        "the soup",
        "my train",
        "the concert",
        "our garden",
        "the new phone",
        "this book",
        "the weather",
        "her painting",
        "the hotel",
        "his speech",
        "the museum",
        "the bus ride",
    ]
    good = ["was lovely", "made me smile", "felt wonderful", "was a delight"]
    bad = ["was awful", "made me angry", "felt dreadful", "was a mess"]
    texts, labels = [], []
    for i in range(48):
        label = i % 2
        words = good if label else bad
        texts.append(f"{things[i % len(things)]} {words[(i // 2) % len(words)]} today {i}")
        labels.append(label)
    return texts, labels


def _write_sae(folder: Path, d_in: int, hook_layer: int, seed: int) -> Path:
    """A random ReLU SAE in SAELens' flat layout (cfg.json + sae_weights.safetensors)."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": D_SAE,
        "hook_point": f"blocks.{hook_layer}.hook_resid_post",
        "hook_layer": hook_layer,
        "activation_fn_str": "relu",
        "activation_fn_kwargs": {},
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "model_name": "tiny",
        "dtype": "float32",
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    tensors = {
        "W_enc": rng.standard_normal((d_in, D_SAE)),
        "W_dec": rng.standard_normal((D_SAE, d_in)),
        "b_enc": 0.1 * rng.standard_normal(D_SAE),
        "b_dec": np.zeros(d_in),
    }
    save_file(
        {k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()}, str(folder / "sae_weights.safetensors")
    )
    return folder


def build_store(root: Path) -> tuple[str, dict[str, Path]]:
    """The tiny store under ``root``; returns its URI and the model folders by key."""
    from actstore import Store
    from actstore.ingest.pipeline import ingest
    from tests.tiny_models import tiny_model_dir

    store = Store.open(root / "db")
    texts, labels = mood_texts()
    store.add_prompts("moods", texts, labels=labels)
    store.add_prompts(
        "general",
        [
            f"a general sentence about {w} number {i}"
            for i, w in enumerate(["rivers", "maps", "clocks", "songs", "trees", "ships"] * 5)
        ],
    )
    store.add_prompts("extra", [f"an extra sentence number {i}" for i in range(12)])
    folders = {MODEL_A: tiny_model_dir("llama", n_layers=3), MODEL_B: tiny_model_dir("gpt2", n_layers=4)}
    for key, path in folders.items():
        for dataset in ("moods", "general"):
            ingest(store, str(path), dataset, key=key, dtype="float32", batch_size=48)
    for seed, key in enumerate(folders):
        n_layers = store.models.get(key).n_layers
        store.saes.register(key, -1, _write_sae(root / f"sae-{key}", 32, n_layers - 1, seed))
    return store.uri, folders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``actstore serve`` on a free loopback port (a subprocess; ``stop()`` ends it)."""

    def __init__(self, store_uri: str) -> None:
        port = free_port()
        env = dict(os.environ, ACTSTORE_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actstore.cli",
                "serve",
                "--store",
                store_uri,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
        self.stop()
        raise RuntimeError("server did not answer /healthz within 60 s")

    def query(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        """The API's JSON answer ({"data", "errors"?}) to one operation."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.post(
            f"{self.base}/graphql", json={"query": query, "variables": variables or {}}, headers=headers, timeout=60
        )
        assert r.status_code == 200, r.text
        return r.json()

    def data(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        body = self.query(query, variables, token)
        assert "errors" not in body, body["errors"]
        return body["data"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def launch(playwright):
    """Headless Debian Chromium through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)

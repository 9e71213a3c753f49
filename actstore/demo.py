"""``actstore demo``: build a small store and serve it, online or offline.

With a network it ingests small real models from the Hugging Face hub (Pythia-70m,
Pythia-160m and GPT-2) over a few hundred prompts. Without one it says so and builds three
tiny random models (Llama, GPT-2 and GPT-NeoX architectures, with a tokenizer trained
locally) instead, so every query works the same way, on meaningless weights. The prompt set
is generated here: short labelled sentences (sentiment 0/1) about a few topics.
"""

from __future__ import annotations

import itertools
import random
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from actstore.config import Settings
from actstore.store import Store

ONLINE_MODELS = {"pythia-70m": "EleutherAI/pythia-70m", "pythia-160m": "EleutherAI/pythia-160m", "gpt2": "gpt2"}
OFFLINE_MODELS = {"tiny-llama": ("llama", 6, 64), "tiny-gpt2": ("gpt2", 4, 48), "tiny-neox": ("gpt_neox", 8, 64)}
DATASET = "demo-sentiment"

_TOPICS = ["film", "book", "restaurant", "phone", "hotel", "concert", "game", "lecture", "museum", "train ride"]
_POSITIVE = ["wonderful", "delightful", "brilliant", "moving", "excellent", "charming", "superb", "memorable"]
_NEGATIVE = ["dreadful", "boring", "disappointing", "awful", "tedious", "clumsy", "forgettable", "miserable"]
_FRAMES = [
    "The {topic} was {adj}.",
    "I thought the {topic} was {adj} from start to finish.",
    "Honestly, the {topic} was nothing but {adj}.",
    "My friends said the {topic} felt {adj}, and I agree.",
]


def demo_prompts(n: int = 320, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` distinct short sentences with a sentiment label (1 positive, 0 negative)."""
    rows = [
        (frame.format(topic=topic, adj=adj), label)
        for frame, topic, (adjs, label) in itertools.product(_FRAMES, _TOPICS, [(_POSITIVE, 1), (_NEGATIVE, 0)])
        for adj in adjs
    ]
    random.Random(seed).shuffle(rows)
    rows = rows[:n]
    return [t for t, _ in rows], [l for _, l in rows]


def local_store_path(store_uri: str) -> str:
    """The absolute path of a local store URI; an object-store URI unchanged."""
    return store_uri if "://" in store_uri else str(Path(store_uri).expanduser().resolve())


def build_demo_store(store_uri: str, *, online: bool | None = None, n_prompts: int = 320,
                     on_progress: Callable[[str, int, int], None] | None = None,
                     settings: Settings | None = None) -> list[str]:
    """Fill ``store_uri`` with the demo models and prompts; return the model keys.

    Models already stored are skipped, so running the demo again starts serving at once.
    ``on_progress(model_key, done, total)`` reports each model's ingest.
    """
    from actstore.ingest.pipeline import ingest
    from actstore.ingest.runner import hub_reachable

    settings = settings if settings is not None else Settings()
    store = Store.open(store_uri, create=True, settings=settings)
    online = hub_reachable(settings) if online is None else online
    texts, labels = demo_prompts(n_prompts)
    store.add_prompts(DATASET, texts, labels)
    have = {m.key for m in store.models.list()}
    if online:
        print(f"demo: the Hugging Face hub is reachable; ingesting {', '.join(ONLINE_MODELS.values())}")
        sources = dict(ONLINE_MODELS)
    else:
        print("demo: no network (or HF_HUB_OFFLINE set): using tiny random models of three families "
              "(llama, gpt2, gpt_neox) built here; the numbers are real computations on random weights")
        from actstore.ingest.tiny import build_tiny_model

        folder = Path(store.uri) / "_demo_models" if "://" not in store.uri else Path.cwd() / "demo-models"
        sources = {}
        for key, (family, layers, hidden) in OFFLINE_MODELS.items():
            path = folder / key
            if key not in have and not (path / "config.json").exists():
                build_tiny_model(family, path, n_layers=layers, hidden=hidden, seed=len(sources))
            sources[key] = str(path)
    for key, source in sources.items():
        if key in have:
            continue
        report = None if on_progress is None else (lambda done, total, key=key: on_progress(key, done, total))
        summary = ingest(store, source, DATASET, key=key, layers="all", batch_size=32, max_tokens=64,
                         dtype="float32", on_progress=report, settings=settings)
        print(f"demo: {key}: {summary.encoded} prompts x {len(summary.layers)} layers stored")
    return list(sources)


def example_queries(keys: list[str]) -> list[tuple[str, str]]:
    """Three example GraphQL queries over the demo models: (title, query)."""
    a, b = keys[0], keys[1]
    return [
        ("Nearest neighbours of prompt 0 at the middle layer of " + a,
         f'{{ nearestNeighbors(at: {{model: "{a}", depth: 0.5}}, promptId: "0", k: 5) {{ rank promptId score text }} }}'),
        (f"Debiased CKA matrix of {a} against {b} on a 4-layer relative-depth grid",
         f'{{ ckaMatrix(modelA: "{a}", modelB: "{b}", grid: 4) {{ layersA layersB values argmax plotUrl }} }}'),
        (f"Mutual k-NN affinity matrix of {a} and {b}, with the generalized-diagonal test",
         f'{{ affinityMatrix(modelA: "{a}", modelB: "{b}", k: 10) {{ layersA layersB nullMean '
         f'diagonal {{ onDiagonalMean offDiagonalMean tStatistic pValue }} plotUrl }} }}'),
    ]


def run_demo(store_uri: str, host: str = "127.0.0.1", port: int = 8000, online: bool | None = None,
             serve: bool = True, on_progress: Callable[[str, int, int], None] | None = None,
             settings: Settings | None = None) -> None:
    """Build the demo store, print where it is, how to query it and how to use it from the
    command line, and serve the API (blocks) unless ``serve`` is false."""
    settings = settings if settings is not None else Settings()
    where = local_store_path(store_uri)
    keys = build_demo_store(where, online=online, on_progress=on_progress, settings=settings)
    url = f"http://{host}:{port}/graphql"
    flag = f"--store {shlex.quote(where)}"
    print(f"\nactstore demo: store at {where}")
    print(f"Use it from the command line with {flag}, e.g.\n"
          f"  actstore info {flag}\n"
          f"  actstore query '{{ models {{ key nLayers }} }}' {flag}\n"
          f"  actstore serve {flag}\n")
    print(f"GraphiQL at {url}\n" if serve else "Example queries (GraphiQL once served):\n")
    for title, query in example_queries(keys):
        print(f"# {title}\n{query}\n")
    if serve:
        print(f"From a shell:  curl -s {url} -H 'content-type: application/json' "
              f"-d '{{\"query\": \"{{ models {{ key nLayers dModel promptCount }} }}\"}}'\n", flush=True)
        serve_demo(where, host=host, port=port, settings=settings)


def serve_demo(store_uri: str, host: str = "127.0.0.1", port: int = 8000,
               settings: Settings | None = None) -> None:
    """Serve the GraphQL API over the demo store (blocks)."""
    import uvicorn

    from actstore.api import create_app

    sys.stdout.flush()
    uvicorn.run(create_app(store_uri, settings, host=host), host=host, port=port, log_level="warning")

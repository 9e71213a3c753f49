"""Every setting of actstore in one :class:`Settings` object, read from the environment here
and nowhere else.

=============================  =========================================  ==================
variable                       meaning                                    default
=============================  =========================================  ==================
``ACTSTORE_STORE``             store URI (local folder or object store)   ``./actstore-data``
``ACTSTORE_TOKEN``             bearer token mutations require             unset: refused
``ACTSTORE_SAE_ROOT``          the only folder SAEs may come from (API)   unset
``ACTSTORE_MAX_K``             largest k of a k-NN query                  1000
``ACTSTORE_MAX_PERMUTATIONS``  largest permutation count of a test        10000
``ACTSTORE_REQUEST_TIMEOUT``   seconds one GraphQL request may run        600
``ACTSTORE_MAX_DEPTH``         largest GraphQL query depth                10
``ACTSTORE_CACHE_MB``          in-memory layer cache of the service       4096
``ACTSTORE_ANN_THRESHOLD``     rows from which k-NN is approximate        50000
``ACTSTORE_ANN_RECALL``        recall@10 an approximate index is tuned    0.98
                               to at build time (measured on held-out
                               stored rows; see actstore.store.knn.tuning)
``ACTSTORE_ANN_LATENCY_MS``    single-query latency the tuned search      5.0
                               must keep; else that table is searched
                               exactly
``ACTSTORE_VERSION_CHECK_S``   seconds between table-version checks of    1.0
                               the nearestNeighbors path (writes through
                               this process are seen at once; 0: check
                               on every request)
``ACTSTORE_MAX_COST``          largest estimated cost of one heavy query  1e13
                               (floating-point operations; about 7
                               minutes on 2 CPU cores, see
                               actstore.service.work)
``ACTSTORE_CHEAP_COST``        estimated cost below which a query runs    1e9
                               at once, without a heavy-work slot
``ACTSTORE_MAX_LAYERS``        longest layersA / layersB / SAE list       64
``ACTSTORE_MAX_LIST``          largest ``limit`` of a list field          10000
                               (prompts, topPairs; page with offset)
``ACTSTORE_HEAVY_SLOTS``       heavy computations running at once         2
``ACTSTORE_HEAVY_QUEUE``       heavy computations waiting for a slot      8
                               (more are refused, naming the queue)
``ACTSTORE_GRAPH_CACHE_MB``    in-memory k-NN graph cache                 512
``ACTSTORE_SAE_CACHE_MB``      in-memory SAE feature-activation cache     1024
``ACTSTORE_MAX_BODY_BYTES``    largest HTTP request body (bytes; checked  4194304
                               before the body is read; larger: 413)
``ACTSTORE_MAX_DOCUMENT``      longest GraphQL document (characters;      262144
                               pass large values as variables)
``ACTSTORE_MAX_TOKENS``        most lexical tokens in a GraphQL document  20000
                               (the parser stops there)
``ACTSTORE_MAX_FIELDS``        most fields of a document, aliases counted 1000
                               and fragments expanded
``ACTSTORE_PARSE_CACHE_MB``    parsed and validated documents kept        64
``ACTSTORE_ALLOWED_HOSTS``     Host names the server answers besides      unset
                               loopback and the address it is bound to
                               (comma-separated; ``*`` for any)
``ACTSTORE_CORS_ORIGINS``      other origins whose pages may query the    unset: none
                               server (comma-separated, e.g.
                               ``http://localhost:8888``; ``*`` for any)
``ACTSTORE_RESULTS_MAX_ROWS``  cached answers kept in the results table   10000
                               (the oldest beyond it are dropped)
``ACTSTORE_RESULTS_COMPACT``   results-table writes between compactions   100
``ACTSTORE_STORAGE_OPTIONS``   object-store options of the store: a JSON  unset
                               object of strings, e.g.
                               ``{"allow_http": "true"}``, passed to
                               Lance as given (else Lance reads the
                               usual ``AWS_*`` variables itself)
``ACTSTORE_INDEX_CACHE``       local folder caching the k-NN indices of   ``~/.cache/``
                               a store on object storage                  ``actstore/indexes``
``ACTSTORE_ENGINE``            where CKA matrices run: ``local``,         ``auto``
                               ``ray`` or ``auto`` (Ray when a cluster
                               is at hand and the layers to read exceed
                               ``ACTSTORE_RAY_MIN_MB``)
``ACTSTORE_RAY_ADDRESS``       Ray cluster to join (``auto``,             unset: the Ray
                               ``ray://host:10001``)                      of this process
``ACTSTORE_RAY_MIN_MB``        layers read by a CKA matrix (float32 MB)   8192
                               from which ``auto`` uses Ray
``ACTSTORE_VERIFY_READS``      check every activation row read against    unset: off
                               its checksum (a mismatch is refused,
                               naming table and prompt ids; ``verify``
                               always checks)
``HF_HUB_OFFLINE``             never contact the Hugging Face hub         unset: online
``HF_ENDPOINT``                the hub's address                          huggingface.co
=============================  =========================================  ==================

``ACTSTORE_MAX_SLOTS_PER_REQUEST`` (default 2): the heavy slots one GraphQL request may need
(a field estimated at ``ACTSTORE_CHEAP_COST`` or more needs one; its cheap fields together
one per ``ACTSTORE_CHEAP_COST`` of their sum); more is refused before any field runs (see
actstore.api.budget).

The hub-offline rule: the hub is offline when ``HF_HUB_OFFLINE`` is set to anything but
empty, ``0``, ``false``, ``no`` or ``off`` (any case).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from actstore.errors import InvalidInput

__all__ = ["DEFAULT_STORE", "ENGINES", "Settings", "comma_list", "storage_options_json"]

DEFAULT_STORE = "./actstore-data"


def comma_list(raw: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: the parser of list-valued settings."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_FALSE = ("", "0", "false", "no", "off")

ENGINES = ("local", "ray", "auto")


def storage_options_json(raw: str) -> dict[str, str]:
    """``'{"aws_endpoint": "http://...", "allow_http": true}'`` -> a dict of strings: the
    parser of ``ACTSTORE_STORAGE_OPTIONS`` (Lance takes every option value as a string)."""
    import json

    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}


def _engine(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ENGINES:
        raise ValueError(f"use one of {', '.join(ENGINES)}")
    return value


# setting name -> (environment variable, parser)
_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "store_uri": ("ACTSTORE_STORE", str),
    "token": ("ACTSTORE_TOKEN", str),
    "sae_root": ("ACTSTORE_SAE_ROOT", str),
    "max_k": ("ACTSTORE_MAX_K", int),
    "max_permutations": ("ACTSTORE_MAX_PERMUTATIONS", int),
    "request_timeout_s": ("ACTSTORE_REQUEST_TIMEOUT", float),
    "max_query_depth": ("ACTSTORE_MAX_DEPTH", int),
    "cache_mb": ("ACTSTORE_CACHE_MB", int),
    "ann_threshold": ("ACTSTORE_ANN_THRESHOLD", int),
    "ann_recall": ("ACTSTORE_ANN_RECALL", float),
    "ann_latency_ms": ("ACTSTORE_ANN_LATENCY_MS", float),
    "version_check_s": ("ACTSTORE_VERSION_CHECK_S", float),
    "max_cost": ("ACTSTORE_MAX_COST", float),
    "cheap_cost": ("ACTSTORE_CHEAP_COST", float),
    "max_layers": ("ACTSTORE_MAX_LAYERS", int),
    "max_atlas_models": ("ACTSTORE_MAX_ATLAS_MODELS", int),
    "max_list": ("ACTSTORE_MAX_LIST", int),
    "max_slots_per_request": ("ACTSTORE_MAX_SLOTS_PER_REQUEST", int),
    "heavy_slots": ("ACTSTORE_HEAVY_SLOTS", int),
    "heavy_queue": ("ACTSTORE_HEAVY_QUEUE", int),
    "graph_cache_mb": ("ACTSTORE_GRAPH_CACHE_MB", int),
    "sae_cache_mb": ("ACTSTORE_SAE_CACHE_MB", int),
    "max_body_bytes": ("ACTSTORE_MAX_BODY_BYTES", int),
    "max_document_chars": ("ACTSTORE_MAX_DOCUMENT", int),
    "max_tokens": ("ACTSTORE_MAX_TOKENS", int),
    "max_fields": ("ACTSTORE_MAX_FIELDS", int),
    "parse_cache_mb": ("ACTSTORE_PARSE_CACHE_MB", int),
    "allowed_hosts": ("ACTSTORE_ALLOWED_HOSTS", comma_list),
    "cors_origins": ("ACTSTORE_CORS_ORIGINS", comma_list),
    "results_max_rows": ("ACTSTORE_RESULTS_MAX_ROWS", int),
    "results_compact_every": ("ACTSTORE_RESULTS_COMPACT", int),
    "storage_options": ("ACTSTORE_STORAGE_OPTIONS", storage_options_json),
    "index_cache": ("ACTSTORE_INDEX_CACHE", str),
    "engine": ("ACTSTORE_ENGINE", _engine),
    "ray_address": ("ACTSTORE_RAY_ADDRESS", str),
    "ray_min_mb": ("ACTSTORE_RAY_MIN_MB", int),
    "hf_endpoint": ("HF_ENDPOINT", str),
}
# boolean settings: on unless empty, 0, false, no or off (any case)
_FLAGS: dict[str, str] = {"verify_reads": "ACTSTORE_VERIFY_READS"}


@dataclass(frozen=True, init=False)
class Settings:
    """Settings of one actstore process. ``Settings()`` is the defaults overridden by the
    environment; fields passed explicitly win over both (``Settings(token="t")``)."""

    store_uri: str = DEFAULT_STORE
    token: str | None = None
    sae_root: str | None = None
    max_k: int = 1000
    max_permutations: int = 10_000
    request_timeout_s: float = 600.0
    max_query_depth: int = 10
    cache_mb: int = 4096
    ann_threshold: int = 50_000
    ann_recall: float = 0.98
    ann_latency_ms: float = 5.0
    version_check_s: float = 1.0
    max_cost: float = 1e13
    cheap_cost: float = 1e9
    max_layers: int = 64
    max_atlas_models: int = 128
    max_list: int = 10_000
    max_slots_per_request: int = 2
    heavy_slots: int = 2
    heavy_queue: int = 8
    graph_cache_mb: int = 512
    sae_cache_mb: int = 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_document_chars: int = 262_144
    max_tokens: int = 20_000
    max_fields: int = 1000
    parse_cache_mb: int = 64
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    results_max_rows: int = 10_000
    results_compact_every: int = 100
    storage_options: Mapping[str, str] | None = None
    index_cache: str = "~/.cache/actstore/indexes"
    engine: str = "auto"
    ray_address: str | None = None
    ray_min_mb: int = 8192
    hub_offline: bool = False
    verify_reads: bool = False
    hf_endpoint: str = "https://huggingface.co"

    def __init__(self, *, environ: Mapping[str, str] | None = None, **explicit: object) -> None:
        """``environ``: the environment to read (default ``os.environ``; ``{}`` for none)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(explicit) - names)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values = {**_from_env(os.environ if environ is None else environ), **explicit}
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, values.get(f.name, f.default))

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (the environment is not read again)."""
        return Settings(environ={}, **{**dataclasses.asdict(self), **changes})


def _from_env(environ: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, (var, parse) in _ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            out[name] = parse(raw)
        except ValueError as exc:
            if parse in (storage_options_json, _engine):
                raise InvalidInput(f"{var}={raw!r} is invalid: {exc}") from None
            raise InvalidInput(f"{var}={raw!r} is not a valid {parse.__name__}") from None
    out["hub_offline"] = environ.get("HF_HUB_OFFLINE", "").strip().lower() not in _FALSE
    for name, var in _FLAGS.items():
        if var in environ:
            out[name] = environ[var].strip().lower() not in _FALSE
    return out

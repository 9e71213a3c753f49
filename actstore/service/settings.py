"""Settings of a running actstore: store URI, API token, SAE root and query limits.

Every setting comes from the environment unless passed explicitly:
``ACTSTORE_STORE`` (default ``./actstore-data``), ``ACTSTORE_TOKEN`` (bearer token for
mutations; unset refuses every mutation), ``ACTSTORE_SAE_ROOT``, ``ACTSTORE_MAX_K``,
``ACTSTORE_MAX_PERMUTATIONS``, ``ACTSTORE_REQUEST_TIMEOUT`` (seconds),
``ACTSTORE_MAX_DEPTH`` (GraphQL query depth), ``ACTSTORE_CACHE_MB`` (in-memory layer cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_STORE = "./actstore-data"


def default_store_uri() -> str:
    return os.environ.get("ACTSTORE_STORE") or DEFAULT_STORE


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class Settings:
    store_uri: str = field(default_factory=default_store_uri)
    token: str | None = field(default_factory=lambda: os.environ.get("ACTSTORE_TOKEN") or None)
    sae_root: str | None = field(default_factory=lambda: os.environ.get("ACTSTORE_SAE_ROOT") or None)
    max_k: int = field(default_factory=lambda: _env_int("ACTSTORE_MAX_K", 1000))
    max_permutations: int = field(default_factory=lambda: _env_int("ACTSTORE_MAX_PERMUTATIONS", 10_000))
    request_timeout_s: float = field(default_factory=lambda: _env_float("ACTSTORE_REQUEST_TIMEOUT", 600.0))
    max_query_depth: int = field(default_factory=lambda: _env_int("ACTSTORE_MAX_DEPTH", 10))
    cache_mb: int = field(default_factory=lambda: _env_int("ACTSTORE_CACHE_MB", 4096))

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
``HF_HUB_OFFLINE``             never contact the Hugging Face hub         unset: online
``HF_ENDPOINT``                the hub's address                          huggingface.co
=============================  =========================================  ==================

The hub-offline rule: the hub is offline when ``HF_HUB_OFFLINE`` is set to anything but
empty, ``0``, ``false``, ``no`` or ``off`` (any case).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from actstore.errors import InvalidInput

__all__ = ["DEFAULT_STORE", "Settings"]

DEFAULT_STORE = "./actstore-data"
_FALSE = ("", "0", "false", "no", "off")

# setting name -> (environment variable, parser)
_ENV: dict[str, tuple[str, type]] = {
    "store_uri": ("ACTSTORE_STORE", str),
    "token": ("ACTSTORE_TOKEN", str),
    "sae_root": ("ACTSTORE_SAE_ROOT", str),
    "max_k": ("ACTSTORE_MAX_K", int),
    "max_permutations": ("ACTSTORE_MAX_PERMUTATIONS", int),
    "request_timeout_s": ("ACTSTORE_REQUEST_TIMEOUT", float),
    "max_query_depth": ("ACTSTORE_MAX_DEPTH", int),
    "cache_mb": ("ACTSTORE_CACHE_MB", int),
    "ann_threshold": ("ACTSTORE_ANN_THRESHOLD", int),
    "hf_endpoint": ("HF_ENDPOINT", str),
}


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
    hub_offline: bool = False
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

    def replace(self, **changes: object) -> "Settings":
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
        except ValueError:
            raise InvalidInput(f"{var}={raw!r} is not a valid {parse.__name__}") from None
    out["hub_offline"] = environ.get("HF_HUB_OFFLINE", "").strip().lower() not in _FALSE
    return out

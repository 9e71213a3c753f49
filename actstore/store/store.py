"""The activation store: a facade over one LanceDB database and its repositories.

``Store.open(uri)`` builds :class:`~actstore.store.tables.Tables` and one repository per
table -- ``prompts``, ``models``, ``activations``, ``knn``, ``saes``, ``next_tokens``,
``results`` -- plus ``maintenance`` (drops and ``verify``), and keeps DESIGN.md's three
entry points (``add_prompts``, ``write_activations``, ``read_activations``) as one-line
delegations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actstore.config import Settings

from .activations import Activations
from .knn import Knn
from .maintenance import Maintenance
from .models import Models
from .next_tokens import NextTokens
from .prompts import Prompts
from .results import Results
from .saes import Saes
from .tables import Tables

__all__ = ["Store"]


def _index_cache(tables: Tables, settings: Settings) -> Path:
    """Local folder of the k-NN index files of a store on object storage: one sub-folder per
    store URI under ``settings.index_cache``. The files are keyed by table id and version
    (see :mod:`actstore.store.knn.exact`), so a cache shared by several machines or kept
    across runs never serves an index of another version."""
    import hashlib

    name = hashlib.sha256(tables.uri.encode()).hexdigest()[:16]
    return Path(settings.index_cache).expanduser() / name


class Store:
    """A LanceDB database of prompts and activations. Open with :meth:`Store.open`."""

    def __init__(self, tables: Tables, settings: Settings | None = None):
        settings = settings if settings is not None else Settings()
        self.tables = tables
        tables.version_check_s = float(settings.version_check_s)
        self.prompts = Prompts(tables)
        self.models = Models(tables)
        self.activations = Activations(tables, self.prompts, self.models, verify_reads=settings.verify_reads)
        persist = tables.local_path / "_faiss" if tables.local_path is not None else _index_cache(tables, settings)
        self.knn = Knn(
            self.activations,
            self.prompts,
            persist,
            settings.ann_threshold,
            settings.ann_recall,
            settings.ann_latency_ms,
        )
        self.saes = Saes(tables, self.models)
        self.next_tokens = NextTokens(tables, self.prompts, self.models)
        self.results = Results(tables, settings.results_max_rows, settings.results_compact_every)
        self.maintenance = Maintenance(tables, self.prompts, self.models, self.activations, self.knn, self.saes)

    @classmethod
    def open(
        cls,
        uri: str | Path,
        *,
        create: bool = True,
        settings: Settings | None = None,
        storage_options: Mapping[str, str] | None = None,
    ) -> Store:
        """Open the database at ``uri`` (local path or object-store URI such as
        ``s3://bucket/prefix``). ``create=True`` creates a missing local folder;
        ``create=False`` raises NotFound for it instead and creates nothing. ``settings``
        default: ``Settings()`` (the environment). ``storage_options``: Lance's object-store
        options (strings: ``aws_endpoint``, ``allow_http``, ``aws_region``, keys, ...),
        default ``settings.storage_options`` (``ACTSTORE_STORAGE_OPTIONS``)."""
        settings = settings if settings is not None else Settings()
        options = storage_options if storage_options is not None else settings.storage_options
        return cls(Tables(uri, create=create, storage_options=options), settings)

    @property
    def uri(self) -> str:
        return self.tables.uri

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def add_prompts(
        self,
        dataset: str,
        texts: Sequence[str],
        labels: Sequence[int | None] | None = None,
        meta: Sequence[Mapping[str, Any] | None] | None = None,
        split: str | Sequence[str | None] | None = None,
    ) -> list[int]:
        """Add prompts to ``dataset``; their ids, one per text (see :meth:`Prompts.add`)."""
        return self.prompts.add(dataset, texts, labels, meta, split)

    def write_activations(
        self,
        model_key: str,
        layer: int,
        prompt_ids: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        *,
        n_layers: int | None = None,
        source: str | None = None,
        architecture: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        """Upsert one layer's activations [n, d_model] of ``prompt_ids``; the rows written
        (see :meth:`Activations.write`)."""
        return self.activations.write(
            model_key,
            {layer: vectors},
            prompt_ids,
            n_layers=n_layers,
            source=source,
            architecture=architecture,
            dtype=dtype,
            revision=revision,
            fingerprint=fingerprint,
        )

    def read_activations(
        self,
        model_key: str,
        layer: int,
        dataset: str | None = None,
        prompt_ids: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [n], X float32 [n, d_model]) of one layer in ascending id order (see
        :meth:`Activations.read`)."""
        return self.activations.read(model_key, layer, dataset, prompt_ids)

"""The catalog: stored models, datasets and prompts, and adding prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actstore.errors import InvalidInput
from actstore.store import DatasetInfo, ModelInfo, PromptRecord, Store
from actstore.store.knn import LayerIndex

from .boundary import service_boundary

__all__ = ["Catalog", "ModelSummary", "check_list_limit"]


def check_list_limit(limit: object, max_list: int, name: str = "limit") -> None:
    """InvalidInput when ``limit`` (an int; other types are left to the callee) is over ``max_list``."""
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > max_list:
        raise InvalidInput(
            f"{name} = {limit:,} is over this server's largest list of {max_list:,} "
            f"(ACTSTORE_MAX_LIST): read more in pages of at most {max_list:,}, "
            "moving offset by the page size"
        )


@dataclass(frozen=True)
class ModelSummary:
    """A stored model with the datasets and the number of prompts it has at every stored layer."""

    info: ModelInfo
    datasets: list[str]
    prompt_count: int


@service_boundary
class Catalog:
    """What the store holds. ``model_infos`` / ``model_info`` read no activation table;
    summaries read the prompt ids of every stored layer (cached by table version)."""

    def __init__(self, store: Store, max_list: int = 10_000) -> None:
        self.store = store
        self.max_list = max_list

    def models(self) -> list[ModelSummary]:
        datasets = self.store.prompts.datasets()
        return [self._summary(m, datasets) for m in self.store.models.list()]

    def model_infos(self) -> list[ModelInfo]:
        """Every stored model without its prompt counts."""
        return self.store.models.list()

    def model_info(self, key: str) -> ModelInfo | None:
        """The model under ``key`` without prompt counts, or None (GraphQL's nullable ``model``)."""
        return self.store.models.find(key)

    def model_summary(self, key: str) -> ModelSummary:
        """Datasets and prompt count of one model (NotFound for an unknown key)."""
        return self._summary(self.store.models.get(key), self.store.prompts.datasets())

    def _summary(self, info: ModelInfo, datasets: list[DatasetInfo]) -> ModelSummary:
        ids = self.store.activations.model_ids(info.key) if info.layers else np.empty(0, np.int64)
        names = [
            d.name for d in datasets if len(np.intersect1d(ids, self.store.prompts.ids(d.name), assume_unique=True))
        ]
        return ModelSummary(info, names, len(ids))

    def layer_indexes(self, key: str) -> list[LayerIndex]:
        """How k-NN searches each stored layer of one model (kind, measured recall, exact or
        not; see :meth:`actstore.store.knn.Knn.layer_indexes`). NotFound for an unknown key."""
        info = self.store.models.get(key)
        return self.store.knn.layer_indexes(info.key, info.layers)

    def datasets(self) -> list[DatasetInfo]:
        return self.store.prompts.datasets()

    def dataset(self, name: str) -> DatasetInfo:
        return self.store.prompts.dataset(name)

    def prompts(self, dataset: str, offset: int = 0, limit: int = 100) -> list[PromptRecord]:
        """``limit`` prompts of ``dataset`` from ``offset`` (ascending id); InvalidInput for a
        limit over ``max_list`` (ACTSTORE_MAX_LIST): larger lists are read page by page."""
        check_list_limit(limit, self.max_list)
        return self.store.prompts.page(dataset, offset, limit)

    def add_prompts(self, dataset: str, texts: Sequence[str], labels: Sequence[int] | None = None) -> DatasetInfo:
        self.store.prompts.add(dataset, texts, labels)
        return self.store.prompts.dataset(dataset)

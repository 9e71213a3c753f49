"""GraphQL administration: the ``dropModel`` and ``dropDataset`` mutations (token required).

Root type ``AdminMutation`` is merged into Mutation by :mod:`actstore.api.app`. A drop that
fails half-way (the server killed, a full disk) leaves the rest of the store intact and is
finished by asking again (see :mod:`actstore.store.maintenance`).
"""

from __future__ import annotations

import strawberry

from actstore.service import DropSummary

from .context import Info, call, require_token

__all__ = ["AdminMutation", "Dropped"]


@strawberry.type(description="What a drop removed.")
class Dropped:
    kind: str = strawberry.field(description="model or dataset.")
    name: str = strawberry.field(description="The model key or dataset name dropped.")
    tables_dropped: int = strawberry.field(description="Activation and next-token tables removed.")
    rows_deleted: int = strawberry.field(
        description="Rows deleted: prompts and their activation and next-token rows (a dataset drop)."
    )
    saes_removed: int = strawberry.field(description="SAEs removed with their weights (a model drop).")
    index_files_removed: int = strawberry.field(description="Persisted FAISS index files removed.")

    @classmethod
    def of(cls, r: DropSummary) -> Dropped:
        return cls(
            kind=r.kind,
            name=r.name,
            tables_dropped=r.tables_dropped,
            rows_deleted=r.rows_deleted,
            saes_removed=r.saes_removed,
            index_files_removed=r.index_files_removed,
        )


@strawberry.type
class AdminMutation:
    @strawberry.mutation(
        description="Remove a model and everything of it: activation tables, next tokens, "
        "SAEs, FAISS indices, its catalog rows. Needs the token."
    )
    async def drop_model(self, info: Info, key: str) -> Dropped:
        require_token(info)
        return Dropped.of(await call(info, info.context.service.admin.drop_model, key))

    @strawberry.mutation(
        description="Remove a dataset: its prompts and their rows in every model's activation "
        "and next-token tables (the models stay). Needs the token."
    )
    async def drop_dataset(self, info: Info, name: str) -> Dropped:
        require_token(info)
        return Dropped.of(await call(info, info.context.service.admin.drop_dataset, name))

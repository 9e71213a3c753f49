"""Administration: dropping models and datasets, and checking the store (``admin`` part).

The deletions users need, so that nobody deletes table folders by hand (which used to leave
stale indices and cached answers behind). The work and its order (a drop that fails half-way
is finished by running it again) live in :class:`actstore.store.maintenance.Maintenance`;
this part adds the service's side: answers cached in memory for the dropped data are never
served again because every cache is keyed by table tokens that do not repeat.
"""

from __future__ import annotations

from actstore.store import Store
from actstore.store.maintenance import Check, DropSummary

from .boundary import service_boundary

__all__ = ["Admin"]


@service_boundary
class Admin:
    """Drops and checks over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def drop_model(self, key: str) -> DropSummary:
        """Remove model ``key`` and everything of it (activation tables, next tokens, SAEs,
        FAISS files, its catalog rows and its row). NotFound for an unknown model."""
        return self.store.maintenance.drop_model(key)

    def drop_dataset(self, name: str) -> DropSummary:
        """Remove dataset ``name``: its prompts and their rows in every model's activation and
        next-token tables (models stay registered). NotFound for an unknown dataset."""
        return self.store.maintenance.drop_dataset(name)

    def verify(self) -> list[Check]:
        """Every check of the store (see :meth:`actstore.store.maintenance.Maintenance.verify`)."""
        return self.store.maintenance.verify()

"""The service: one object that API resolvers, the CLI and Python users call, composed of
parts that each own their state.

=================  ==========================================================================
part               answers
=================  ==========================================================================
``catalog``        models, datasets, prompts; adding prompts
``similarity``     nearest neighbours, mutual k-NN, affinity matrices, CKA, CKA matrices
``measures``       every registered similarity measure: measures, similarity, similarity matrices
``bridges``        linear bridges, probe transfer, rank sweeps, next-token transfer
``saes``           the SAE registry, SAE feature correlation, SAE matrices
``results``        cached answers by key (plots are served from them)
``jobs``           ingests started in the background
``admin``          dropping models and datasets, checking the store
=================  ==========================================================================

Method names mirror the GraphQL fields in snake_case. Every method validates its inputs and
raises :mod:`actstore.errors` classes with a message naming the bad value and what is
allowed (analysis errors are translated at each part's boundary).

Caching, from the bottom up: whole layers in a bounded LRU keyed by (model, layer, table
version); k-NN graphs per (layer version, prompt set, k); finished heavy answers in the
store's ``results`` table keyed by the query and the versions of the tables it depends on;
identical heavy queries arriving together compute once. Heavy numerics are estimated before
they start and run in a few slots with a bounded queue, cancellable (see :mod:`.work`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from actstore.config import Settings
from actstore.store import Store

from .admin import Admin
from .answering import Answers
from .atlas import Atlas
from .bridges import Bridges
from .catalog import Catalog
from .encoders import TextEncoders
from .jobs import Jobs
from .measures import Measures
from .reads import Reads
from .requests import Request
from .results import ResultCache
from .saes import Saes
from .similarity import Similarity
from .work import Cost, Scheduler, run_cancellable

T = TypeVar("T")

__all__ = ["Service"]


class Service:
    """Queries over one store. Thread-safe: the API calls it from worker threads."""

    def __init__(self, store: Store | str | Path, settings: Settings | None = None) -> None:
        """``store``: an open store, or the URI of one (opened, and created if missing)."""
        self.settings = settings or Settings()
        self.store = store if isinstance(store, Store) else Store.open(str(store), settings=self.settings)
        s = self.settings
        self.scheduler = Scheduler(s.heavy_slots, s.heavy_queue, s.cheap_cost)
        reads = Reads(self.store, s.cache_mb << 20, s.graph_cache_mb << 20)
        self.reads = reads
        self.results = ResultCache(self.store, self.scheduler, s)
        self.encoders = TextEncoders()
        self.catalog = Catalog(self.store, s.max_list)
        self.similarity = Similarity(self.store, self.settings, reads, self.results, self.encoders)
        self.measures = Measures(self.store, self.settings, reads, self.results)
        self.bridges = Bridges(self.store, self.settings, reads, self.results)
        self.saes = Saes(self.store, self.settings, reads, self.results)
        self.atlas = Atlas(self.store, self.settings, reads, self.results)
        self.jobs = Jobs(self.store)
        self.admin = Admin(self.store)

    def __repr__(self) -> str:
        return f"Service({self.store!r})"

    def parts(self) -> tuple[Answers, ...]:
        """The parts that answer requests."""
        return (self.similarity, self.measures, self.bridges, self.saes, self.atlas)

    def answer(self, request: Request) -> Any:
        """The answer of any request (see :mod:`.requests`), by the part that answers its type."""
        for part in self.parts():
            if part.answers_type(type(request)):
                return part.answer(request)
        raise TypeError(f"no part of the service answers {type(request).__name__}")

    def estimate(self, request: Request) -> Cost:
        """The work answering ``request`` would start, before any of it runs: 0 flops when the
        answer is cached (its key opens no table), else the plan's cost estimate (a cheap plan
        without one counts 0). Raises what the request itself would (bad input, unknown model)."""
        for part in self.parts():
            if part.answers_type(type(request)):
                plan = part.plan(request)
                if request.cached and self.results.has(self.results.request_key(request, plan)):
                    return Cost(0.0, f"{request.op} (cached)")
                return plan.cost() if plan.cost is not None else Cost(0.0, request.op)
        raise TypeError(f"no part of the service answers {type(request).__name__}")

    def run_cancellable(self, stop: threading.Event, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in this thread; its long work stops (QueryTimeout) once
        ``stop`` is set. The API sets it when a request's time limit passes or its client leaves."""
        return run_cancellable(stop, fn, *args, **kwargs)

    def close(self) -> None:
        """Stop background jobs (queued ones are cancelled)."""
        self.jobs.shutdown()

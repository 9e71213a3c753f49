"""What every resolver gets: a typed :class:`Context` (the service, the request's bearer
token, the base URL for plot links and the worker pools) and :func:`call`, which runs service
work on a worker thread under the per-request time limit.

Light reads and heavy numerics use separate pools, so a queue of matrix computations can
never take every thread that nearest-neighbour look-ups need. The pools belong to the app's
lifespan (:func:`actstore.api.app.create_app`) or to one in-process execution.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import strawberry

from actstore.errors import QueryTimeout, Unauthorized
from actstore.service import Service

__all__ = ["Context", "Info", "Pools", "call", "require_token"]

T = TypeVar("T")


class Pools:
    """The worker threads of one app: 16 for light reads, 16 for heavy numerics. The service's
    scheduler (actstore.service.work) bounds heavy work (2 slots + 8 queued by default); the
    heavy threads outnumber them so a cheap query, which takes no slot, always finds a thread."""

    def __init__(self, light: int = 16, heavy: int = 16) -> None:
        self.light = ThreadPoolExecutor(max_workers=light, thread_name_prefix="actstore-light")
        self.heavy = ThreadPoolExecutor(max_workers=heavy, thread_name_prefix="actstore-heavy")

    def shutdown(self) -> None:
        self.light.shutdown(wait=False, cancel_futures=True)
        self.heavy.shutdown(wait=False, cancel_futures=True)


# how often a running request checks whether its client is still connected
DISCONNECT_POLL_S = 0.25


@dataclass
class Context:
    service: Service
    pools: Pools
    authorization: str | None = None
    base_url: str = "/"
    #: ``await client_gone()`` is True once the HTTP client has disconnected (None in-process)
    client_gone: Callable[[], Awaitable[bool]] | None = None
    #: the stop events of the computations this request started (see :meth:`stop_all`)
    stops: set[threading.Event] = field(default_factory=set)
    finished: bool = False

    def stop_all(self) -> None:
        """Stop every computation this request started and any it would start: called once
        the request is answered or refused, so no alias's work outlives its request (graphql-core
        answers a request whose non-null field failed while sibling fields still run)."""
        self.finished = True
        for stop in list(self.stops):
            stop.set()

    def plot_url(self, key: str) -> str:
        """Address of the PNG plot of a cached result."""
        return f"{self.base_url}plots/{key}.png"


Info = strawberry.Info[Context, None]


async def call(info: Info, fn: Callable[..., T], *args: Any, heavy: bool = False, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a worker thread, within the server's request time limit.

    When the limit passes or the request is cancelled (its client left), ``stop`` is set and
    the service's long work stops between batches (see :mod:`actstore.service.work`)."""
    ctx = info.context
    loop = asyncio.get_running_loop()
    if ctx.finished:
        raise QueryTimeout("the request was already answered or refused: this computation was not started")
    stop = threading.Event()
    ctx.stops.add(stop)
    fut = loop.run_in_executor(
        ctx.pools.heavy if heavy else ctx.pools.light, lambda: ctx.service.run_cancellable(stop, fn, *args, **kwargs)
    )
    timeout = ctx.service.settings.request_timeout_s
    watcher = asyncio.ensure_future(_stop_when_gone(ctx.client_gone, fut, stop)) if ctx.client_gone else None
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise QueryTimeout(
            f"the query ran past the server's time limit of {timeout:g} s and was stopped; ask for "
            "less (fewer prompts, permutations or layers)"
        ) from None
    finally:
        stop.set()
        ctx.stops.discard(stop)
        if watcher is not None:
            watcher.cancel()


async def _stop_when_gone(
    client_gone: Callable[[], Awaitable[bool]], fut: asyncio.Future, stop: threading.Event
) -> None:
    """Set ``stop`` as soon as the client has disconnected while ``fut`` still runs."""
    while not fut.done():
        await asyncio.sleep(DISCONNECT_POLL_S)
        if await client_gone():
            stop.set()
            return


def require_token(info: Info) -> None:
    """Refuse a mutation without the server's bearer token."""
    token = info.context.service.settings.token
    if not token:
        raise Unauthorized("mutations are disabled on this server: it has no ACTSTORE_TOKEN configured")
    scheme, _, value = (info.context.authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized("this mutation needs the header 'Authorization: Bearer TOKEN' with the server's token")

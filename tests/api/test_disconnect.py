"""Work whose HTTP client has gone is stopped: ``call()`` watches ``Context.client_gone`` and
sets the request's stop event, which the service's long work checks between batches."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from actstore.api.context import Context, Pools, call
from actstore.errors import QueryTimeout
from actstore.service import Service
from actstore.service.work import check_cancelled


def test_work_stops_soon_after_its_client_disconnects(tmp_path):
    service = Service(str(tmp_path / "db"))
    batches = []

    def long_work() -> str:  # 600 batches of 50 ms: 30 s unless stopped
        for i in range(600):
            check_cancelled(i, 600, "batches")
            batches.append(i)
            time.sleep(0.05)
        return "finished"

    left_at: list[float] = []

    async def client_gone() -> bool:
        if not left_at and len(batches) >= 5:
            left_at.append(time.monotonic())
        return bool(left_at)

    pools = Pools(light=1, heavy=1)
    info = SimpleNamespace(context=Context(service=service, pools=pools, client_gone=client_gone))
    try:
        with pytest.raises(
            QueryTimeout,
            match=r"the computation was stopped after \d+ of 600 batches: "
            r"its time limit passed or its client left",
        ):
            asyncio.run(call(info, long_work, heavy=True))
        stopped_after = time.monotonic() - left_at[0]
    finally:
        pools.shutdown()
        service.close()
    assert stopped_after < 1.0  # polled every 0.25 s, one 50 ms batch to finish
    assert 5 <= len(batches) < 40


def test_without_a_disconnect_the_work_finishes(tmp_path):
    service = Service(str(tmp_path / "db"))
    done = threading.Event()

    def short_work() -> str:
        for i in range(4):
            check_cancelled(i, 4, "batches")
            time.sleep(0.05)
        done.set()
        return "finished"

    async def client_gone() -> bool:
        return False

    pools = Pools(light=1, heavy=1)
    info = SimpleNamespace(context=Context(service=service, pools=pools, client_gone=client_gone))
    try:
        assert asyncio.run(call(info, short_work, heavy=True)) == "finished"
    finally:
        pools.shutdown()
        service.close()
    assert done.is_set()

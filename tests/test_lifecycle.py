"""The two service-skeleton helpers: clients close after a failed start, helper tasks end
with their block. Pure asyncio: no stack needed."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from services.common.lifecycle import BackgroundTasks, ServiceBase


class _Opened(ServiceBase):
    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.closed: list[int] = []

    async def _open(self, stack: AsyncExitStack) -> None:
        for i in range(3):
            if i == self.fail_after:
                raise RuntimeError("cannot open")
            stack.callback(self.closed.append, i)


async def test_service_closes_its_clients_in_reverse_order_of_opening() -> None:
    svc = _Opened()
    async with svc:
        assert svc.closed == []
    assert svc.closed == [2, 1, 0]
    async with svc:  # reusable: opens afresh
        pass
    assert svc.closed == [2, 1, 0, 2, 1, 0]


async def test_a_failed_start_closes_what_was_opened_and_raises() -> None:
    svc = _Opened(fail_after=2)
    with pytest.raises(RuntimeError, match="cannot open"):
        async with svc:
            pytest.fail("the body must not run after a failed start")
    assert svc.closed == [1, 0]


async def test_background_tasks_are_cancelled_and_awaited_when_the_block_ends() -> None:
    async with BackgroundTasks() as tasks:
        forever = tasks.start(asyncio.Event().wait(), name="forever")
        await asyncio.sleep(0)
    assert forever.cancelled()


async def test_a_helper_tasks_error_propagates_from_the_exit() -> None:
    async def broken() -> None:
        raise ValueError("bug in a helper")

    with pytest.raises(ValueError, match="bug in a helper"):
        async with BackgroundTasks() as tasks:
            tasks.start(broken())
            await asyncio.sleep(0)


async def test_grace_lets_tasks_finish_by_themselves_before_cancelling() -> None:
    stop = asyncio.Event()
    finished = asyncio.Event()

    async def worker() -> None:
        await stop.wait()
        finished.set()

    async with BackgroundTasks(grace_s=30) as tasks:
        task = tasks.start(worker())
        stop.set()
    assert finished.is_set() and not task.cancelled()


async def test_cancelling_the_block_is_not_swallowed_while_helpers_are_awaited() -> None:
    entered = asyncio.Event()

    async def block() -> None:
        async with BackgroundTasks(grace_s=30) as tasks:
            tasks.start(asyncio.Event().wait())
            entered.set()
        # the grace wait is interrupted by the cancel below

    outer = asyncio.create_task(block())
    await entered.wait()
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer

"""Running a service: signals to a stop event, and the two-stage shutdown.

Stage one (SIGTERM/SIGINT): the service stops taking work and drains what is in flight
within its graceful timeout. Stage two (a second signal, or the timeout): the run task is
cancelled and `__aexit__` still closes every client in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    stop_event: asyncio.Event

    async def run(self) -> None: ...


async def run_until_signalled(
    run: Callable[[], Awaitable[None]], stop: asyncio.Event, *, name: str
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run())
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info(
                "stopping: draining in-flight work", extra={"service": name, "signal": sig.name}
            )
            stop.set()
        else:
            log.warning("second signal: terminating now", extra={"service": name})
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    except asyncio.CancelledError:
        if signals < 2:
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

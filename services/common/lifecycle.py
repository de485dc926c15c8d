"""Running a service: signals to a stop event, and the two-stage shutdown.

Stage one (SIGTERM/SIGINT): the service's stop event is set; it stops taking work and
drains what is in flight. Stage two (a second signal, or the graceful timeout passing):
the run task is cancelled, and the service's `__aexit__` still closes every client in
reverse order of opening.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import TracebackType
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    """What every CityWatch service is: an async context manager with a run loop."""

    stop_event: asyncio.Event

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def run(self) -> None: ...


async def serve(service: Service, *, name: str, graceful_timeout_s: float) -> None:
    """Open `service`, run it until SIGTERM/SIGINT, and shut it down in two stages.

    The handlers are installed before the service opens: a signal while it is still opening
    (waiting for Kafka or PostgreSQL during an outage) abandons the opening at once, since
    nothing has been taken yet and there is nothing to drain; the service's `__aenter__`
    closes what it had opened, and the process exits 0 as after any requested stop.
    """
    loop = asyncio.get_running_loop()
    opening = asyncio.current_task()
    run_task: asyncio.Future[None] | None = None
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if run_task is None:
            # Not the stop event: a wait on it inside the opening could end first and turn
            # the requested stop into a startup error.
            log.info("stopping during startup", extra={"service": name, "signal": sig.name})
            if opening is not None:
                opening.cancel()
        elif signals == 1:
            log.info(
                "stopping: draining in-flight work", extra={"service": name, "signal": sig.name}
            )
            service.stop_event.set()
            loop.call_later(graceful_timeout_s + 5, run_task.cancel)
        else:
            log.warning("second signal: terminating now", extra={"service": name})
            service.stop_event.set()
            run_task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with service:
            run_task = asyncio.ensure_future(service.run())
            try:
                await run_task
            except asyncio.CancelledError:
                if signals == 0:
                    raise
                log.warning("terminated before the drain finished", extra={"service": name})
    except asyncio.CancelledError:
        if signals == 0:
            raise
        if run_task is None:
            log.info("stopped before it had started", extra={"service": name})
        else:
            log.warning("terminated before the drain finished", extra={"service": name})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

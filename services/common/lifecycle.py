"""Running a service: opening and closing its clients, its background tasks, signals to a
stop event, and the two-stage shutdown.

`ServiceBase` is the open/close half every service shares: the service opens its clients in
`_open(stack)`, in dependency order, and they close in reverse, even after a failed start.
`BackgroundTasks` is the helper-task half: tasks that live as long as a block of `run()`
and are cancelled and awaited when it ends.

Stage one (SIGTERM/SIGINT): the service's stop event is set; it stops taking work and
drains what is in flight. Stage two (a second signal, or the graceful timeout passing):
the run task is cancelled, and the service's `__aexit__` still closes every client in
reverse order of opening.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from types import FrameType, TracebackType
from typing import Any, Protocol, Self, TypeVar

log = logging.getLogger(__name__)

__all__ = ["BackgroundTasks", "Service", "ServiceBase", "serve"]

T = TypeVar("T")


class Service(Protocol):
    """What every CityWatch service is: an async context manager with a run loop."""

    stop_event: asyncio.Event

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def run(self) -> None: ...


class ServiceBase(ABC):
    """`__aenter__`/`__aexit__` for a service whose clients open in `_open(stack)`.

    `__aenter__` hands `_open` a fresh `AsyncExitStack`; each client entered on it is
    closed by `__aexit__` in reverse order of opening. When opening fails or is cancelled
    part way (a stop during a Kafka outage at startup), what was opened is closed at once
    and the error propagates: nothing leaks from a failed start. Reusable (each
    `async with` opens afresh), not reentrant.
    """

    _stack: AsyncExitStack

    @abstractmethod
    async def _open(self, stack: AsyncExitStack) -> None:
        """Open the service's clients in dependency order, each entered on `stack`."""

    async def __aenter__(self) -> Self:
        self._stack = AsyncExitStack()
        try:
            await self._open(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()


class BackgroundTasks:
    """Helper tasks that live as long as an `async with` block, then are cancelled.

        async with BackgroundTasks() as tasks:
            tasks.start(self._probe(), name="probe")
            await self._main_loop()

    On the way out each task is given `grace_s` (default none) to finish by itself, then
    cancelled, and all are awaited, in the order started; an error a task raised other
    than its cancellation propagates from the exit, so a bug in a helper is not lost.
    Unlike `asyncio.TaskGroup`, a failing task does not cancel the block: the helpers
    (probes, watchers, the ack loop) serve the block, not the other way round.
    """

    def __init__(self, *, grace_s: float = 0.0) -> None:
        self._grace_s = grace_s
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait up to `grace_s` for the tasks, cancel those still running, await them all."""
        tasks, self._tasks = self._tasks, []
        try:
            if tasks and self._grace_s > 0:
                await asyncio.wait(tasks, timeout=self._grace_s)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # this task's own cancellation, not the helper's: pass it on


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


def stop_like_ctrl_c() -> None:
    """End this command on SIGTERM (a service manager, `kill`) or SIGHUP (a closed terminal)
    the way Ctrl-C does: KeyboardInterrupt, through the command's `finally` blocks. A
    command that starts services or stack parts (`demo`, `bench`, `evaluate`) would
    otherwise leave them running without it, and what it registered in the database."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt

"""The gateway's copy of the device registry: the `DeviceLookup` the pure decoder asks.

Decoding is synchronous and per message, so it cannot wait on PostgreSQL; the gateway
keeps every active and disabled device's profile in memory and replaces the whole
snapshot every `ingest.registry_refresh_s` (10 s by default: a disable or a new device
takes effect within that, and a full reload of thousands of rows is a cheap indexed scan,
simpler and more obviously correct than change tracking).

Readiness: the cache is needed once, not always. Until the first load succeeds the gateway
takes no messages (they wait, unacknowledged, with the broker) and `/readyz` reports
`registry: false`, because deciding without the registry would reject every reading under
the "reject" policy, or let disabled devices in under "accept". Once warm, a database
outage does not make the gateway not-ready: profiles change rarely, so it keeps serving
the last snapshot, logs the failure, counts it, and retries with backoff. The price is
bounded and visible: a device registered during the outage is rejected as unknown (on the
rejected topic, with its raw payload, so nothing is lost) until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Self

import asyncpg
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from schemas.device import DeviceProfile
from services.common.backoff import Backoff
from services.common.db import CONNECTION_ERRORS
from services.common.lifecycle import BackgroundTasks
from services.registry.store import load_profiles

log = logging.getLogger(__name__)

__all__ = ["RegistryCache"]

# The database is down or refused us (e.g. not migrated yet), or a row edited by hand no
# longer makes a valid profile: retry, keep the last snapshot, never let the loop die.
_RELOAD_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    ValidationError,
)

DEVICES = Gauge("citywatch_ingest_registry_devices", "Registered devices in the gateway's cache")
LOADED_AT = Gauge(
    "citywatch_ingest_registry_loaded_timestamp_seconds",
    "When the registry cache was last loaded (Unix time); time() minus this is its age",
)
REFRESH_ERRORS = Counter(
    "citywatch_ingest_registry_refresh_errors_total", "Failed registry reloads (retried)"
)


class RegistryCache:
    """`async with RegistryCache(pool, refresh_s=10) as cache: ... cache.get(device_id)`."""

    def __init__(self, pool: asyncpg.Pool, *, refresh_s: float) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._profiles: dict[str, DeviceProfile] = {}
        self._tasks = BackgroundTasks()
        self.warm = asyncio.Event()
        self.healthy = False  # the last reload succeeded

    def get(self, device_id: str) -> DeviceProfile | None:
        """The device's profile, or None when it is not registered (the `DeviceLookup`)."""
        return self._profiles.get(device_id)

    def __len__(self) -> int:
        return len(self._profiles)

    async def refresh(self) -> int:
        """Load the registry now and swap the snapshot in whole; returns its size."""
        async with self._pool.acquire() as con:
            profiles = await load_profiles(con)
        # One assignment: a decode running between two awaits sees the old or the new
        # snapshot, never a mix.
        self._profiles = {p.device_id: p for p in profiles}
        DEVICES.set(len(profiles))
        LOADED_AT.set(time.time())
        return len(profiles)

    async def __aenter__(self) -> Self:
        self._tasks.start(self._keep_fresh(), name="registry-refresh")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._tasks.aclose()

    async def _keep_fresh(self) -> None:
        backoff = Backoff(initial_s=0.5, maximum_s=self._refresh_s)
        while True:
            try:
                count = await self.refresh()
            except _RELOAD_ERRORS as exc:
                REFRESH_ERRORS.inc()
                if self.healthy or not self.warm.is_set():
                    log.warning(
                        "registry reload failed; %s",
                        "serving the last snapshot" if self.warm.is_set() else "not ready yet",
                        extra={"error": repr(exc), "devices": len(self._profiles)},
                    )
                self.healthy = False
                await asyncio.sleep(backoff.next_delay())
                continue
            if not self.healthy:
                log.info("registry loaded", extra={"devices": count})
            self.healthy = True
            self.warm.set()
            backoff.reset()
            await asyncio.sleep(self._refresh_s)

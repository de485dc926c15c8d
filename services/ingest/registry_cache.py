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

A miss is checked at the source (issue 13): before the gateway refuses a device as
unknown, `check_source` asks PostgreSQL for that one device, so a device is accepted from
the moment `citywatch devices add` has committed, not from the next reload. The other way,
pushing registrations to the gateways (LISTEN/NOTIFY), still leaves a window: the
notification and the device's first uplink race each other, and a gateway that was
reconnecting misses it. A lookup on a miss has no window, needs no extra connection, and
costs nothing for known devices (only refusals pay it). So that a flood of unknown ids
cannot hammer PostgreSQL, a lookup's "not registered" is remembered per id for
`miss_ttl_s` (2 s by default, at most `MAX_REMEMBERED_MISSES` ids), and lookups are
limited to `lookups_per_s` (a token bucket); a miss beyond that, or while the database
is failing, is refused from the snapshot as before. The one window left: a device refused
as unknown in the `miss_ttl_s` before its registration is refused until that answer
expires.
"""

from __future__ import annotations

import asyncio
import collections
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
from services.registry.store import load_profile, load_profiles

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
LOOKUPS = Counter(
    "citywatch_ingest_registry_lookups_total",
    "Devices missing from the snapshot, by how the miss was settled: found or absent at the "
    "source, remembered as absent, throttled, skipped (database failing) or failed",
    ["outcome"],
)

_LOOKUP_ERRORS: tuple[type[BaseException], ...] = (*_RELOAD_ERRORS, TimeoutError)

# How many "not registered" answers are remembered at once (the oldest go first).
MAX_REMEMBERED_MISSES = 10_000
# A lookup that takes longer is given up (the message is refused from the snapshot): the
# gateway decodes in arrival order, so a slow database must not stall every device.
LOOKUP_TIMEOUT_S = 1.0


class RegistryCache:
    """`async with RegistryCache(pool, refresh_s=10) as cache: ... cache.get(device_id)`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        refresh_s: float,
        miss_ttl_s: float = 2.0,
        lookups_per_s: float = 50.0,
    ) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._profiles: dict[str, DeviceProfile] = {}
        # Devices found at the source since the running reload began: merged into its result,
        # which may have been read before they were registered.
        self._learned: dict[str, DeviceProfile] = {}
        self._absent: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._miss_ttl_s = miss_ttl_s
        self._rate = lookups_per_s
        self._tokens = lookups_per_s  # a burst of one second's worth
        self._tokens_at = time.monotonic()
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
        self._learned = {}
        async with self._pool.acquire() as con:
            profiles = await load_profiles(con)
        # One assignment: a decode running between two awaits sees the old or the new
        # snapshot, never a mix.
        self._profiles = {p.device_id: p for p in profiles} | self._learned
        DEVICES.set(len(self._profiles))
        LOADED_AT.set(time.time())
        return len(self._profiles)

    async def check_source(self, device_id: str) -> DeviceProfile | None:
        """The device's profile from PostgreSQL when the snapshot lacks it (then kept in the
        snapshot), or None when it is not registered or could not be asked (module docstring).
        """
        known = self._profiles.get(device_id)
        if known is not None:
            return known
        now = time.monotonic()
        expires = self._absent.get(device_id)
        if expires is not None and expires > now:
            LOOKUPS.labels("remembered").inc()
            return None
        if not self.healthy:
            LOOKUPS.labels("skipped").inc()
            return None
        self._tokens = min(self._rate, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens < 1:
            LOOKUPS.labels("throttled").inc()
            return None
        self._tokens -= 1
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S), self._pool.acquire() as con:
                profile = await load_profile(con, device_id)
        except _LOOKUP_ERRORS as exc:
            LOOKUPS.labels("failed").inc()
            log.warning("registry lookup failed", extra={"device": device_id, "error": repr(exc)})
            return None
        if profile is None:
            LOOKUPS.labels("absent").inc()
            self._absent[device_id] = time.monotonic() + self._miss_ttl_s
            self._absent.move_to_end(device_id)
            while len(self._absent) > MAX_REMEMBERED_MISSES:
                self._absent.popitem(last=False)
            return None
        LOOKUPS.labels("found").inc()
        self._absent.pop(device_id, None)
        self._profiles[device_id] = self._learned[device_id] = profile
        DEVICES.set(len(self._profiles))
        return profile

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

"""Why a registered device's messages are refused, for the operations centre.

A device whose every payload is refused looks silent from the database: no reading, no
`last_seen`, "offline" on the map. In the demo a water buoy whose clock ran five hours ahead
was shown offline for hours while it published every ten seconds (each refused as
`time_in_future`); a duty officer would send someone to change its battery. The gateway
keeps, per registered device, its latest refusal (reason, detail, time) and how many since
the last write, and upserts them into `device_refusals` every `flush_s` seconds, in one
statement; `/devices` shows the refusal when it is newer than the device's last reading.

Only registered devices are noted (the registry bounds the table and the memory); the
rejected topic and `citywatch_ingest_rejected_total` keep everything. Writing is best
effort and off the message path: a database outage keeps the notes in memory (one entry
per device) until the next write succeeds, and never delays intake.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

import asyncpg

from services.common.db import CONNECTION_ERRORS
from services.common.lifecycle import BackgroundTasks

log = logging.getLogger(__name__)

__all__ = ["RefusalLog"]

_WRITE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)
DETAIL_CHARS = 300  # enough for the reason's explanation; the full one is on the topic

_UPSERT = """
INSERT INTO device_refusals AS r (device_id, reason, detail, last_at, count)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
ON CONFLICT (device_id) DO UPDATE
   SET reason = CASE WHEN EXCLUDED.last_at >= r.last_at THEN EXCLUDED.reason ELSE r.reason END,
       detail = CASE WHEN EXCLUDED.last_at >= r.last_at THEN EXCLUDED.detail ELSE r.detail END,
       last_at = GREATEST(r.last_at, EXCLUDED.last_at),
       count = r.count + EXCLUDED.count
"""


@dataclass
class _Refusal:
    reason: str
    detail: str
    at: datetime
    count: int


class RefusalLog:
    """`async with RefusalLog(pool, flush_s=10) as refusals: refusals.note(...)`."""

    def __init__(self, pool: asyncpg.Pool, *, flush_s: float) -> None:
        self._pool = pool
        self._flush_s = flush_s
        self._pending: dict[str, _Refusal] = {}
        self._tasks = BackgroundTasks()

    def note(self, device_id: str, reason: str, detail: str, at: datetime) -> None:
        """One refused message of a registered device (called on the message path: no I/O)."""
        seen = self._pending.get(device_id)
        if seen is None:
            self._pending[device_id] = _Refusal(reason, detail[:DETAIL_CHARS], at, 1)
        else:
            seen.count += 1
            if at >= seen.at:
                seen.reason, seen.detail, seen.at = reason, detail[:DETAIL_CHARS], at

    async def flush(self) -> int:
        """Write what was noted since the last write; returns how many devices it covered."""
        batch, self._pending = self._pending, {}
        if not batch:
            return 0
        ids = list(batch)
        try:
            async with self._pool.acquire() as con:
                await con.execute(
                    _UPSERT,
                    ids,
                    [batch[d].reason for d in ids],
                    [batch[d].detail for d in ids],
                    [batch[d].at for d in ids],
                    [batch[d].count for d in ids],
                )
        except _WRITE_ERRORS as exc:
            for device_id, old in batch.items():  # keep them for the next write
                new = self._pending.get(device_id)
                if new is None:
                    self._pending[device_id] = old
                else:
                    new.count += old.count
            log.warning(
                "device refusals not written; kept for the next try",
                extra={"devices": len(batch), "error": repr(exc)},
            )
            return 0
        return len(ids)

    async def __aenter__(self) -> Self:
        self._tasks.start(self._keep_writing(), name="refusals-flush")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._tasks.aclose()
        await self.flush()  # the last notes, when the database answers

    async def _keep_writing(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)  # the write's period, not a wait for a state
            await self.flush()

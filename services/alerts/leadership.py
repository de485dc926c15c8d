"""Active/standby for the alerts service: one evaluator per consumer group, by a PostgreSQL lock.

Why. Readings are keyed by device, so two alerts instances in one Kafka consumer group
would split the partitions: per-device rules survive that, but a combined rule (subject
`area:<id>`) would see only part of an area's devices per instance, both instances would
write the same `alert_cursors` rows, and offline/stuck ticks would be judged twice. So
only one instance per group evaluates: the one holding a session-level advisory lock
(`pg_try_advisory_lock`) keyed by a stable 64-bit hash of the group id (`lock_key`; tests
with their own group ids never contend). Every other instance is a hot standby: it does
not join the consumer group, it retries the lock every `POLL_S`, and it takes over when
PostgreSQL releases the lock, which it does when the holder's session ends: a clean
shutdown, a SIGKILL (the kernel closes the socket and the idle backend sees EOF at once),
a crashed host (the server's TCP keepalives, set short on this session, end it within
about `5 + 2 * 3` seconds), or a frozen leader stuck inside a transaction
(`idle_in_transaction_session_timeout`).

Split brain, and why it cannot write. The danger is a leader that still believes it leads
after PostgreSQL has released its lock (its session was terminated, or timed out by a
keepalive while the network was partitioned) and a standby that has already taken over.
Noticing fast is not enough: between the server ending the session and the old leader's
next check there is always a window. So fencing is by construction instead of by timing:
the leader does *all* of its evaluation I/O (state rebuild, per-rule state, transitions,
stream heads) through the lock session itself (`Leadership.connection`), never through a
pool. A transaction on that session can only commit while the session, and therefore the
lock, is alive; PostgreSQL releases the lock only after the session has ended, which
aborts any transaction still open on it. Hence every write of the old leader commits
before the new leader's `pg_try_advisory_lock` succeeds, and the new leader, which
rebuilds its state from the database after acquiring, sees all of them. The old leader's
Kafka offsets move only after one of its transactions has committed (services/common/
batches.py), so it cannot skip records either: at worst the new leader re-reads records
whose effects are stored, and the cursors make those replays change nothing. Outbox
publishing (`citywatch.alerts.v1`) is not fenced: a stepping-down leader may publish an
event the new leader publishes too, which the outbox already allows (at least once,
consumers deduplicate on `event_id`).

Stepping down. The lock session is checked every `CHECK_S` (and on every use). When a use
or check fails or times out, the holder counts the leadership as lost: it terminates the
session (so the server releases the lock if it still had it), sets `lost`, and the service
leaves the consumer group and drops its in-memory state before it contends again. During a
database outage nobody can take over (no one can reach the lock), and when the database is
back every instance contends anew; the winner rebuilds from the database exactly as a
restart does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Self

import asyncpg

from services.alerts import metrics as m
from services.common import db
from services.common.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

__all__ = ["CHECK_S", "POLL_S", "Leadership", "lock_ids", "lock_key"]

POLL_S = 1.0  # a standby retries the lock this often
CHECK_S = 1.0  # the leader checks its lock session this often while idle
OP_TIMEOUT_S = 60.0  # a use of the lock session longer than this counts as a lost session
CONNECT_TIMEOUT_S = 5.0

# Per session, so they touch nothing else: the server ends the session of a leader that
# vanished without closing its socket (a host crash, a network partition) within about
# idle + interval * count seconds instead of the OS default of two hours, and the session
# of a leader frozen inside a transaction after a minute. Either way the lock goes free.
_SESSION_SETTINGS = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
    "SET idle_in_transaction_session_timeout = '60s'",
)

# What says "this session is gone (or cannot be trusted)", beyond the pool's usual list.
_SESSION_ENDED: tuple[type[BaseException], ...] = (
    *db.CONNECTION_ERRORS,
    asyncpg.IdleInTransactionSessionTimeoutError,
)


def lock_key(group_id: str) -> int:
    """The advisory lock key of an alerts consumer group: a signed 64-bit BLAKE2b hash.

    Stable across processes and Python versions (unlike `hash()`), and namespaced so it does
    not meet other advisory locks in the same database (the migrations' lock)."""
    digest = hashlib.blake2b(f"citywatch-alerts:{group_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_ids(key: int) -> tuple[int, int]:
    """`(classid, objid)` under which `pg_locks` lists a bigint advisory lock (objsubid 1)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


class Leadership:
    """Contends for, holds and watches the alerts leadership lock on one dedicated session.

    `async with Leadership(dsn, group_id) as lead:`, then `await lead.acquire(stop)` blocks
    until this process leads (True) or `stop` is set (False); while leading, evaluation I/O
    goes through `lead.connection()`, and `lead.lost` is set when the session failed.
    `release()` ends a term; leaving the context closes the session.
    """

    def __init__(
        self,
        dsn: str,
        group_id: str,
        *,
        poll_s: float = POLL_S,
        check_s: float = CHECK_S,
        op_timeout_s: float = OP_TIMEOUT_S,
    ) -> None:
        self.group_id = group_id
        self.key = lock_key(group_id)
        self.lost = asyncio.Event()
        self.database_ok = False  # the last attempt to reach the lock answered
        self._dsn = dsn
        self._poll_s = poll_s
        self._check_s = check_s
        self._op_timeout_s = op_timeout_s
        self._con: asyncpg.Connection | None = None
        self._held = False
        self._use = asyncio.Lock()  # one operation at a time on the session
        self._watch: asyncio.Task[None] | None = None
        self._name = f"citywatch-alerts {socket.gethostname()}:{os.getpid()}"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()
        await self._close()

    @property
    def held(self) -> bool:
        return self._held and not self.lost.is_set()

    # -- contending -------------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the lock (True) or `stop` is set (False)."""
        said: str | None = None  # log each standby situation once, not every poll
        while not stop.is_set():
            try:
                holder = await self._try()
            except DatabaseUnavailable as exc:
                self.database_ok = False
                if said != "unreachable":
                    log.warning(
                        "alerts leadership: database unreachable; retrying",
                        extra={"group": self.group_id, "error": exc.detail},
                    )
                    said = "unreachable"
            else:
                self.database_ok = True
                if holder is None:
                    return True
                if said != "standby":
                    log.info(
                        "alerts standby: another instance leads; waiting for the lock",
                        extra={"group": self.group_id, "lock_key": self.key, "leader": holder},
                    )
                    said = "standby"
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)
        return False

    async def _try(self) -> str | None:
        """One attempt: None when the lock is ours now, else who holds it (for the log)."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S * 2):
                if self._con is None or self._con.is_closed():
                    self._con = await db.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
                    await self._con.execute(
                        "SELECT set_config('application_name', $1, false)", self._name
                    )
                    for statement in _SESSION_SETTINGS:
                        await self._con.execute(statement)
                got = await self._con.fetchval("SELECT pg_try_advisory_lock($1)", self.key)
                if not got:
                    classid, objid = lock_ids(self.key)
                    holder = await self._con.fetchval(
                        """SELECT coalesce(a.application_name, '') || ' (pid ' || l.pid || ')'
                           FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid)
                           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                             AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid""",
                        classid,
                        objid,
                    )
                    return str(holder or "unknown")
        except _SESSION_ENDED as exc:
            await self._close()
            raise DatabaseUnavailable("postgresql", repr(exc)) from exc
        self._held = True
        self.lost = asyncio.Event()  # a fresh event per term
        self._watch = asyncio.create_task(self._watch_session(), name="alerts-leadership-watch")
        m.LEADERSHIP_ACQUIRED.inc()
        log.info(
            "alerts leadership acquired",
            extra={"group": self.group_id, "lock_key": self.key, "backend_pid": self.backend_pid},
        )
        return None

    @property
    def backend_pid(self) -> int | None:
        return self._con.get_server_pid() if self._con is not None else None

    # -- leading ----------------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The lock session, for the leader's evaluation I/O (see the module docstring: this
        is the fence). Raises `DatabaseUnavailable` when the leadership is lost; a use that
        fails on the session, or lasts longer than `op_timeout_s`, loses it."""
        async with self._use:
            con = self._con
            if not self.held or con is None:
                raise DatabaseUnavailable("postgresql", "alerts leadership lost")
            try:
                async with asyncio.timeout(self._op_timeout_s):
                    yield con
            except _SESSION_ENDED as exc:
                self._lose(repr(exc))
                raise DatabaseUnavailable("postgresql", repr(exc)) from exc
            if con.is_closed():  # the body swallowed an error that ended the session
                self._lose("lock session closed")

    async def _watch_session(self) -> None:
        """While leading: every `check_s`, prove the session (and so the lock) is alive."""
        while self.held:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), self._check_s)
            if not self.held:
                return
            async with self._use:
                con = self._con
                if not self.held or con is None:
                    return
                try:
                    async with asyncio.timeout(min(self._op_timeout_s, 10.0)):
                        await con.fetchval("SELECT 1")
                except _SESSION_ENDED as exc:
                    self._lose(repr(exc))
                    return

    def _lose(self, reason: str) -> None:
        """Count the leadership as lost: end the session at once, so the server frees the
        lock if it still held it, and tell the service through `lost`."""
        if not self._held or self.lost.is_set():
            return
        m.LEADERSHIP_LOST.inc()
        log.warning(
            "alerts leadership lost: the lock session failed; stepping down",
            extra={"group": self.group_id, "lock_key": self.key, "reason": reason},
        )
        self.lost.set()
        self._held = False
        if self._con is not None:
            self._con.terminate()
            self._con = None

    async def release(self) -> None:
        """End a term: free the lock (the session stays open for contending again)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with suppress(asyncio.CancelledError):
                await watch
        if not self._held:
            return
        self._held = False
        async with self._use:
            con = self._con
            if con is None:
                return
            try:
                async with asyncio.timeout(5):
                    await con.execute("SELECT pg_advisory_unlock($1)", self.key)
            except _SESSION_ENDED:
                await self._close()  # closing the session frees the lock as well
        log.info("alerts leadership released", extra={"group": self.group_id})

    async def _close(self) -> None:
        con, self._con = self._con, None
        if con is None or con.is_closed():
            return
        try:
            async with asyncio.timeout(5):
                await con.close()
        except _SESSION_ENDED:
            con.terminate()

"""Database fixtures shared by the migration, rollup and Grafana tests.

Plain PostgreSQL: `fresh_databases` creates brand-new databases on the test stack
(`citywatch_mig_<uuid8>`) and drops them afterwards. TimescaleDB: `pglite_port` starts
the PGlite + TimescaleDB wire-protocol server in deploy/pglite as a subprocess, once per
module; it serves one connection at a time, so open one with `pglite(port)` and close it
before the next. Registered from tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.common.settings import Settings
from tests.harness import REPO

PGLITE_DIR = REPO / "deploy" / "pglite"


# -- plain PostgreSQL: fresh databases on the test stack ------------------------------------


def with_url(dsn: str, *, database: str) -> str:
    """`dsn` pointing at another database."""
    u = urlsplit(dsn)
    return urlunsplit((u.scheme, u.netloc, f"/{database}", u.query, u.fragment))


@dataclass
class FreshDatabases:
    """Creates empty databases owned by the stack's role; drops them all on teardown."""

    dsn: str
    superuser_dsn: str  # the stack's superuser, with its password from the state folder
    created: list[str]

    async def admin(self) -> asyncpg.Connection:
        """The stack's role on `postgres` if it may create databases, else `postgres`."""
        con = await asyncpg.connect(with_url(self.dsn, database="postgres"))
        if await con.fetchval(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        ):
            return con
        await con.close()
        return await asyncpg.connect(self.superuser_dsn)

    async def create(self) -> str:
        name = f"citywatch_mig_{uuid.uuid4().hex[:8]}"
        owner = urlsplit(self.dsn).username or "citywatch"
        con = await self.admin()
        try:
            await con.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        finally:
            await con.close()
        self.created.append(name)
        return with_url(self.dsn, database=name)

    async def drop_all(self) -> None:
        con = await self.admin()
        try:
            for name in self.created:
                await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await con.close()


@pytest.fixture(scope="module")
async def fresh_databases(stack: Settings) -> AsyncIterator[FreshDatabases]:
    dbs = FreshDatabases(stack.database_dsn, stack.database_dsn_as("postgres", "postgres"), [])
    yield dbs
    await dbs.drop_all()


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(dsn)
    try:
        yield con
    finally:
        await con.close()


# -- TimescaleDB: the PGlite wire-protocol server ---------------------------------------------


def read_ready_port(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    """The port of the server's `READY <port>` line, waiting at most `timeout` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    out = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no READY line from pglite within {timeout}s; see {log}")
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(
                    f"pglite exited ({proc.wait(10)}) before READY: {log.read_text()[-2000:]}"
                )
            out += chunk
    word, _, port = out.split(b"\n", 1)[0].decode().partition(" ")
    assert word == "READY" and port.isdigit(), f"unexpected pglite output {out!r}"
    return int(port)


@pytest.fixture(scope="module")
def pglite_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A fresh in-memory PGlite + TimescaleDB server on a free loopback port."""
    node = shutil.which("node")
    assert node, "node is not installed: the TimescaleDB tests need it (deploy/pglite)"
    assert (PGLITE_DIR / "node_modules").is_dir(), "run `cd deploy/pglite && npm ci` first"
    log = tmp_path_factory.mktemp("pglite") / "server.log"
    with log.open("wb") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [node, "server.mjs", "--port", "0", "--host", "127.0.0.1"],
            cwd=PGLITE_DIR,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        yield read_ready_port(proc, log, timeout=60)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


@asynccontextmanager
async def pglite(port: int) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", database="postgres", ssl=False, timeout=30
    )
    try:
        yield con
    finally:
        await con.close()

"""Fixtures: the real local stack (started once per session), per-test names and services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.common import db
from services.common.settings import Settings, load_settings
from services.stack import components
from simulators import Publisher
from tests.harness import Namespace, Services

# Fixtures kept in their own modules, for every test module to use by name.
pytest_plugins = ["tests.fixtures_browser", "tests.fixtures_databases"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The stack `citywatch test` started (or starts it, when pytest runs on its own)."""
    for part in components(settings):
        part.up()
    # `stack up` generates the MQTT service accounts on a first run: read them now.
    return load_settings()


@pytest.fixture(scope="session")
async def migrated(stack: Settings) -> Settings:
    con = await db.connect(stack.database_dsn)
    try:
        await db.migrate(con)
    finally:
        await con.close()
    return stack


def _services(ns: Namespace, log_dir: Path) -> Iterator[Services]:
    running = Services(ns, log_dir)
    yield running
    exits = {svc.log_path.name: svc.stop() for svc in running.started if svc.alive()}
    # SIGTERM is the graceful path: every service drains, commits, closes and exits 0.
    assert all(code == 0 for code in exits.values()), exits


@pytest.fixture
async def dbcon(migrated: Settings) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(migrated.database_dsn)
    yield con
    await con.close()


@pytest.fixture
async def ns(migrated: Settings) -> Namespace:
    names = Namespace(migrated)
    await names.create_topics()
    return names


@pytest.fixture
def log_dir(migrated: Settings) -> Path:
    path = migrated.state_dir / "test-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def services(ns: Namespace, log_dir: Path) -> Iterator[Services]:
    """Services a test starts; all are stopped (and checked to stop cleanly) afterwards."""
    yield from _services(ns, log_dir)


# Module-scoped variants of `ns`, `services`, `dbcon` and `publisher`, for modules whose
# tests all read one simulated day played once (tests/test_api.py, test_pages.py,
# test_grafana.py).
@pytest.fixture(scope="module")
async def mod_ns(migrated: Settings) -> Namespace:
    names = Namespace(migrated)
    await names.create_topics()
    return names


@pytest.fixture(scope="module")
def mod_services(mod_ns: Namespace, migrated: Settings) -> Iterator[Services]:
    log_dir = migrated.state_dir / "test-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    yield from _services(mod_ns, log_dir)


@pytest.fixture(scope="module")
async def mod_dbcon(migrated: Settings) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(migrated.database_dsn)
    yield con
    await con.close()


def simulator_publisher(stack: Settings, *, max_inflight: int = 1000) -> Publisher:
    """A publisher on the simulator's MQTT account, with a client id of its own."""
    username, password = stack.mqtt_login("citywatch-simulator")
    return Publisher(
        stack.mqtt_services_host,
        stack.mqtt_services_port,
        client_id=f"citywatch-sim-{uuid.uuid4().hex[:8]}",
        username=username,
        password=password,
        max_inflight=max_inflight,
    )


@pytest.fixture
def publisher(stack: Settings) -> Iterator[Publisher]:
    with simulator_publisher(stack) as pub:
        yield pub


@pytest.fixture(scope="module")
def mod_publisher(stack: Settings) -> Iterator[Publisher]:
    with simulator_publisher(stack) as pub:
        yield pub

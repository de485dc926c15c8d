"""`citywatch stack`: idempotent, recovers after a crash, and says what is wrong."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.common.errors import StateError
from services.common.settings import Settings
from services.stack.components import mqtt_broker
from services.stack.process import pid_alive, wait_for
from tests.harness import free_port

pytestmark = pytest.mark.stack


def test_stack_up_is_idempotent_and_restarts_a_part_that_crashed(stack: Settings) -> None:
    broker = mqtt_broker(stack)  # the stack's own: Mosquitto or Artemis (CITYWATCH_MQTT_BROKER)
    first = broker.up()
    assert first.answers and first.pid is not None
    assert broker.up().pid == first.pid  # already up: nothing restarted

    os.kill(first.pid, signal.SIGKILL)  # a crash leaves a stale pid file behind
    assert wait_for(lambda: not pid_alive(first.pid), 10)
    assert broker.pid_file.exists()

    again = broker.up()
    assert again.answers and again.pid not in (None, first.pid)
    assert broker.pid_file.read_text().strip() == str(again.pid)


@pytest.mark.parametrize("listener", ["devices", "services"])
def test_stack_up_names_the_part_and_the_fix_when_its_port_is_taken(
    stack: Settings, tmp_path: Path, listener: str
) -> None:
    port, other = free_port(), free_port()
    devices, services = (port, other) if listener == "devices" else (other, port)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        settings = stack.model_copy(
            update={
                "mqtt_url": f"mqtt://127.0.0.1:{devices}",
                "mqtt_services_url": f"mqtt://127.0.0.1:{services}",
                "state_dir": tmp_path,
            }
        )
        part = mqtt_broker(settings)
        with pytest.raises(StateError) as failure:
            part.up()
    message = str(failure.value)
    assert message.startswith(f"{settings.mqtt_broker}:")
    assert f"127.0.0.1:{port}" in message and "already taken" in message
    assert "Stop it, or point CityWatch at another port" in message


async def test_the_database_role_is_created_with_quoted_names_and_password(
    stack: Settings,
) -> None:
    """Issue 10: `CREATE ROLE ... PASSWORD` was built with an f-string; a quote in the
    password or the name ended the literal. PostgreSQL's format() quotes them now."""
    from urllib.parse import quote

    import asyncpg

    from services.stack import Postgres
    from services.stack.components import _ensure_role_and_db

    user, password, dbname = "cw 'quote\" role", "pa'ss\"; DROP ROLE citywatch; --", "cw'db"
    host, port = Postgres(stack).host, Postgres(stack).port

    dsn = f"postgresql://{quote(user)}:{quote(password)}@{host}:{port}/{quote(dbname)}"
    con = await asyncpg.connect(stack.database_dsn_as("postgres", "postgres"))
    try:
        await _ensure_role_and_db(stack.model_copy(update={"database_url": SecretStr(dsn)}))
        # The role logs in with that password (SCRAM): it was set, quoted, as given.
        role = await asyncpg.connect(dsn)
        await role.close()
        assert await con.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user) == 1
        assert await con.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'citywatch'") == 1
        owner = await con.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", dbname
        )
        assert owner == user
    finally:
        await con.execute(f"DROP DATABASE IF EXISTS {_ident(dbname)}")
        await con.execute(f"DROP ROLE IF EXISTS {_ident(user)}")
        await con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

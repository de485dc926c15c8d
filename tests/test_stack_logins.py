"""Issue 10, point 4: the local stack trusts no local user. PostgreSQL and Kafka take
passwords (SCRAM) only, Kafka's ACLs let only the gateway write readings and only the
alerts service write alerts, and the generated secrets are files only their owner reads."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from services.common.kafka import client_options
from services.common.settings import (
    KAFKA_ACCOUNTS,
    KAFKA_ACCOUNTS_FILE,
    MQTT_ACCOUNTS_FILE,
    POSTGRES_ACCOUNTS_FILE,
    KafkaAccount,
    Settings,
)
from services.stack import Kafka, Postgres
from services.stack.process import cmdline
from tests.harness import Namespace, kafka_admin_answers, kafka_produce_as

pytestmark = pytest.mark.stack


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["citywatch", "postgres"])
async def test_postgres_refuses_a_login_without_or_with_a_wrong_password(
    stack: Settings, role: str
) -> None:
    pg = Postgres(stack)
    database = "postgres" if role == "postgres" else "citywatch"
    # Over TCP and over the Unix socket (anyone on the machine reaches either).
    for host in (pg.host, str(pg.dir)):
        with pytest.raises(
            (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InterfaceError)
        ):
            await asyncpg.connect(host=host, port=pg.port, user=role, database=database, timeout=5)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host=host, port=pg.port, user=role, password="guess", database=database, timeout=5
            )
    # The generated password is what gets in: the refusals above are the password's doing.
    con = await asyncpg.connect(stack.database_dsn_as(role, database), timeout=5)
    try:
        assert await con.fetchval("SELECT current_user") == role
    finally:
        await con.close()


# -- Kafka -----------------------------------------------------------------------------------


async def test_kafka_refuses_a_client_without_or_with_wrong_credentials(stack: Settings) -> None:
    assert not await kafka_admin_answers(bootstrap_servers=stack.kafka_bootstrap)
    wrong = {**client_options(stack, "citywatch-admin"), "sasl_plain_password": "guess"}
    assert not await kafka_admin_answers(**wrong)
    assert await kafka_admin_answers(**client_options(stack, "citywatch-admin"))


async def test_only_the_gateway_writes_readings_and_only_the_alerts_service_writes_alerts(
    ns: Namespace,
) -> None:
    s = ns.settings
    others: dict[str, tuple[KafkaAccount, ...]] = {
        "readings": ("citywatch-processor", "citywatch-alerts", "citywatch-api"),
        "alerts": ("citywatch-ingest", "citywatch-processor", "citywatch-api"),
    }
    # The stack's own topics (its literal ACLs) and this test's (the same rules, prefixed).
    topics = {
        "readings": (s.topics.readings, ns.readings_topic),
        "alerts": (s.topics.alerts, ns.alerts_topic),
    }
    for kind, refused in others.items():
        for topic in topics[kind]:
            for account in refused:
                with pytest.raises(TopicAuthorizationFailedError):
                    await kafka_produce_as(s, account, topic)
    await kafka_produce_as(s, "citywatch-ingest", ns.readings_topic)
    await kafka_produce_as(s, "citywatch-alerts", ns.alerts_topic)
    # At the source: only the permitted writers' records are there.
    assert await ns.end_offsets(ns.readings_topic) == 1
    assert await ns.end_offsets(ns.alerts_topic) == 1


# -- the secrets -----------------------------------------------------------------------------


def test_generated_secrets_are_owner_only_files_and_on_no_command_line(stack: Settings) -> None:
    state = stack.state_dir
    kafka = Kafka(stack)
    files = [
        state / POSTGRES_ACCOUNTS_FILE,
        state / KAFKA_ACCOUNTS_FILE,
        state / MQTT_ACCOUNTS_FILE,
        kafka.dir / "server.properties",  # the controller listener's admin login
    ]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert set(stack.kafka_accounts) == set(KAFKA_ACCOUNTS)
    assert {"postgres", "citywatch"} <= set(stack.database_passwords)
    secrets = [v.get_secret_value() for v in stack.kafka_accounts.values()]
    secrets += [v.get_secret_value() for v in stack.database_passwords.values()]
    for pid in (kafka.pid(), Postgres(stack).pid()):
        assert pid is not None
        line = cmdline(pid)
        assert line and not any(secret in line for secret in secrets)
    assert not list(Path(state).glob("**/.format.args")) + list(state.glob("**/.initdb.pw"))

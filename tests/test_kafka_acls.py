"""Issue 10, point 4, without a broker: who may write what (the ACLs `stack up` creates) and
how the settings find the stack's passwords."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.common.kafka import Acl, Operation, Resource, TopicNames, kafka_acls, replication
from services.common.settings import (
    KAFKA_ACCOUNTS_FILE,
    POSTGRES_ACCOUNTS_FILE,
    Settings,
    load_settings,
)

NAMES = TopicNames("r", "rej", "al", "processor", "alerts", "delivery")


def _writers(acls: list[Acl], topic: str) -> set[str]:
    return {
        a.principal
        for a in acls
        if a.resource is Resource.TOPIC and a.name == topic and a.operation is Operation.WRITE
    }


def test_only_the_gateway_writes_readings_and_only_the_alerts_service_writes_alerts() -> None:
    acls = kafka_acls(NAMES)
    assert _writers(acls, "r") == {"citywatch-ingest"}
    assert _writers(acls, "al") == {"citywatch-alerts"}
    assert _writers(acls, "rej") == {"citywatch-ingest", "citywatch-processor"}
    # No principal but the super user (which has no ACL) touches anything else.
    assert {a.name for a in acls if a.resource is Resource.TOPIC} == {"r", "rej", "al"}
    assert not any(a.principal == "citywatch-admin" for a in acls)


def _write(path: Path, data: dict[str, str], mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(path, mode)


def test_settings_compose_the_database_url_and_kafka_logins_from_the_state_folder(
    tmp_path: Path,
) -> None:
    _write(tmp_path / POSTGRES_ACCOUNTS_FILE, {"citywatch": "p/w", "postgres": "su"}, 0o600)
    _write(tmp_path / KAFKA_ACCOUNTS_FILE, {"citywatch-ingest": "k"}, 0o600)
    s = Settings(state_dir=tmp_path, database_url="postgresql://citywatch@127.0.0.1:5432/citywatch")
    assert s.database_dsn == "postgresql://citywatch:p%2Fw@127.0.0.1:5432/citywatch"
    assert s.database_dsn_as("postgres", "postgres").startswith("postgresql://postgres:su@")
    assert s.kafka_login("citywatch-ingest") == ("citywatch-ingest", "k")
    assert s.kafka_login("citywatch-api") is None  # no principal: no SASL
    assert "p%2Fw" not in json.dumps(s.masked())
    # The read API's URL: the primary unless a standby is named, with the same password.
    assert s.database_read_dsn == s.database_dsn
    standby = Settings(
        state_dir=tmp_path,
        database_read_url="postgresql://citywatch@127.0.0.1:5433/citywatch",
    )
    assert standby.database_read_dsn == "postgresql://citywatch:p%2Fw@127.0.0.1:5433/citywatch"
    assert "p%2Fw" not in json.dumps(standby.masked())


def test_topics_keep_three_copies_on_a_cluster_and_need_two_in_sync_from_three_on() -> None:
    # (replication factor, min.insync.replicas): one broker keeps the single-broker stack as
    # it was; a cluster keeps three copies, and an acknowledged record is on two brokers.
    assert [replication(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]
    assert replication(5, wanted=5) == (5, 2)
    assert replication(3, wanted=1) == (1, 1)


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / KAFKA_ACCOUNTS_FILE, {"citywatch-ingest": "k"}, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings(state_dir=tmp_path)

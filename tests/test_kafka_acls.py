"""Issue 10, point 4, without a broker: who may write what (the ACLs `stack up` creates), how
the settings find the stack's passwords, and the client options each login gives (SASL over
plain TCP for the local stack and compose, over TLS for a cluster such as Strimzi's)."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import ConfigError
from services.common.kafka import (
    Acl,
    Operation,
    Resource,
    TopicNames,
    client_options,
    kafka_acls,
    replication,
)
from services.common.settings import (
    KAFKA_ACCOUNTS_FILE,
    POSTGRES_ACCOUNTS_FILE,
    Settings,
    load_settings,
)
from tests.harness import tls_certificates

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


def _login(**settings: Any) -> Settings:
    """Settings as a deployment gives them: one principal's login in the environment."""
    return Settings.model_validate(
        {
            "kafka_bootstrap": "kafka-0:9093,kafka-1:9093",
            "kafka_username": "citywatch-ingest",
            "kafka_password": "pw",
            "kafka_accounts": {"unused": "x"},  # keeps the state folder's file out of it
            **settings,
        }
    )


def test_the_local_stack_logs_in_with_scram_over_plain_tcp_and_no_tls_context() -> None:
    """Unchanged for the local stack and compose: no protocol set means SASL_PLAINTEXT."""
    options = client_options(_login(), "citywatch-ingest")
    assert options == {
        "bootstrap_servers": "kafka-0:9093,kafka-1:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "citywatch-ingest",
        "sasl_plain_password": "pw",
    }
    explicit = client_options(_login(kafka_security_protocol="SASL_PLAINTEXT"), "citywatch-api")
    assert explicit == options


def test_without_a_login_the_client_is_anonymous_and_a_tls_setting_alone_is_refused(
    tmp_path: Path,
) -> None:
    bare = Settings(state_dir=tmp_path, kafka_bootstrap="kafka:9092")
    assert client_options(bare, "citywatch-ingest") == {"bootstrap_servers": "kafka:9092"}
    tls = Settings(state_dir=tmp_path, kafka_security_protocol="SASL_SSL")
    with pytest.raises(ConfigError, match="no Kafka login"):
        client_options(tls, "citywatch-ingest")


def test_sasl_ssl_verifies_the_brokers_against_the_given_ca_only(tmp_path: Path) -> None:
    """Strimzi's SCRAM listener is TLS: aiokafka needs an ssl_context, which must check the
    brokers' certificate chain and host name, trusting the cluster CA named."""
    ca = tls_certificates(tmp_path)[0]
    options = client_options(
        _login(kafka_security_protocol="SASL_SSL", kafka_ca_file=ca), "citywatch-ingest"
    )
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "kafka-0:9093,kafka-1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "citywatch-ingest",
        "sasl_plain_password": "pw",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    subjects = [c["subject"] for c in context.get_ca_certs()]
    assert subjects == [((("commonName", "citywatch-test-ca"),),)]


def test_sasl_ssl_without_a_ca_file_trusts_the_system_cas() -> None:
    options = client_options(_login(kafka_security_protocol="SASL_SSL"), "citywatch-alerts")
    context = options["ssl_context"]
    assert options["security_protocol"] == "SASL_SSL"
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    default = ssl.create_default_context()
    assert context.cert_store_stats() == default.cert_store_stats()


def test_a_ca_file_that_is_missing_not_pem_or_without_tls_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    for path in (tmp_path / "missing.crt", junk):
        with pytest.raises(ConfigError, match="CITYWATCH_KAFKA_CA_FILE"):
            client_options(
                _login(kafka_security_protocol="SASL_SSL", kafka_ca_file=path), "citywatch-api"
            )
    with pytest.raises(ConfigError, match="not TLS"):
        client_options(_login(kafka_ca_file=tls_certificates(tmp_path)[0]), "citywatch-api")

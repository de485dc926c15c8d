"""deploy/compose/, deploy/helm/citywatch/, deploy/Dockerfile and deploy/artemis/, checked
without a cluster or a Docker engine (neither runs on this machine or in CI).

- The chart: `helm lint --strict` and `helm template`, then every rendered manifest against
  the Kubernetes API's JSON schemas (`kubernetes-validate`, strict: unknown fields fail), at
  the oldest Kubernetes the chart allows and the newest the package knows.
- The compose file: `docker compose config` (Compose's own loader: schema, interpolation,
  `depends_on`, anchors), then what it resolves to.
- Both: every CITYWATCH_* variable they set names a setting of services/common/settings.py
  and the settings tree accepts the values.
- The brokers' start scripts (compose's Kafka, the Artemis image's): run on this machine
  from the local stack's jars and distribution, with the environment their container gets.

Helm and Compose are built from their Go modules by ./citywatch (deploy/ci-tools.txt); a
missing binary fails these tests, it does not skip them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import BaseModel

from services.common.kafka import client_options
from services.common.settings import (
    KAFKA_ACCOUNTS,
    KAFKA_ADMIN,
    MQTT_ACCOUNTS_FILE,
    REPO_ROOT,
    KafkaAccount,
    Settings,
)
from services.registry.mosquitto import (
    BrokerFiles,
    DeviceLogin,
    ensure_service_accounts,
    hash_password,
    new_password,
    write_broker_files,
)
from services.stack import Kafka, Mosquitto
from services.stack.artemis import (
    ARTEMIS_VERSION,
    TEMPLATES,
    Artemis,
    broker_values,
    java_command,
    render,
)
from services.stack.components import mqtt_broker
from tests.harness import (
    REPO,
    Namespace,
    free_port,
    kafka_admin_answers,
    kafka_produce_as,
    share_stack_logins,
    tls_certificates,
    wait_until,
)
from tests.test_mqtt_auth import close, connect

DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "citywatch"
COMPOSE = DEPLOY / "compose"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schema set
# kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
SERVICES = ("ingest", "processor", "alerts", "api")
# Values a real install must give (the chart refuses to render without them).
SECRET_VALUES = {
    "secrets.databaseUrl": "postgresql://citywatch:pw@db:5432/citywatch",
    "secrets.operatorToken": "t0ken",
    "secrets.mqttIngestPassword": "pw-ingest",
    "secrets.mqttAlertsPassword": "pw-alerts",
}
# Sets of values each rendered, linted and validated (Kafka logins are on by default).
VARIANTS: dict[str, dict[str, str]] = {
    "chart-secret": {},
    "existing-secret-and-rules": {
        "secrets.existingSecret": "citywatch",
        "alerts.rulesConfigMap": "rules",
    },
    "no-migrations": {"migrations.enabled": "false", "ingest.replicas": "1"},
    "kafka-tls-with-cluster-ca": {"kafka.auth.caSecret": "city-cluster-ca-cert"},
    "kafka-scram-without-tls": {"kafka.auth.securityProtocol": "SASL_PLAINTEXT"},
    "kafka-anonymous": {"kafka.auth.enabled": "false"},
}
COMPOSE_KAFKA_PASSWORDS = {
    f"CITYWATCH_KAFKA_{account.removeprefix('citywatch-').upper()}_PASSWORD": f"pw-{account}"
    for account in KAFKA_ACCOUNTS
}
COMPOSE_ENV = {
    "CITYWATCH_DB_PASSWORD": "pw-db",
    "CITYWATCH_GRAFANA_DB_PASSWORD": "pw-grafana",
    "GRAFANA_ADMIN_PASSWORD": "pw-admin",
    **COMPOSE_KAFKA_PASSWORDS,
}


# -- tools -------------------------------------------------------------------------------
def tool(name: str) -> Path:
    """The binary ./citywatch built for `name` at the version deploy/ci-tools.txt names."""
    versions = {
        line.split()[0]: line.split()[2]
        for line in (DEPLOY / "ci-tools.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    cache = Path(os.environ.get("CITYWATCH_CACHE_DIR", Path.home() / ".cache" / "citywatch"))
    path = cache / "tools" / f"{name}-{versions[name]}" / name
    assert path.is_file(), (
        f"{path} is missing: ./citywatch test builds {name} {versions[name]} from its Go "
        f"module (see its build.log there)"
    )
    return path


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def helm_template(*sets: str, values: dict[str, str] | None = None) -> list[dict[str, Any]]:
    flags = [f"--set={k}={v}" for k, v in {**SECRET_VALUES, **(values or {})}.items()]
    out = run(tool("helm"), "template", "cw", CHART, "--namespace", "citywatch", *flags, *sets)
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return helm_template()


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workload(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet"}
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


# -- the settings tree -------------------------------------------------------------------
def setting_exists(variable: str) -> bool:
    """Whether CITYWATCH_A__B names a field of Settings (section `a`, field `b`)."""
    assert variable.startswith("CITYWATCH_"), variable
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("CITYWATCH_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i < len(parts) - 1:
            nested = field.annotation
            if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
                return False
            model = nested
    return True


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings tree built from exactly these CITYWATCH_* variables."""
    for name in list(os.environ):
        if name.startswith("CITYWATCH_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_setting_exists_tells_real_settings_from_typos() -> None:
    """The check below is only as good as this: it must refuse a misspelt key."""
    assert setting_exists("CITYWATCH_KAFKA_BOOTSTRAP")
    assert setting_exists("CITYWATCH_PROCESSOR__BATCH_SIZE")
    assert not setting_exists("CITYWATCH_KAFKA_BOOTSTRAP_SERVERS")
    assert not setting_exists("CITYWATCH_PROCESSOR__BATCHSIZE")
    assert not setting_exists("CITYWATCH_LOG_LEVEL__X")


# -- Helm --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_helm_lint_passes_strict(variant: dict[str, str]) -> None:
    flags = [f"--set={k}={v}" for k, v in {**SECRET_VALUES, **variant}.items()]
    out = run(tool("helm"), "lint", "--strict", CHART, *flags)
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_rendered_manifests_are_valid_kubernetes_objects(
    kube_version: str, variant: dict[str, str]
) -> None:
    docs = helm_template(values=variant)
    kinds = sorted({d["kind"] for d in docs})
    assert {"ConfigMap", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget"} <= set(
        kinds
    )
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} at {kube_version}: {exc}")


def test_every_service_has_a_workload_a_pdb_and_probes(manifests: list[dict[str, Any]]) -> None:
    pdbs = by_kind(manifests, "PodDisruptionBudget")
    for component in SERVICES:
        wl = workload(manifests, component)
        (container,) = wl["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [component]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"], component
        selector = wl["spec"]["selector"]["matchLabels"]
        assert any(p["spec"]["selector"]["matchLabels"] == selector for p in pdbs.values())
    assert workload(manifests, "ingest")["kind"] == "StatefulSet"
    for component in ("processor", "alerts", "api"):
        assert workload(manifests, component)["kind"] == "Deployment"


def test_alerts_standbys_count_as_ready_and_the_others_follow_readyz(
    manifests: list[dict[str, Any]],
) -> None:
    """A standby answers /readyz 503 by design: a readiness probe on it would keep every
    standby unready and stall a rolling update (values.yaml, alerts)."""
    for component in SERVICES:
        (container,) = workload(manifests, component)["spec"]["template"]["spec"]["containers"]
        expected = "/healthz" if component == "alerts" else "/readyz"
        assert container["readinessProbe"]["httpGet"]["path"] == expected, component


def test_each_gateway_pod_has_its_own_stable_mqtt_client_id(
    manifests: list[dict[str, Any]],
) -> None:
    """A gateway's session is persistent: a restarted pod must take its session back under
    the same client id, so the id comes from the StatefulSet's stable pod name."""
    (container,) = workload(manifests, "ingest")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["CITYWATCH_INGEST__CLIENT_ID"]["value"] == "citywatch-$(POD_NAME)"
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_NAME") < names.index("CITYWATCH_INGEST__CLIENT_ID")


def test_chart_sets_only_real_settings_and_they_validate(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = by_kind(manifests, "ConfigMap").values()
    variables = dict(config["data"])
    pods = [d for d in manifests if d["kind"] in {"Deployment", "StatefulSet", "Job"}]
    assert len(pods) == len(SERVICES) + 1  # and the migration Job
    for pod in pods:
        for container in pod["spec"]["template"]["spec"]["containers"]:
            for e in container["env"]:
                if e["name"].startswith("CITYWATCH_"):
                    variables[e["name"]] = e.get("value", "secret")
    unknown = sorted(v for v in variables if not setting_exists(v))
    assert not unknown, f"the chart sets variables no setting reads: {unknown}"
    variables["CITYWATCH_DATABASE_URL"] = SECRET_VALUES["secrets.databaseUrl"]
    variables["CITYWATCH_INGEST__CLIENT_ID"] = "citywatch-cw-citywatch-ingest-0"
    settings = settings_from(variables, monkeypatch)
    assert (
        settings.kafka_bootstrap
        == yaml.safe_load((CHART / "values.yaml").read_text())["kafka"]["bootstrap"]
    )
    assert settings.http_host == "0.0.0.0"


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _kafka_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{principal: pod template} of every pod that talks to Kafka: the services, each as
    its own principal, and the migration Job as the admin."""
    pods = {f"citywatch-{c}": workload(docs, c)["spec"]["template"] for c in SERVICES}
    (job,) = by_kind(docs, "Job").values()
    return pods | {KAFKA_ADMIN: job["spec"]["template"]}


def test_each_pod_logs_in_to_kafka_as_its_own_principal_with_a_password_from_its_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 10 on Kubernetes: each service's rights are its principal's ACLs, so each pod
    logs in as its own principal; the passwords come from the principals' Secrets (Strimzi's
    KafkaUser Secrets, key `password`), never from the ConfigMap; over TLS, the brokers'
    CA is mounted where CITYWATCH_KAFKA_CA_FILE points."""
    docs = helm_template(values={"kafka.auth.caSecret": "city-cluster-ca-cert"})
    (config,) = by_kind(docs, "ConfigMap").values()
    assert not any("PASSWORD" in k for k in config["data"])
    for account, pod in _kafka_pods(docs).items():
        (container,) = pod["spec"]["containers"]
        env = _env(container)
        assert env["CITYWATCH_KAFKA_USERNAME"]["value"] == account
        ref = env["CITYWATCH_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": account, "key": "password"}, account
        # The Job has all of it inline: a hook runs before the ConfigMap exists.
        given = {} if account == KAFKA_ADMIN else dict(config["data"])
        given |= {k: v["value"] for k, v in env.items() if "value" in v}
        settings = settings_from(given | {"CITYWATCH_KAFKA_PASSWORD": "pw"}, monkeypatch)
        assert settings.kafka_login("citywatch-api") == (account, "pw")
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_ca_file is not None
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kafka-ca"]
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "kafka-ca"]
        assert volume["secret"]["secretName"] == "city-cluster-ca-cert"
        (item,) = volume["secret"]["items"]
        assert item["key"] == "ca.crt"
        assert settings.kafka_ca_file == Path(mount["mountPath"]) / item["path"]


def test_kafka_logins_turned_off_leave_no_login_protocol_or_ca(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = helm_template(
        values={"kafka.auth.enabled": "false", "kafka.auth.caSecret": "city-cluster-ca-cert"}
    )
    (config,) = by_kind(docs, "ConfigMap").values()
    kafka = {k for k in config["data"] if k.startswith("CITYWATCH_KAFKA_")}
    assert kafka == {"CITYWATCH_KAFKA_BOOTSTRAP"}
    for account, pod in _kafka_pods(docs).items():
        (container,) = pod["spec"]["containers"]
        given = {k for k in _env(container) if k.startswith("CITYWATCH_KAFKA_")}
        assert given <= {"CITYWATCH_KAFKA_BOOTSTRAP"}, account
        assert not [v for v in pod["spec"]["volumes"] if v["name"] == "kafka-ca"]
    settings = settings_from(dict(config["data"]), monkeypatch)
    assert settings.kafka_login("citywatch-ingest") is None


def test_chart_refuses_a_ca_without_tls_and_an_unknown_protocol() -> None:
    for values, message in (
        ({"kafka.auth.caSecret": "ca", "kafka.auth.securityProtocol": "SASL_PLAINTEXT"}, "TLS"),
        ({"kafka.auth.securityProtocol": "SSL"}, "SASL_SSL or SASL_PLAINTEXT"),
    ):
        flags = [f"--set={k}={v}" for k, v in {**SECRET_VALUES, **values}.items()]
        done = subprocess.run(
            [str(tool("helm")), "template", "cw", str(CHART), *flags],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode != 0 and message in done.stderr, done.stderr


# -- Compose -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose project as `docker compose config` resolves it."""
    out = run(
        tool("docker-compose"),
        "--project-directory",
        COMPOSE,
        "-f",
        COMPOSE / "compose.yaml",
        "config",
        "--format",
        "json",
        env=COMPOSE_ENV,
    )
    return dict(json.loads(out))


def test_compose_refuses_to_start_without_the_passwords() -> None:
    done = subprocess.run(
        [str(tool("docker-compose")), "-f", str(COMPOSE / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in COMPOSE_ENV},
    )
    assert done.returncode != 0
    for name in ("CITYWATCH_DB_PASSWORD", *COMPOSE_KAFKA_PASSWORDS):
        assert name in done.stderr, name


def test_compose_runs_the_whole_platform_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "timescaledb",
        "mqtt",
        "prometheus",
        "grafana",
        "init",
        *SERVICES,
    }
    for name, svc in services.items():
        if name != "init":  # a one-shot: the others wait for it to exit 0
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in SERVICES:
        assert services[name]["command"] == [name]
        assert services[name]["depends_on"]["init"]["condition"] == (
            "service_completed_successfully"
        )
    for name in (*SERVICES, "init", "mqtt"):  # the images, from the repository
        build = services[name]["build"]
        assert (Path(build["context"]).resolve(), build["dockerfile"]) == (
            REPO.resolve(),
            "deploy/artemis/Dockerfile" if name == "mqtt" else "deploy/Dockerfile",
        )
    for name in SERVICES:
        assert services[name]["depends_on"]["mqtt"]["condition"] == "service_healthy"
    defaults = Settings()
    for name in SERVICES:  # what the health check asks is where the service listens
        port = getattr(defaults, name).http_port
        assert services[name]["environment"]["PORT"] == str(port), name
    template = _compose_kafka_files(compose)[1].read_text().splitlines()
    assert "process.roles=broker,controller" in template
    alerts_check = " ".join(services["alerts"]["healthcheck"]["test"])
    assert "/healthz" in alerts_check and "/readyz" not in alerts_check


def test_compose_sets_only_real_settings_and_they_validate(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*SERVICES, "init"):
        env = {
            k: str(v)
            for k, v in compose["services"][name]["environment"].items()
            if k.startswith("CITYWATCH_")
        }
        unknown = sorted(v for v in env if not setting_exists(v))
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
        settings = settings_from(env, monkeypatch)
        assert settings.mqtt_services_port == 1884
        assert settings.database_dsn.endswith("@timescaledb:5432/citywatch")


def _compose_kafka_login(compose: dict[str, Any], service: str) -> tuple[str, str] | None:
    env = compose["services"][service]["environment"]
    settings = Settings.model_validate(
        {
            "kafka_username": env.get("CITYWATCH_KAFKA_USERNAME"),
            "kafka_password": env.get("CITYWATCH_KAFKA_PASSWORD"),
            "kafka_accounts": {"none": "x"},  # keeps any state folder's file out of it
        }
    )
    return settings.kafka_login("citywatch-ingest")  # the username given wins for any


def test_compose_services_log_in_to_kafka_as_their_own_principal(
    compose: dict[str, Any],
) -> None:
    """As on the local stack, each service has its own principal (its ACLs are its rights),
    and only `init`, which creates the topics and the ACLs, is the super user. The broker
    gets every principal's password from the same .env values."""
    for service in SERVICES:
        account = f"citywatch-{service}"
        assert _compose_kafka_login(compose, service) == (account, f"pw-{account}"), service
    assert _compose_kafka_login(compose, "init") == (KAFKA_ADMIN, f"pw-{KAFKA_ADMIN}")
    broker = compose["services"]["kafka"]["environment"]
    assert {k: v for k, v in broker.items() if k in COMPOSE_KAFKA_PASSWORDS} == (
        COMPOSE_KAFKA_PASSWORDS
    )
    assert "citywatch topics ensure" in (COMPOSE / "init.sh").read_text()


def _compose_kafka_files(compose: dict[str, Any]) -> tuple[Path, Path]:
    """(the start script, the server.properties template) the `kafka` container runs."""
    kafka = compose["services"]["kafka"]
    mounts = {v["target"]: Path(v["source"]) for v in kafka["volumes"] if v["type"] == "bind"}
    script = mounts[kafka["entrypoint"][-1]]
    return script, mounts["/opt/citywatch/server.properties"]


def test_compose_kafka_runs_the_local_stacks_broker_configuration(
    compose: dict[str, Any],
) -> None:
    """The compose broker is configured by the very file `citywatch stack up` fills in
    (SCRAM logins, the StandardAuthorizer, the admin super user), not by the image's
    KAFKA_* variables, so the two cannot drift apart."""
    kafka = compose["services"]["kafka"]
    script, template = _compose_kafka_files(compose)
    assert script.resolve() == (COMPOSE / "kafka" / "start.sh").resolve()
    assert template.resolve() == (DEPLOY / "kafka" / "server.properties").resolve()
    properties = template.read_text()
    for line in (
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:@ADMIN@",
        "allow.everyone.if.no.acl.found=false",
    ):
        assert line in properties.splitlines(), line
    # The image's KAFKA_* -> server.properties translation is not used: nothing may hide there.
    image_settings = {k for k in kafka["environment"] if k.startswith("KAFKA_")}
    assert image_settings == {"KAFKA_HOST", "KAFKA_PORT"}
    check = " ".join(kafka["healthcheck"]["test"])
    # Where start.sh writes the admin's client login by default (KAFKA_CONFIG_DIR).
    assert "--command-config /opt/kafka/config/citywatch/client.properties" in check
    assert "conf=${KAFKA_CONFIG_DIR:-/opt/kafka/config/citywatch}" in script.read_text()


async def test_compose_kafka_script_runs_a_broker_that_takes_only_the_principals_logins(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No container runs here, so the compose `kafka` container's start script runs on this
    machine, with the environment compose gives it, from the local stack's jars: it formats
    the storage with the five principals and starts the broker. Then `citywatch topics
    ensure` with the `init` container's login creates the topics and the ACLs, and the
    services' logins from compose have the local stack's rights: only the gateway writes
    readings, only the alerts service writes alerts; a wrong password or none is refused."""
    script, template = _compose_kafka_files(compose)
    env = _local_broker_env(compose, template, tmp_path)
    bootstrap = f"127.0.0.1:{env['KAFKA_PORT']}"
    services = (*SERVICES, "init")
    envs = {name: _compose_env(compose, name, bootstrap, tmp_path) for name in services}
    # Each container's settings, as it builds them from its environment.
    logins = {name: settings_from(envs[name], monkeypatch) for name in services}
    admin = logins["init"]

    async def answers(broker: asyncio.subprocess.Process, log: Path) -> None:
        async def up() -> bool:
            assert broker.returncode is None, f"the compose Kafka exited: see {log}"
            return await kafka_admin_answers(**client_options(admin, KAFKA_ADMIN))

        await wait_until(up, timeout=90, what="the compose Kafka answering the admin")

    principals: dict[KafkaAccount, Settings] = {
        "citywatch-ingest": logins["ingest"],
        "citywatch-processor": logins["processor"],
        "citywatch-alerts": logins["alerts"],
        "citywatch-api": logins["api"],
    }
    topics = admin.topics
    async with _compose_broker(script, env, tmp_path / "start.log") as (broker, log):
        await answers(broker, log)
        for name in ("server.properties", "client.properties"):  # they hold passwords
            assert (tmp_path / "config" / name).stat().st_mode & 0o077 == 0, name
        # The health check's login (`--command-config`) is the admin's.
        client = (tmp_path / "config" / "client.properties").read_text()
        password = COMPOSE_KAFKA_PASSWORDS["CITYWATCH_KAFKA_ADMIN_PASSWORD"]
        assert f'username="{KAFKA_ADMIN}" password="{password}";' in client
        assert not await kafka_admin_answers(bootstrap_servers=bootstrap)
        ingest = client_options(logins["ingest"], "citywatch-ingest")
        assert await kafka_admin_answers(**ingest)
        assert not await kafka_admin_answers(**{**ingest, "sasl_plain_password": "guess"})
        # What the `init` container runs, with its login; every `docker compose up` again.
        cli = [str(Path(sys.executable).parent / "citywatch"), "topics", "ensure"]
        base = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
        for _ in range(2):
            done = await asyncio.to_thread(
                subprocess.run,
                cli,
                env=base | envs["init"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        refused: dict[str, tuple[KafkaAccount, ...]] = {
            topics.readings: ("citywatch-processor", "citywatch-alerts", "citywatch-api"),
            topics.alerts: ("citywatch-ingest", "citywatch-processor", "citywatch-api"),
        }
        for topic, accounts in refused.items():
            for account in accounts:
                with pytest.raises(TopicAuthorizationFailedError):
                    await kafka_produce_as(principals[account], account, topic)
        await kafka_produce_as(principals["citywatch-ingest"], "citywatch-ingest", topics.readings)
        await kafka_produce_as(principals["citywatch-alerts"], "citywatch-alerts", topics.alerts)
        # At the source: only the permitted writers' records are there.
        assert await Namespace(admin).end_offsets(topics.readings) == 1
        assert await Namespace(admin).end_offsets(topics.alerts) == 1
    # A restart (a crash, a `docker compose restart`): the storage is not formatted again,
    # and the logins and ACLs in it hold.
    async with _compose_broker(script, env, tmp_path / "restart.log") as (broker, log):
        await answers(broker, log)
        with pytest.raises(TopicAuthorizationFailedError):
            await kafka_produce_as(principals["citywatch-api"], "citywatch-api", topics.readings)
        await kafka_produce_as(principals["citywatch-ingest"], "citywatch-ingest", topics.readings)
        assert await Namespace(admin).end_offsets(topics.readings) == 2


async def test_a_service_logs_in_over_tls_trusting_the_cluster_ca_only(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Strimzi's SCRAM listener is TLS (the chart's default): CITYWATCH_KAFKA_SECURITY_PROTOCOL
    =SASL_SSL with the cluster's CA in CITYWATCH_KAFKA_CA_FILE, against a real broker: the
    compose start script's, its client listener switched to SASL_SSL with a certificate the
    test's own CA signed. Trusting only the system's CAs, or no TLS, gets no connection."""
    script, template = _compose_kafka_files(compose)
    ca, server = tls_certificates(tmp_path)
    properties = [
        line
        for line in template.read_text().splitlines()
        if not line.startswith("listener.security.protocol.map=")
    ]
    properties += [
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_SSL",
        "listener.name.sasl_plaintext.ssl.keystore.type=PEM",
        f"listener.name.sasl_plaintext.ssl.keystore.location={server}",
        # The broker's own inter-broker connection over the same listener.
        "listener.name.sasl_plaintext.ssl.truststore.type=PEM",
        f"listener.name.sasl_plaintext.ssl.truststore.location={ca}",
    ]
    tls_template = tmp_path / "server-tls.properties"
    tls_template.write_text("\n".join(properties) + "\n")
    env = _local_broker_env(compose, tls_template, tmp_path)
    login = compose["services"]["ingest"]["environment"]

    def ingest(**settings: Any) -> dict[str, Any]:
        return client_options(
            Settings.model_validate(
                {
                    "kafka_bootstrap": f"127.0.0.1:{env['KAFKA_PORT']}",
                    "kafka_username": login["CITYWATCH_KAFKA_USERNAME"],
                    "kafka_password": login["CITYWATCH_KAFKA_PASSWORD"],
                    "state_dir": str(tmp_path),
                    **settings,
                }
            ),
            "citywatch-ingest",
        )

    async with _compose_broker(script, env, tmp_path / "start.log") as (broker, log):
        trusting = ingest(kafka_security_protocol="SASL_SSL", kafka_ca_file=ca)

        async def up() -> bool:
            assert broker.returncode is None, f"the Kafka exited: see {log}"
            return await kafka_admin_answers(**trusting)

        await wait_until(up, timeout=90, what="Kafka answering the ingest login over TLS")
        assert not await kafka_admin_answers(**{**trusting, "sasl_plain_password": "guess"})
        assert not await kafka_admin_answers(**ingest(kafka_security_protocol="SASL_SSL"))
        assert not await kafka_admin_answers(**ingest())  # SASL_PLAINTEXT to a TLS port


def _local_broker_env(compose: dict[str, Any], template: Path, folder: Path) -> dict[str, str]:
    """The environment compose gives the `kafka` container, for a run of its start script on
    this machine: the local stack's jars, free loopback ports, folders under `folder`."""
    port = free_port()
    while not _port_free(port + 1):  # the controller listens on the next port
        port = free_port()
    return {
        "PATH": os.environ["PATH"],
        **{k: str(v) for k, v in compose["services"]["kafka"]["environment"].items()},
        "KAFKA_HOST": "127.0.0.1",
        "KAFKA_PORT": str(port),
        "KAFKA_TEMPLATE": str(template),
        "KAFKA_LIBS": str(Kafka(Settings()).libs()),
        "KAFKA_DATA_DIR": str(folder / "data"),
        "KAFKA_CONFIG_DIR": str(folder / "config"),
        "KAFKA_LOGS_DIR": str(folder / "logs"),
        "KAFKA_LOG4J": str(DEPLOY / "kafka" / "log4j2.properties"),
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
    }


@asynccontextmanager
async def _compose_broker(
    script: Path, env: dict[str, str], log: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """A compose broker's start script (Kafka's, Artemis's) as a process of its own, stopped
    (SIGTERM: the broker's shutdown hook) on the way out."""
    with log.open("w") as out:
        broker = await asyncio.create_subprocess_exec(
            "/bin/sh", str(script), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield broker, log
    finally:
        if broker.returncode is None:
            broker.terminate()
        try:
            await asyncio.wait_for(broker.wait(), 60)
        except TimeoutError:
            broker.kill()
            await broker.wait()


def test_compose_kafka_refuses_storage_formatted_without_logins(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """A `kafka` volume formatted by the compose file of before (no SCRAM credentials) would
    start a broker no principal can log in to: the script stops with the fix instead."""
    script, template = _compose_kafka_files(compose)
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.properties").write_text("version=1\n")
    env = {
        "PATH": os.environ["PATH"],
        **{k: str(v) for k, v in compose["services"]["kafka"]["environment"].items()},
        "KAFKA_TEMPLATE": str(template),
        "KAFKA_DATA_DIR": str(data),
        "KAFKA_CONFIG_DIR": str(tmp_path / "config"),
        "KAFKA_LOGS_DIR": str(tmp_path / "logs"),
        "KAFKA_LIBS": str(tmp_path / "no-jars"),  # it must stop before it needs them
    }
    done = subprocess.run(
        ["/bin/sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "formatted without CityWatch's logins" in done.stderr


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _compose_env(
    compose: dict[str, Any], service: str, bootstrap: str, state: Path
) -> dict[str, str]:
    """A compose service's CITYWATCH_* environment, with this machine's broker and a state
    folder of the test's own."""
    env = {
        k: str(v)
        for k, v in compose["services"][service]["environment"].items()
        if k.startswith("CITYWATCH_")
    }
    return env | {"CITYWATCH_KAFKA_BOOTSTRAP": bootstrap, "CITYWATCH_STATE_DIR": str(state)}


@pytest.mark.stack
async def test_compose_init_migrates_and_writes_the_broker_files_and_the_token(
    compose: dict[str, Any], migrated: Settings, tmp_path: Path
) -> None:
    """deploy/compose/init.sh, run as the `init` container runs it, against the test stack:
    the broker (compose's `mqtt`, so not ours to signal) gets both listeners' password and
    ACL files where the `broker` volume is, Prometheus a readable copy of the operator
    token, and a second run (every `docker compose up`) succeeds too."""
    state, token_dir = tmp_path / "state", tmp_path / "prometheus"
    token_dir.mkdir()
    share_stack_logins(migrated, state)  # the stack's Kafka takes SCRAM logins only
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "CITYWATCH_STATE_DIR": str(state),
        "CITYWATCH_DATABASE_URL": migrated.database_dsn,
        "CITYWATCH_KAFKA_BOOTSTRAP": migrated.kafka_bootstrap,
        # The broker's endpoints and kind, and no simulator account, as compose sets them.
        **{
            k: str(v)
            for k, v in compose["services"]["init"]["environment"].items()
            if k.startswith("CITYWATCH_MQTT_")
        },
        "PROMETHEUS_TOKEN_DIR": str(token_dir),
    }
    for _ in range(2):
        done = await asyncio.to_thread(
            subprocess.run,
            ["/bin/sh", str(COMPOSE / "init.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # Where compose mounts the `broker` volume, relative to the state folder.
    (mount,) = [v for v in compose["services"]["init"]["volumes"] if v["source"] == "broker"]
    broker = state / Path(mount["target"]).relative_to("/var/lib/citywatch")
    for name in ("devices.passwd", "devices.acl", "services.passwd", "services.acl"):
        assert (broker / name).is_file(), name
    passwd = (broker / "services.passwd").read_text()
    assert passwd.startswith("citywatch-") and "$7$" in passwd
    assert "citywatch-ingest:" in passwd and "citywatch-simulator" not in passwd
    token = (token_dir / "operator-token").read_text().strip()
    assert token == (state / "operator-token").read_text().strip() != ""


# -- the compose broker: Artemis, from deploy/artemis/ ------------------------------------
ARTEMIS = DEPLOY / "artemis"
ARTEMIS_SCRIPT = ARTEMIS / "start.sh"


def _script_default(variable: str) -> str:
    """The default start.sh gives `variable` (`name=${VARIABLE:-default}`)."""
    found = re.search(rf"=\$\{{{variable}:-([^}}]+)\}}", ARTEMIS_SCRIPT.read_text())
    assert found, variable
    return found.group(1)


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{volume or bind source: mount} of a compose service."""
    return {str(v["source"]): v for v in service["volumes"]}


def test_compose_broker_reads_the_registry_files_where_the_services_write_them(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CityWatch containers (`init`, and `citywatch devices provision` in any of them)
    write the registry's password and ACL files into the folder of the broker their settings
    name (CITYWATCH_MQTT_BROKER): the `broker` volume must be mounted exactly there, and in
    the broker's container where start.sh reads them; the journal has a volume of its own
    where start.sh keeps it. The image's folders are start.sh's defaults."""
    services = compose["services"]
    mqtt = services["mqtt"]
    for name in (*SERVICES, "init"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        settings = settings_from(
            {k: v for k, v in env.items() if k.startswith("CITYWATCH_")}, monkeypatch
        )
        assert settings.mqtt_broker == "artemis", name
        assert _mounts(services[name])["broker"]["target"] == str(mqtt_broker(settings).dir)
    files = _mounts(mqtt)["broker"]
    assert (
        files["target"]
        == mqtt["environment"]["ARTEMIS_FILES"]
        == (_script_default("ARTEMIS_FILES"))
    )
    assert files["read_only"]
    assert _mounts(mqtt)["artemis"]["target"] == _script_default("ARTEMIS_INSTANCE")
    assert [p["target"] for p in mqtt["ports"]] == [1883]  # devices; 1884 stays internal


def test_broker_image_is_the_stacks_artemis_with_the_files_start_sh_reads() -> None:
    """deploy/artemis/Dockerfile: the official image of the version the local stack runs
    (ARTEMIS_VERSION), the security manager compiled against that image's jars, the files
    start.sh reads where its defaults look, run as the CityWatch image's uid."""
    dockerfile = (ARTEMIS / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.MULTILINE)
    assert stages == [
        (f"apache/activemq-artemis:{ARTEMIS_VERSION}", "broker"),
        ("eclipse-temurin:21-jdk", "plugin"),
        ("broker", ""),
    ]
    assert "COPY --from=broker /opt/activemq-artemis/lib " in dockerfile
    assert _script_default("ARTEMIS_HOME") == "/opt/activemq-artemis"
    copies = {
        dest: sources.split()
        for sources, dest in re.findall(r"^COPY (?!--from)(.+) (\S+)$", dockerfile, re.MULTILINE)
    }
    templates = _script_default("ARTEMIS_TEMPLATES")
    names = {Path(src).name for src in copies[f"{templates}/"]}
    assert names == {*TEMPLATES, "log4j2-console.properties"}
    for src in (src for sources in copies.values() for src in sources):
        assert (REPO / src).exists(), src
    plugin = _script_default("ARTEMIS_PLUGIN")
    assert re.search(rf"^COPY --from=plugin \S+\.jar {plugin}/\S+\.jar$", dockerfile, re.M)
    assert copies["/opt/citywatch/start.sh"] == ["deploy/artemis/start.sh"]
    assert 'ENTRYPOINT ["/bin/sh", "/opt/citywatch/start.sh"]' in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users[-1] == "10001:10001"
    assert "--uid 10001" in (DEPLOY / "Dockerfile").read_text()


def test_broker_script_refuses_missing_files_and_unfilled_placeholders(tmp_path: Path) -> None:
    """start.sh stops, with the reason, before it runs a broker nobody could log in to (the
    registry's files not written yet) or one configured by a template it does not fully
    fill in (a placeholder added to deploy/artemis/ but not to the script)."""
    files, templates = tmp_path / "files", tmp_path / "templates"
    files.mkdir()
    templates.mkdir()
    for name in TEMPLATES:
        shutil.copy(ARTEMIS / name, templates / name)
    env = {
        "PATH": os.environ["PATH"],
        "ARTEMIS_FILES": str(files),
        "ARTEMIS_TEMPLATES": str(templates),
        "ARTEMIS_INSTANCE": str(tmp_path / "instance"),
        "ARTEMIS_HOME": str(tmp_path / "no-broker"),  # it must stop before it needs it
    }

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(ARTEMIS_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = start()
    assert done.returncode == 1 and f"{files}/devices.passwd is missing" in done.stderr
    write_broker_files(files, {}, [], owner=None)
    with (templates / "management.xml").open("a") as f:
        f.write("<!-- @NEW_SETTING@ -->\n")
    done = start()
    assert done.returncode == 1, done.stderr
    assert "management.xml has a placeholder this script does not fill" in done.stderr


def test_artemis_kubernetes_manifests_are_valid_and_fit_the_image_and_the_chart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/artemis/README.md's StatefulSet and Service: valid Kubernetes objects; the
    `citywatch` containers write the registry's files where the broker's container reads
    them (start.sh's default) with the service accounts where the settings look, the journal
    on the claim where start.sh keeps it, as the images' uid; the chart's MQTT endpoints are
    that Service's two ports."""
    text = (ARTEMIS / "README.md").read_text()
    docs = [
        doc
        for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        for doc in yaml.safe_load_all(block)
        if doc
    ]
    for kube_version in KUBE_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, kube_version, strict=True)
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (broker,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = broker["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    containers = {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}
    artemis = containers.pop("artemis")
    mounts = {m["name"]: m for m in artemis["volumeMounts"]}
    assert mounts["journal"]["mountPath"] == _script_default("ARTEMIS_INSTANCE")
    (claim,) = broker["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "journal"
    files = mounts["registry-files"]
    assert files["mountPath"] == _script_default("ARTEMIS_FILES") and files["readOnly"]
    assert set(containers) == {"registry-files", "registry"}
    for name, container in containers.items():
        env = {e["name"]: e.get("value", "secret") for e in container["env"]}
        settings = settings_from(
            env | {"CITYWATCH_DATABASE_URL": SECRET_VALUES["secrets.databaseUrl"]}, monkeypatch
        )
        where = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert where["registry-files"] == str(mqtt_broker(settings).dir), name
        assert where["registry"] == str(settings.state_dir / MQTT_ACCOUNTS_FILE), name
        assert "devices sync" in " ".join(container.get("args", []) + container.get("command", []))
    values = yaml.safe_load((CHART / "values.yaml").read_text())["mqtt"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert values == {
        "url": f"mqtt://{host}:{ports['devices']}",
        "servicesUrl": f"mqtt://{host}:{ports['services']}",
    }


def _artemis_env(compose: dict[str, Any], folder: Path) -> dict[str, str]:
    """The environment compose gives the `mqtt` container, for a run of its start script on
    this machine: the local stack's Artemis distribution and security manager (fetched and
    compiled into the cache), deploy/artemis/ as the templates, free loopback ports."""
    part = Artemis(Settings())
    home = part.home()
    return {
        "PATH": os.environ["PATH"],
        **{k: str(v) for k, v in compose["services"]["mqtt"]["environment"].items()},
        "ARTEMIS_HOME": str(home),
        "ARTEMIS_PLUGIN": str(part.plugin(home)),
        "ARTEMIS_TEMPLATES": str(ARTEMIS),
        "ARTEMIS_INSTANCE": str(folder / "instance"),
        "ARTEMIS_FILES": str(folder / "files"),
        "ARTEMIS_DEVICES_HOST": "127.0.0.1",
        "ARTEMIS_DEVICES_PORT": str(free_port()),
        "ARTEMIS_SERVICES_HOST": "127.0.0.1",
        "ARTEMIS_SERVICES_PORT": str(free_port()),
    }


def _runs_as_the_stack(env: dict[str, str], pid: int) -> None:
    """The broker start.sh started (`pid`, the script's own: it execs java) is configured
    and run as the local stack's (services/stack/artemis.py): the same templates filled in
    with the same values, the same JVM command."""
    instance = Path(env["ARTEMIS_INSTANCE"])
    etc = instance / "etc"
    values = broker_values(
        devices=(env["ARTEMIS_DEVICES_HOST"], int(env["ARTEMIS_DEVICES_PORT"])),
        services=(env["ARTEMIS_SERVICES_HOST"], int(env["ARTEMIS_SERVICES_PORT"])),
        data_dir=instance / "data",
        etc=etc,
        files=BrokerFiles(Path(env["ARTEMIS_FILES"])),
        max_packet_size=Mosquitto(Settings()).max_packet_size,
    )
    for name in TEMPLATES:
        assert (etc / name).read_text() == render(name, values), name
        assert (etc / name).stat().st_mode & 0o077 == 0, name
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert cmdline == java_command(
        home=Path(env["ARTEMIS_HOME"]),
        instance=instance,
        etc=etc,
        plugin=Path(env["ARTEMIS_PLUGIN"]),
        log4j=ARTEMIS / "log4j2-console.properties",
        properties=[],
    )


async def test_compose_broker_takes_only_registry_logins_and_keeps_acked_readings_over_a_crash(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """No container runs here, so the image's start script runs on this machine, with the
    environment compose gives the `mqtt` container, against the distribution and security
    manager of the local stack's Artemis, with files written as `init` writes them. It
    configures and runs the broker exactly as `citywatch stack up` does (the same filled-in
    templates, the same JVM command); compose's health check passes once both acceptors
    are up. A service account logs in on the services port only, a device on the device
    port only and with its username as client id, a wrong password is refused; what the
    device publishes reaches the gateway's login. Then issue 10, point 3, through the
    compose configuration: a reading the broker acknowledged for a stopped gateway's
    persistent session survives a SIGKILL of the broker and is delivered after the restart."""
    env = await asyncio.to_thread(_artemis_env, compose, tmp_path)
    dport, sport = int(env["ARTEMIS_DEVICES_PORT"]), int(env["ARTEMIS_SERVICES_PORT"])
    files = Path(env["ARTEMIS_FILES"])
    # What `init` writes (compose has no simulator account), for one provisioned device.
    accounts = ensure_service_accounts(tmp_path / "state")
    device, password = "buoy-compose-1", new_password()
    login = DeviceLogin(device, "water", hash_password(password))
    write_broker_files(files, accounts, [login], owner=None, simulator=False)
    ingest = ("citywatch-ingest", accounts["citywatch-ingest"])
    gateway_id = "citywatch-ingest-compose"
    topic = login.uplink_topic
    check = [
        a.replace("/1883", f"/{dport}").replace("/1884", f"/{sport}")
        for a in compose["services"]["mqtt"]["healthcheck"]["test"][1:]
    ]

    def healthy() -> bool:
        done = subprocess.run(check, capture_output=True, timeout=10, check=False)
        return done.returncode == 0

    assert not healthy()  # nothing listens yet: the check can fail

    async def up(broker: asyncio.subprocess.Process, log: Path) -> None:
        async def answers() -> bool:
            assert broker.returncode is None, f"the compose broker exited: see {log}"
            return await asyncio.to_thread(healthy)

        await wait_until(answers, timeout=120, what="compose's health check on the broker")

    async with _compose_broker(ARTEMIS_SCRIPT, env, tmp_path / "start.log") as (broker, log):
        await up(broker, log)
        await asyncio.to_thread(_runs_as_the_stack, env, broker.pid)
        # The gateway's persistent session, subscribed to the device's uplink.
        gateway = await asyncio.to_thread(
            connect, sport, *ingest, gateway_id, session_expiry_s=3600
        )
        sender = await asyncio.to_thread(connect, dport, device, password)
        try:
            assert not gateway.refused and not sender.refused
            await asyncio.to_thread(gateway.subscribe, topic)
            await asyncio.to_thread(sender.publish, topic, b"live")
            await gateway.wait_for(b"live")
            for port, username, secret, client_id in (
                (dport, device, password + "x", None),  # a wrong password
                (dport, device, password, "someone-else"),  # not its username as client id
                (sport, device, password, None),  # a device on the services port
                (dport, *ingest, None),  # a service account on the device port
            ):
                refused = await asyncio.to_thread(connect, port, username, secret, client_id)
                assert refused.refused, (port, username, client_id)
            close(gateway)  # the gateway stops; its session stays
            sent = sender.client.publish(topic, b"acked-before-the-crash", qos=1)
            await asyncio.to_thread(sent.wait_for_publish, 10)
            assert sent.is_published()  # the broker's PUBACK
        finally:
            close(sender, gateway)  # closing twice is harmless
        broker.kill()  # SIGKILL: no shutdown hook, as a crash or a power cut
        await broker.wait()
    async with _compose_broker(ARTEMIS_SCRIPT, env, tmp_path / "restart.log") as (broker, log):
        await up(broker, log)
        gateway = await asyncio.to_thread(
            connect, sport, *ingest, gateway_id, session_expiry_s=3600
        )
        try:
            assert not gateway.refused
            await gateway.wait_for(b"acked-before-the-crash", timeout=30)
        finally:
            close(gateway)


def test_compose_prometheus_scrapes_the_same_jobs_and_promtool_accepts_it(
    tmp_path: Path,
) -> None:
    local = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ours = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())

    def jobs(config: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
        return {
            j["job_name"]: (
                j.get("authorization", {}).get("type", ""),
                [t.rpartition(":")[2] for sc in j["static_configs"] for t in sc["targets"]],
            )
            for j in config["scrape_configs"]
        }

    assert jobs(ours) == jobs(local)
    assert ours["rule_files"] == local["rule_files"]
    # promtool opens the token file the config names: point it at one here.
    token = tmp_path / "operator-token"
    token.write_text("t0ken\n")
    text = (COMPOSE / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/citywatch/operator-token", str(token))
    )
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package `prometheus`"
    run(promtool, "check", "config", tmp_path / "prometheus.yml")


def test_compose_grafana_datasources_match_the_provisioning_but_for_hosts() -> None:
    local = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "citywatch.yaml").read_text()
    )
    ours = yaml.safe_load((COMPOSE / "grafana" / "datasources.yaml").read_text())

    def without_hosts(config: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in ds.items() if k not in {"url", "user"}}
            for ds in config["datasources"]
        ]

    assert without_hosts(ours) == without_hosts(local)


# -- the image ---------------------------------------------------------------------------
def test_image_carries_every_file_the_settings_point_at_and_runs_as_non_root() -> None:
    """The image installs the repository in place: every default path of the settings must
    lie in a folder the Dockerfile copies and .dockerignore does not drop."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \S+$", dockerfile, re.MULTILINE))
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()
    }
    s = Settings()
    paths = [
        s.city_file,
        s.quality_file,
        s.alerts.rules_file,
        s.delivery.subscribers_file,
        s.api.geojson_file,
        REPO_ROOT / "services" / "common" / "migrations",
    ]
    for path in paths:
        top = path.relative_to(REPO_ROOT).parts[0]
        assert top in copied and top not in ignored, path
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r'^ENTRYPOINT \["citywatch"\]$', dockerfile, re.MULTILINE)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["citywatch"] == "services.cli:main"

"""The three parts of the local stack, each as plain processes under one state folder.

Every component follows the same contract: `up()` is idempotent (already running and
answering: nothing to do; stale pid file: removed; running but not answering: restarted),
waits until the part really answers, and on failure raises a `StateError` that names the
part, shows the last lines of its log and says how to fix it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from services.common.errors import StateError
from services.common.kafka import TopicNames, ensure_topics, grant, kafka_answers, topic_specs
from services.common.settings import (
    KAFKA_ACCOUNTS,
    KAFKA_ACCOUNTS_FILE,
    KAFKA_ADMIN,
    POSTGRES_ACCOUNTS_FILE,
    POSTGRES_SUPERUSER,
    REPO_ROOT,
    Settings,
)
from services.registry.mosquitto import BrokerFiles, reload_broker
from services.stack.process import (
    is_loopback,
    pid_alive,
    port_open,
    read_pid,
    run,
    spawn,
    tail,
    terminate,
    wait_for,
)
from services.stack.secrets import ensure_accounts, write_secret

DEPLOY = REPO_ROOT / "deploy"


@dataclass(frozen=True)
class Status:
    name: str
    endpoint: str
    managed: bool
    pid: int | None
    answers: bool
    detail: str = ""


class Component:
    name = "component"
    marker = ""
    start_timeout_s = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_dir / self.name
        self.log_file = self.dir / f"{self.name}.log"
        self.pid_file = self.dir / f"{self.name}.pid"

    # -- to implement ------------------------------------------------------------------------
    @property
    def host(self) -> str:
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def listens_on(self) -> list[tuple[str, int]]:
        """Every (host, port) the part listens on once started."""
        return [(self.host, self.port)]

    def _launch(self) -> None:
        raise NotImplementedError

    def _after_start(self) -> None:
        """One-time set-up once the part answers (topics, roles)."""

    def _detail(self) -> str:
        return ""

    def logs(self) -> list[Path]:
        return [self.log_file, self.dir / "stdout.log"]

    # -- the shared contract -------------------------------------------------------------
    @property
    def managed(self) -> bool:
        """Only endpoints on this machine's loopback are ours to start and stop."""
        return is_loopback(self.host)

    def pid(self) -> int | None:
        return read_pid(self.pid_file, self.marker)

    def up(self) -> Status:
        if not self.managed:
            if not self.answers():
                raise StateError(
                    f"{self.name}: the external endpoint {self.endpoint} does not answer. "
                    "Check the CITYWATCH_* endpoint setting or that service."
                )
            self._after_start()
            return self.status()
        pid = self.pid()
        if pid is not None and not wait_for(self.answers, self.start_timeout_s):
            # Half-started or hung since a crash: start it afresh.
            terminate(pid)
            pid = None
        if pid is None:
            self.refuse_taken_ports()
            self.dir.mkdir(parents=True, exist_ok=True)
            self._launch()
            if not wait_for(self.answers, self.start_timeout_s, interval_s=0.2):
                pid = self.pid()
                alive = "is running but does not answer" if pid else "exited"
                logs = "\n".join(
                    f"Last lines of {p}:\n{tail(p)}" for p in self.logs() if p.exists()
                )
                raise StateError(
                    f"{self.name} did not start: it {alive} after {self.start_timeout_s:.0f}s.\n"
                    f"{logs}\n"
                    f"Fix what the log says, then run `citywatch stack up` again "
                    f"(`citywatch stack down` first if a process is stuck)."
                )
        self._after_start()
        return self.status()

    def refuse_taken_ports(self) -> None:
        """Before a start: a port another process holds is an error that says so."""
        for host, port in self.listens_on():
            if port_open(host, port):
                raise StateError(
                    f"{self.name}: port {host}:{port} is already taken by a process "
                    f"that is not this stack's. Stop it, or point CityWatch at another port "
                    f"(see the README's configuration table)."
                )

    def down(self) -> None:
        pid = self.pid()
        if pid is not None:
            terminate(pid)
        self.pid_file.unlink(missing_ok=True)

    def statuses(self) -> list[Status]:
        """One line of `citywatch stack status` per member (a cluster has several)."""
        return [self.status()]

    def status(self) -> Status:
        answers = self.answers()
        return Status(
            self.name,
            self.endpoint,
            self.managed,
            self.pid(),
            answers,
            self._detail() if answers else "",
        )


def _mqtt_answers(host: str, port: int) -> bool:
    """A real MQTT 3.1.1 CONNECT (anonymous), answered by a CONNACK: return code 0, or
    4/5 (bad credentials / not authorised) from a broker that requires a login."""
    client_id = b"citywatch-stack-probe"
    var = b"\x00\x04MQTT\x04\x02\x00\x0a"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = var + payload
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(packet)
            connack = sock.recv(4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    return connack[:2] == b"\x20\x02" and connack[3:4] in (b"\x00", b"\x04", b"\x05")


class Mosquitto(Component):
    name = "mosquitto"
    marker = "mosquitto"
    start_timeout_s = 20.0

    @property
    def host(self) -> str:
        return self.settings.mqtt_host

    @property
    def port(self) -> int:
        return self.settings.mqtt_port

    @property
    def services_host(self) -> str:
        return self.settings.mqtt_services_host

    @property
    def services_port(self) -> int:
        return self.settings.mqtt_services_port

    @property
    def endpoint(self) -> str:
        return (
            f"mqtt://{self.host}:{self.port} (devices), "
            f"mqtt://{self.services_host}:{self.services_port} (services)"
        )

    def listens_on(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), (self.services_host, self.services_port)]

    def answers(self) -> bool:
        """Both listeners answer an MQTT CONNECT."""
        return _mqtt_answers(self.host, self.port) and _mqtt_answers(
            self.services_host, self.services_port
        )

    @property
    def max_packet_size(self) -> int:
        """The largest MQTT packet the broker takes: the gateway's payload limit plus 64 KiB
        for the topic (at most 65535 bytes) and the properties, so what the gateway would
        reject is still seen (and reported on the rejected topic) up to its limit."""
        return self.settings.ingest.max_payload_bytes + 64 * 1024

    @property
    def files(self) -> BrokerFiles:
        """The two listeners' password and ACL files (services/registry/mosquitto.py)."""
        return BrokerFiles(self.dir)

    def sync_auth(self) -> bool:
        """Regenerate the password and ACL files from the service accounts and the device
        registry, and have a running managed Mosquitto reload them (SIGHUP, no restart).

        Returns False when PostgreSQL could not be read and files already existed: they are
        kept as they are, since rewriting them without the devices would lock every device
        out. Blocking (it runs its own event loop for the query): call it from a thread
        when an event loop is running.
        """
        from services.registry.mosquitto import (
            ensure_service_accounts,
            locked,
            write_broker_files,
        )
        from services.registry.store import fetch_device_logins

        accounts = ensure_service_accounts(self.settings.state_dir)
        with locked(self.settings.state_dir, "mqtt-files"):
            devices = asyncio.run(fetch_device_logins(self.settings.database_dsn))
            if devices is None and self.files.devices_passwd.exists():
                return False
            write_broker_files(
                self.dir,
                accounts,
                devices or [],
                owner="mosquitto" if os.geteuid() == 0 else None,
                simulator=self.settings.mqtt_simulator_account,
            )
            pid = self.pid() if self.managed else None
            if pid is not None:
                self.reload(pid)
        return devices is not None

    def reload(self, pid: int) -> None:
        """Have the running broker re-read its password and ACL files (SIGHUP)."""
        reload_broker(pid)

    def _after_start(self) -> None:
        # Also for a broker that was already running: new accounts or devices since then.
        self.sync_auth()

    def _launch(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise StateError(
                "mosquitto is not installed: run ./citywatch (it installs it) "
                "or `apt-get install mosquitto`."
            )
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.sync_auth()  # the password and ACL files the configuration names
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            (DEPLOY / "mosquitto" / "mosquitto.conf")
            .read_text()
            .replace("@PORT@", str(self.port))
            .replace("@HOST@", self.host)
            .replace("@SERVICES_PORT@", str(self.services_port))
            .replace("@SERVICES_HOST@", self.services_host)
            .replace("@DATA_DIR@", str(data))
            .replace("@LOG_FILE@", str(self.log_file))
            .replace("@DEVICES_PASSWORD_FILE@", str(self.files.devices_passwd))
            .replace("@DEVICES_ACL_FILE@", str(self.files.devices_acl))
            .replace("@SERVICES_PASSWORD_FILE@", str(self.files.services_passwd))
            .replace("@SERVICES_ACL_FILE@", str(self.files.services_acl))
            .replace("@MAX_PACKET_SIZE@", str(self.max_packet_size))
        )
        if os.geteuid() == 0:
            # As root, mosquitto drops to the `mosquitto` user, which must own its files.
            _chown_tree(self.dir, "mosquitto")
        spawn([binary, "-c", str(conf)], log_file=self.dir / "stdout.log", pid_file=self.pid_file)


class Kafka(Component):
    name = "kafka"
    marker = "kafka.Kafka"
    start_timeout_s = 90.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.log_file = self.dir / "server.log"  # written by log4j (deploy/kafka/log4j2.properties)

    @property
    def host(self) -> str:
        return self.settings.kafka_host_port[0]

    @property
    def port(self) -> int:
        return self.settings.kafka_host_port[1]

    @property
    def endpoint(self) -> str:
        return self.settings.kafka_bootstrap

    def answers(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        return asyncio.run(kafka_answers(self.settings, timeout_s=5))

    @property
    def _data(self) -> Path:
        return self.dir / "data"

    def up(self) -> Status:
        if self.managed and KAFKA_ADMIN not in self.settings.kafka_accounts:
            # `components()` generates the principals only for storage it will format.
            raise StateError(
                f"kafka: {self._data} was formatted by an older CityWatch, without logins "
                f"(every local process could write readings and alerts). Kafka only carries "
                f"data in transit: stop the services once the processor and the alerts "
                f"service have caught up, then run `citywatch stack down --only kafka`, "
                f"`rm -r {self._data}` and `citywatch stack up`; the broker is formatted "
                f"anew with one SCRAM principal per service and ACLs."
            )
        return super().up()

    def libs(self) -> Path:
        """The broker's jars, resolved by Maven from deploy/kafka/pom.xml into a cache folder
        keyed by the pom's hash, so a changed version resolves anew and an unchanged one is
        instant."""
        pom = DEPLOY / "kafka" / "pom.xml"
        key = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
        cache = Path(os.environ.get("CITYWATCH_CACHE_DIR", Path.home() / ".cache" / "citywatch"))
        libs = cache / f"kafka-{key}" / "libs"
        if (libs.parent / "complete").exists():
            return libs
        tmp = libs.parent / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"resolving the Kafka broker jars with Maven into {libs} (first run only) ...",
            flush=True,
        )
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
            ],
            what="resolving Kafka jars from Maven Central",
            fix="Check that Maven (`mvn`) is installed and Maven Central is reachable.",
        )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (libs.parent / "complete").write_text("ok\n")
        return libs

    def _launch(self) -> None:
        libs = self.libs()
        data = self._data
        props = self.dir / "server.properties"
        accounts = {k: v.get_secret_value() for k, v in self.settings.kafka_accounts.items()}
        # It holds the admin's password (the controller's PLAIN login): mode 0600.
        write_secret(props, self._server_properties(accounts[KAFKA_ADMIN]))
        cp = f"{libs}/*"
        if not (data / "meta.properties").exists():
            shutil.rmtree(data, ignore_errors=True)  # a half-formatted directory from a crash
            # The principals' SCRAM credentials go into the metadata log at format time. The
            # storage tool's arguments are read from a 0600 argument file (`java @file`), so
            # no password shows in the process list.
            args = ["kafka.tools.StorageTool", "format", "-t", self._cluster_id(), "-c", str(props)]
            for name, password in sorted(accounts.items()):
                args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
            argfile = self.dir / ".format.args"
            write_secret(argfile, "".join(f'"{a}"\n' for a in args))
            try:
                run(
                    ["java", "-Xmx256m", "-cp", cp, f"@{argfile}"],
                    what="formatting Kafka storage",
                    fix="Is Java 17+ installed (`java -version`)?",
                )
            finally:
                argfile.unlink(missing_ok=True)
        spawn(
            [
                "java",
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dkafka.logs.dir={self.dir}",
                f"-Dlog4j2.configurationFile={DEPLOY / 'kafka' / 'log4j2.properties'}",
                "-cp",
                cp,
                "kafka.Kafka",
                str(props),
            ],
            log_file=self.dir / "stdout.log",
            pid_file=self.pid_file,
        )

    def _server_properties(self, admin_password: str) -> str:
        """deploy/kafka/server.properties filled in for this broker."""
        return (
            (DEPLOY / "kafka" / "server.properties")
            .read_text()
            .replace("@HOST@", self.host)
            .replace("@PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.port + 1))
            .replace("@DATA_DIR@", str(self._data))
            .replace("@ADMIN@", KAFKA_ADMIN)
            .replace("@ADMIN_PASSWORD@", admin_password)
        )

    def _cluster_id(self) -> str:
        """The KRaft cluster id its storage is formatted with: a new one for one broker."""
        return _cluster_id()

    def _after_start(self) -> None:
        created = asyncio.run(ensure_topics(self.settings, topic_specs(self.settings)))
        if created:
            print(f"kafka: created topics {', '.join(created)}", flush=True)
        asyncio.run(grant(self.settings, TopicNames.of(self.settings)))


class Postgres(Component):
    name = "postgres"
    marker = "postgres"
    start_timeout_s = 60.0

    @property
    def host(self) -> str:
        return urlsplit(self.settings.database_dsn).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.settings.database_dsn).port or 5432

    @property
    def endpoint(self) -> str:
        u = urlsplit(self.settings.database_dsn)
        return f"postgresql://{u.username}@{self.host}:{self.port}{u.path}"

    def answers(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        return asyncio.run(_pg_answers(self.settings))

    def _bin(self, tool: str) -> str:
        for version in ("17", "16", "15", "14"):
            path = Path(f"/usr/lib/postgresql/{version}/bin/{tool}")
            if path.exists():
                return str(path)
        found = shutil.which(tool)
        if not found:
            raise StateError(
                "PostgreSQL server binaries are not installed: run ./citywatch "
                "(it installs them) or `apt-get install postgresql-15`."
            )
        return found

    def _as_owner(self, cmd: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root; as root we run it as the `postgres` user.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    @property
    def _data(self) -> Path:
        return self.dir / "data"

    def pid(self) -> int | None:
        try:
            first = (self._data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def _launch(self) -> None:
        if os.geteuid() == 0:
            _chown_tree(self.dir, "postgres")
        if not (self._data / "PG_VERSION").exists():
            shutil.rmtree(self._data, ignore_errors=True)
            self._data.mkdir(parents=True)
            # The superuser's password, from a file (never the command line) that the
            # postgres user can read when we run initdb as it.
            pwfile = self.dir / ".initdb.pw"
            write_secret(pwfile, self._superuser_password() + "\n")
            if os.geteuid() == 0:
                _chown_tree(self.dir, "postgres")
            try:
                run(
                    self._as_owner(
                        [
                            self._bin("initdb"),
                            "-D",
                            str(self._data),
                            "-U",
                            POSTGRES_SUPERUSER,
                            "--auth=scram-sha-256",
                            f"--pwfile={pwfile}",
                            "-E",
                            "UTF8",
                            "--locale=C",
                        ]
                    ),
                    what="creating the PostgreSQL cluster (initdb)",
                    fix=f"Check that {self.dir} is writable by the postgres user.",
                )
            finally:
                pwfile.unlink(missing_ok=True)
            with (self._data / "postgresql.conf").open("a") as conf:
                conf.write("\ninclude 'citywatch.conf'\n")
        (self._data / "citywatch.conf").write_text(
            (DEPLOY / "postgres" / "postgresql.conf")
            .read_text()
            .replace("@HOST@", self.host)
            .replace("@PORT@", str(self.port))
            .replace("@SOCKET_DIR@", str(self.dir))
        )
        if os.geteuid() == 0:
            _chown_tree(self.dir, "postgres")
        run(
            self._as_owner(
                [
                    self._bin("pg_ctl"),
                    "-D",
                    str(self._data),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            what="starting PostgreSQL",
            fix=f"See {self.log_file}.",
        )

    def _superuser_password(self) -> str:
        secret = self.settings.database_passwords.get(POSTGRES_SUPERUSER)
        if secret is None:
            raise StateError(f"postgres: no superuser password in {self.settings.state_dir}")
        return secret.get_secret_value()

    def _after_start(self) -> None:
        if not self.managed:
            return
        # Passwords first (a cluster an older CityWatch made trusts every local login, so
        # the superuser gets in to set them), then the SCRAM-only pg_hba.conf, reloaded.
        asyncio.run(_ensure_role_and_db(self.settings))
        hba = self._data / "pg_hba.conf"
        wanted = (DEPLOY / "postgres" / "pg_hba.conf").read_text()
        if hba.read_text() != wanted:
            hba.write_text(wanted)
            if os.geteuid() == 0:
                _chown_tree(self.dir, "postgres")
            asyncio.run(_reload_conf(self.settings))

    def down(self) -> None:
        if self.pid() is not None:
            run(
                self._as_owner(
                    [
                        self._bin("pg_ctl"),
                        "-D",
                        str(self._data),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        "60",
                        "stop",
                    ]
                ),
                what="stopping PostgreSQL",
                fix=f"See {self.log_file}.",
            )

    def _detail(self) -> str:
        path = asyncio.run(_storage_path(self.settings.database_dsn))
        return (
            f"storage path: {path}"
            if path
            else "storage path: not migrated yet (citywatch db migrate)"
        )


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, as `kafka-storage random-uuid`
    prints. One starting with `-` is drawn again: the storage tool's argument parser reads
    `-t -abc...` as a missing value and an option (seen here: one format in 64 failed)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if cluster_id[0].isalnum():
            return cluster_id


def _chown_tree(path: Path, user: str) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise StateError(f"user {user!r} does not exist; reinstall its Debian package") from exc
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


async def _pg_answers(settings: Settings) -> bool:
    import asyncpg

    try:
        con = await asyncpg.connect(
            settings.database_dsn_as(POSTGRES_SUPERUSER, "postgres"), timeout=3
        )
    except (OSError, asyncpg.PostgresError, TimeoutError):
        # The cluster may be someone else's (an external endpoint): try CityWatch's own role.
        try:
            con = await asyncpg.connect(settings.database_dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
    try:
        return bool(await con.fetchval("SELECT 1"))
    finally:
        await con.close()


async def _ensure_role_and_db(settings: Settings) -> None:
    import asyncpg

    u = urlsplit(settings.database_dsn)
    user = unquote(u.username or "citywatch")  # the URL's %-escapes are not the name
    password = unquote(u.password) if u.password else None
    dbname = unquote((u.path or "/citywatch").lstrip("/")) or "citywatch"
    superuser = settings.database_passwords[POSTGRES_SUPERUSER].get_secret_value()
    con = await asyncpg.connect(settings.database_dsn_as(POSTGRES_SUPERUSER, "postgres"))
    try:
        # Utility statements take no parameters: PostgreSQL's own format() quotes the
        # names (%I) and the password (%L), so neither can close a quote (issue 10). The
        # passwords are set on every start: a cluster an older CityWatch made had none.
        sql = await con.fetchval(
            "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
            POSTGRES_SUPERUSER,
            superuser,
        )
        await con.execute(sql)
        exists = await con.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
        sql = await con.fetchval(
            "SELECT format(CASE WHEN $3 THEN 'ALTER ROLE %I LOGIN' ELSE 'CREATE ROLE %I LOGIN'"
            " END || CASE WHEN $2::text IS NULL THEN '' ELSE format(' PASSWORD %L', $2::text)"
            " END, $1::text)",
            user,
            password,
            bool(exists),
        )
        await con.execute(sql)
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            sql = await con.fetchval(
                "SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)", dbname, user
            )
            await con.execute(sql)
    finally:
        await con.close()


async def _reload_conf(settings: Settings) -> None:
    import asyncpg

    con = await asyncpg.connect(settings.database_dsn_as(POSTGRES_SUPERUSER, "postgres"))
    try:
        await con.execute("SELECT pg_reload_conf()")
    finally:
        await con.close()


async def _storage_path(dsn: str) -> str | None:
    from services.common import db

    try:
        con = await db.connect(dsn, timeout=3)
    except StateError:
        return None
    except Exception:  # noqa: BLE001 - status is best effort; "unknown" is the answer
        return None
    try:
        return await db.storage_path(con)
    finally:
        await con.close()


def components(
    settings: Settings, *, kafka_brokers: int | None = None, pg_standby: bool | None = None
) -> list[Component]:
    """In start order: what the services depend on least comes first.

    For the parts this machine runs, the passwords they need are generated first (0600
    files in the state folder) and the settings re-read, so the parts and every later
    command log in with them. `kafka_brokers` (3: a KRaft cluster) and `pg_standby` (a
    streaming standby) default to what the state folder already holds
    (services/stack/cluster.py); a fresh one gets one broker and no standby.
    """
    from services.stack.cluster import kafka_part, standby_parts

    settings = ensure_secrets(settings)
    return [
        Postgres(settings),
        *standby_parts(settings, pg_standby),
        mqtt_broker(settings),
        kafka_part(settings, kafka_brokers),
    ]


def mqtt_broker(settings: Settings) -> Mosquitto:
    """The MQTT broker the settings choose (CITYWATCH_MQTT_BROKER)."""
    if settings.mqtt_broker == "artemis":
        from services.stack.artemis import Artemis

        return Artemis(settings)
    return Mosquitto(settings)


def ensure_secrets(settings: Settings) -> Settings:
    """Generate the local PostgreSQL's and Kafka's passwords that are missing; the settings
    with them. Kafka's principals are created only with storage not formatted yet: the
    format writes their credentials (`Kafka.up` explains what to do with older storage)."""
    state = settings.state_dir
    pg, kafka = Postgres(settings), Kafka(settings)
    role = unquote(urlsplit(settings.database_url.get_secret_value()).username or "")
    roles = [POSTGRES_SUPERUSER] + ([role] if role else [])
    if pg.managed and not set(roles) <= set(settings.database_passwords):
        ensure_accounts(state / POSTGRES_ACCOUNTS_FILE, roles, "PostgreSQL")
    fresh = not (kafka.dir / "data" / "meta.properties").exists()
    if kafka.managed and fresh and not set(KAFKA_ACCOUNTS) <= set(settings.kafka_accounts):
        ensure_accounts(state / KAFKA_ACCOUNTS_FILE, KAFKA_ACCOUNTS, "Kafka")
    return settings.reloaded()

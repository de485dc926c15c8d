"""The local stack scaled out on one machine: a KRaft cluster of Kafka brokers and a
PostgreSQL streaming standby (`citywatch stack up --kafka-brokers 3 --pg-standby`).

The same jars, configuration and logins as the single broker (services/stack/components.py):
each broker is the single broker's `server.properties` with a few keys overridden, so SASL/
SCRAM-SHA-512, the per-service principals and the StandardAuthorizer's ACLs stay exactly as
they are. Every broker is also a controller (combined mode, static voters): three nodes
keep a metadata quorum with any one of them down, which is the point of running three.

What the state folder holds decides the shape of a later `stack status` or `stack down`:
folders `kafka-1` ... `kafka-N` are a cluster of N, `postgres-standby` is a standby. A
folder formatted for one broker is never turned into a cluster or back (static voters and
the cluster id are written into each broker's storage): use another state folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from services.common.errors import StateError
from services.common.kafka import kafka_answers, replication
from services.common.settings import KAFKA_ADMIN, POSTGRES_SUPERUSER, Settings
from services.stack.components import (
    Component,
    Kafka,
    Postgres,
    Status,
    _chown_tree,
    _cluster_id,
)
from services.stack.process import port_open, run, tail, wait_for
from services.stack.secrets import write_secret

__all__ = ["KafkaCluster", "KafkaNode", "PostgresStandby", "kafka_part", "standby_parts"]

# How long a cluster may take to answer: three JVMs starting at once on two cores, and a
# metadata quorum that forms only once two controllers see each other.
CLUSTER_START_S = 180.0


class KafkaNode(Kafka):
    """Broker `node_id` of a local cluster: the client port `first + 2 (node_id - 1)` and
    the controller port right above it, as for the single broker."""

    def __init__(self, settings: Settings, node_id: int, count: int) -> None:
        self.name = f"kafka-{node_id}"
        super().__init__(settings)
        self.node_id = node_id
        self.count = count

    @property
    def port(self) -> int:
        return self.settings.kafka_host_port[1] + 2 * (self.node_id - 1)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def answers(self) -> bool:
        """This broker itself answers the admin's metadata request."""
        if not port_open(self.host, self.port):
            return False
        alone = self.settings.model_copy(update={"kafka_bootstrap": self.endpoint})
        return asyncio.run(kafka_answers(alone, timeout_s=5))

    def _server_properties(self, admin_password: str) -> str:
        # java.util.Properties keeps the last value of a key: the overrides come after the
        # single broker's file, which stays the one place for everything else.
        first = self.settings.kafka_host_port[1]
        voters = ",".join(f"{i}@{self.host}:{first + 2 * (i - 1) + 1}" for i in self.ids)
        factor, min_insync = replication(self.count)
        overrides = {
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            # Kafka's own topics (group offsets, transactions) as safe as CityWatch's: a
            # group whose coordinator's broker dies moves to another copy of its offsets.
            "offsets.topic.replication.factor": factor,
            "transaction.state.log.replication.factor": factor,
            "transaction.state.log.min.isr": min_insync,
            "share.coordinator.state.topic.replication.factor": factor,
            "share.coordinator.state.topic.min.isr": min_insync,
            "default.replication.factor": factor,
            "min.insync.replicas": min_insync,
        }
        lines = "".join(f"{key}={value}\n" for key, value in overrides.items())
        return (
            f"{super()._server_properties(admin_password)}\n"
            f"# Broker {self.node_id} of {self.count} (services/stack/cluster.py)\n{lines}"
        )

    @property
    def ids(self) -> range:
        return range(1, self.count + 1)

    def _cluster_id(self) -> str:
        """One id for every broker of the cluster, drawn by the first to be formatted."""
        path = self.settings.state_dir / "kafka-cluster-id"
        if not path.exists():
            write_secret(path, _cluster_id() + "\n")
        return path.read_text().strip()

    def _after_start(self) -> None:
        """Topics and ACLs are the cluster's business, once every broker answers."""


class KafkaCluster(Kafka):
    """N brokers as one part of the stack (`--only kafka` still names it)."""

    def __init__(self, settings: Settings, count: int) -> None:
        probe = Kafka(settings)
        first = settings.kafka_host_port[1]
        endpoints = [f"{probe.host}:{first + 2 * i}" for i in range(count)]
        listed = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
        if len(listed) > 1 and listed != endpoints:
            raise StateError(
                f"CITYWATCH_KAFKA_BOOTSTRAP lists {','.join(listed)}, but a local cluster of "
                f"{count} brokers listens on {','.join(endpoints)} (the first port, then every "
                "second one): set it to that list, or to its first broker only."
            )
        super().__init__(settings.model_copy(update={"kafka_bootstrap": ",".join(endpoints)}))
        self.nodes = [KafkaNode(self.settings, i, count) for i in range(1, count + 1)]

    def pid(self) -> int | None:
        return None  # the members have pids; `statuses` lists them

    def answers(self) -> bool:
        return all(node.answers() for node in self.nodes)

    def up(self) -> Status:
        if not self.managed:
            return super().up()
        if KAFKA_ADMIN not in self.settings.kafka_accounts:
            raise StateError(f"kafka: no admin login in {self.settings.state_dir}")
        for node in self.nodes:
            if node.pid() is None:
                node.refuse_taken_ports()
                node.dir.mkdir(parents=True, exist_ok=True)
                node._launch()
        if not wait_for(self.answers, CLUSTER_START_S, interval_s=0.5):
            silent = [n for n in self.nodes if not n.answers()]
            logs = "\n".join(f"Last lines of {n.log_file}:\n{tail(n.log_file)}" for n in silent)
            raise StateError(
                f"kafka: {', '.join(n.name for n in silent)} did not answer within "
                f"{CLUSTER_START_S:.0f}s.\n{logs}\nFix what the log says, then run "
                "`citywatch stack down --only kafka` and `citywatch stack up` again."
            )
        self._after_start()
        return self.status()

    def down(self) -> None:
        # All at once: a broker stopping after the others would wait in vain for a quorum
        # to hand its partitions over (controlled shutdown), until terminate's SIGKILL.
        pids = [(node, node.pid()) for node in self.nodes]
        for _node, pid in pids:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for node, _pid in pids:
            node.down()

    def statuses(self) -> list[Status]:
        return [node.status() for node in self.nodes]

    def _detail(self) -> str:
        factor, min_insync = replication(len(self.nodes))
        return (
            f"{len(self.nodes)} brokers, replication factor {factor}, "
            f"min.insync.replicas {min_insync}"
        )


def kafka_part(settings: Settings, brokers: int | None) -> Kafka:
    """The stack's Kafka: one broker, or a cluster of `brokers` (None: what the state
    folder holds). An external Kafka is whatever it is: one part that must answer."""
    single = Kafka(settings)
    if not single.managed:
        return single
    held = _cluster_size(settings.state_dir)
    formatted_single = (single.dir / "data" / "meta.properties").exists()
    count = brokers if brokers is not None else (held or 1)
    if count < 1:
        raise StateError("--kafka-brokers must be at least 1")
    if (count > 1 and formatted_single) or (held and count != held):
        raise StateError(
            f"kafka: {settings.state_dir} holds "
            f"{f'a cluster of {held} brokers' if held else 'one broker'}; a local cluster "
            "keeps its size (each broker's storage names the others). Use another "
            "CITYWATCH_STATE_DIR (and ports) for another shape."
        )
    return KafkaCluster(settings, count) if count > 1 else single


def _cluster_size(state_dir: Path) -> int:
    """How many brokers a cluster in `state_dir` was formatted with (0: none)."""
    names = [p.name for p in state_dir.glob("kafka-*") if (p / "data").is_dir()]
    return max((int(m[1]) for n in names if (m := re.fullmatch(r"kafka-(\d+)", n))), default=0)


# -- PostgreSQL: a streaming standby ------------------------------------------------------


class PostgresStandby(Postgres):
    """A hot standby of the stack's PostgreSQL, made with `pg_basebackup -R` and streaming
    from it: read-only, on `CITYWATCH_DATABASE_READ_URL`'s port (unset: the primary's port
    + 1). The read API sends its queries there (`Settings.database_read_dsn`).

    No replication slot: a slot would make the primary keep its WAL for as long as the
    standby is gone, which on a laptop that forgets a stopped standby fills the disk. A
    standby stopped for longer than the primary keeps its WAL (`max_wal_size`, 1 GB by
    default) cannot catch up; remove its data folder and `stack up --pg-standby` again.
    """

    name = "postgres-standby"

    def __init__(self, settings: Settings) -> None:
        self.primary = Postgres(settings)
        super().__init__(settings.model_copy(update={"database_url": _read_url(settings)}))

    def _launch(self) -> None:
        if not (self._data / "PG_VERSION").exists():
            self._base_backup()
        super()._launch()  # its own port and socket folder in citywatch.conf; pg_ctl start

    def _base_backup(self) -> None:
        shutil.rmtree(self._data, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        # The superuser's password from a passfile the standby keeps using (`-R` writes
        # `passfile=` into primary_conninfo), so it is on no command line.
        passfile = self.dir / "primary.pgpass"
        secret = self.settings.database_passwords[POSTGRES_SUPERUSER].get_secret_value()
        escaped = secret.replace("\\", "\\\\").replace(":", "\\:")
        p = self.primary
        write_secret(passfile, f"{p.host}:{p.port}:*:{POSTGRES_SUPERUSER}:{escaped}\n")
        if os.geteuid() == 0:
            _chown_tree(self.dir, "postgres")
        conninfo = f"host={p.host} port={p.port} user={POSTGRES_SUPERUSER} passfile={passfile}"
        run(
            self._as_owner(
                [
                    self._bin("pg_basebackup"),
                    "-d",
                    conninfo,
                    "-D",
                    str(self._data),
                    "-R",  # standby.signal and primary_conninfo: it streams from the primary
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-password",
                ]
            ),
            what="copying the primary for the standby (pg_basebackup)",
            fix=f"Is the primary up (`citywatch stack status`)? See {p.log_file}.",
        )

    def _after_start(self) -> None:
        """Roles, databases and pg_hba.conf come from the primary, through replication."""

    def _detail(self) -> str:
        lag = asyncio.run(
            _replay_lag(self.settings.database_dsn_as(POSTGRES_SUPERUSER, "postgres"))
        )
        return f"standby of {self.primary.host}:{self.primary.port}, {lag}"


def _read_url(settings: Settings) -> SecretStr:
    """The standby's URL: CITYWATCH_DATABASE_READ_URL, else the primary's with port + 1."""
    if settings.database_read_url is not None:
        return settings.database_read_url
    u = urlsplit(settings.database_url.get_secret_value())
    login, at, _host = u.netloc.rpartition("@")  # login: user (and password), kept as given
    netloc = f"{login}{at}{u.hostname}:{(u.port or 5432) + 1}"
    return SecretStr(urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment)))


async def _replay_lag(dsn: str) -> str:
    import asyncpg

    try:
        con = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return "replay state unknown"
    try:
        row = await con.fetchrow(
            "SELECT pg_is_in_recovery() AS standby,"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS lag_s"
        )
    finally:
        await con.close()
    if row is None or not row["standby"]:
        return "NOT in recovery (promoted?)"
    lag = row["lag_s"]
    return (
        "nothing replayed yet"
        if lag is None
        else f"last replayed transaction {float(lag):.1f}s old"
    )


def standby_parts(settings: Settings, wanted: bool | None) -> list[Component]:
    """The standby when asked for (None: when the state folder holds one)."""
    standby = PostgresStandby(settings)
    if wanted is None:
        wanted = (standby.dir / "data" / "PG_VERSION").exists()
    if not wanted:
        return []
    if not standby.primary.managed:
        raise StateError("--pg-standby makes a standby of the local PostgreSQL only")
    return [standby]

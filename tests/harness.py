"""Test harness: isolated names per test, services as real subprocesses, waits on conditions.

Every test gets its own Kafka topics, consumer groups, MQTT topic prefix, shared
subscription group, device ids and HTTP ports (a uuid suffix), so tests never see each
other's data although they share one Mosquitto, one Kafka and one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.kafka import ensure_topics
from services.common.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.2
) -> None:
    """Poll `condition` (a query at the source: rows, offsets, /readyz) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
        await asyncio.sleep(every)


@dataclass
class Namespace:
    """The per-test names."""

    settings: Settings
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def prefix(self) -> str:  # MQTT topic prefix devices publish under
        return f"t{self.suffix}"

    @property
    def device_prefix(self) -> str:
        return f"t{self.suffix}-"

    @property
    def readings_topic(self) -> str:
        return f"test.{self.suffix}.readings"

    @property
    def rejected_topic(self) -> str:
        return f"test.{self.suffix}.rejected"

    @property
    def alerts_topic(self) -> str:
        return f"test.{self.suffix}.alerts"

    async def create_topics(self, readings_partitions: int = 4) -> None:
        await ensure_topics(
            self.settings.kafka_bootstrap,
            {
                self.readings_topic: readings_partitions,
                self.rejected_topic: 1,
                self.alerts_topic: 1,
            },
        )

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a service of this test runs with."""
        return {
            "CITYWATCH_TOPICS__READINGS": self.readings_topic,
            "CITYWATCH_TOPICS__REJECTED": self.rejected_topic,
            "CITYWATCH_TOPICS__ALERTS": self.alerts_topic,
            "CITYWATCH_INGEST__FILTERS": json.dumps(
                [f"$share/g{self.suffix}/{self.prefix}/+/+/up"]
            ),
            "CITYWATCH_INGEST__CLIENT_ID": f"ingest-{self.suffix}",
            "CITYWATCH_PROCESSOR__GROUP_ID": f"processor-{self.suffix}",
            "CITYWATCH_ALERTS__GROUP_ID": f"alerts-{self.suffix}",
            **extra,
        }

    # -- reading back at the source ---------------------------------------------------------
    async def rows(self, db: asyncpg.Connection) -> int:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM readings WHERE device_id LIKE $1", f"{self.device_prefix}%"
            )
        )

    async def committed(self, group: str, topic: str) -> int:
        """Sum of the group's committed offsets over the topic's partitions."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            total = 0
            for p in parts:
                total += await consumer.committed(TopicPartition(topic, p)) or 0
            return total
        finally:
            await consumer.stop()

    async def end_offsets(self, topic: str) -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
            ends = await consumer.end_offsets(tps)
            return int(sum(ends.values()))
        finally:
            await consumer.stop()

    async def read_topic(self, topic: str, count: int, timeout: float = 60) -> list[bytes]:
        """Exactly the first `count` records of `topic` (fails on a timeout)."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    got = await consumer.getmany(timeout_ms=500)
                    for msgs in got.values():
                        out.extend(m.value for m in msgs)
        except TimeoutError:
            raise AssertionError(
                f"{topic}: {len(out)} of {count} records within {timeout}s"
            ) from None
        finally:
            await consumer.stop()
        return out


class ServiceProcess:
    """One CityWatch service as a real OS process, as an operator would run it."""

    def __init__(self, name: str, ns: Namespace, log_dir: Path, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            **ns.env(**env),
            f"CITYWATCH_{name.upper()}__HTTP_PORT": str(self.port),
            "CITYWATCH_LOG_FORMAT": "text",
        }
        self.log_path = log_dir / f"{name}-{ns.suffix}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", self.name],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def http(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        except (urllib.error.URLError, OSError):
            return 0, None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=3) as r:
            return str(r.read().decode())

    def metric(self, name: str, labels: str = "") -> float:
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0

    async def ready(self) -> bool:
        status, _ = await asyncio.to_thread(self.http, "/readyz")
        return status == 200

    async def wait_ready(self, timeout: float = 60) -> None:
        await wait_until(
            self.ready, timeout=timeout, what=f"{self.name} /readyz 200 ({self.log_path})"
        )

    async def wait_not_ready(self, timeout: float = 60) -> None:
        async def not_ready() -> bool:
            status, _ = await asyncio.to_thread(self.http, "/readyz")
            return status == 503

        await wait_until(not_ready, timeout=timeout, what=f"{self.name} /readyz 503")

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM") from None

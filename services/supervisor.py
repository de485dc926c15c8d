"""Running CityWatch services as child processes: for the demo, the benchmark and the tests.

Each service runs as `python -m services.cli NAME`, exactly as an operator would start it,
so what the demo shows and what the tests prove is the real program, signals and all.
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
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from services.common.http_auth import operator_token
from services.common.settings import REPO_ROOT, Settings

DEFAULT_PORTS = {"ingest": 8101, "processor": 8102, "alerts": 8103, "api": 8104}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.2
) -> None:
    """Poll `condition` (a question asked at the source: rows, offsets, /readyz) until it
    holds; raise AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
        await asyncio.sleep(every)


class ServiceProcess:
    """One CityWatch service as a real OS process."""

    def __init__(
        self,
        name: str,
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        tag: str = "",
    ) -> None:
        self.name = name
        self.port = port if port is not None else free_port()
        self.env = {
            **os.environ,
            **(env or {}),
            f"CITYWATCH_{name.upper()}__HTTP_PORT": str(self.port),
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}{'-' + tag if tag else ''}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._token: str | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", self.name],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group: a Ctrl-C in the terminal reaches the demo, which
                # then stops each service in order, instead of every process at once.
                process_group=0,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def operator_token(self) -> str:
        """The operator token as this process sees it: its own environment's
        `CITYWATCH_OPERATOR_TOKEN` or state folder (services/common/http_auth.py)."""
        if self._token is None:
            given = {
                key: self.env[f"CITYWATCH_{key.upper()}"]
                for key in ("operator_token", "state_dir")
                if f"CITYWATCH_{key.upper()}" in self.env
            }
            self._token = operator_token(Settings(**given))  # type: ignore[arg-type]
        return self._token

    def ops_url(self) -> str:
        """The address that opens the operations centre in a browser (the API's /ops)."""
        return f"http://127.0.0.1:{self.port}/ops?token={quote(self.operator_token(), safe='')}"

    def _get(self, path: str) -> urllib.request.Request:
        """GET `path` with the operator token: /metrics and the operator routes need it."""
        url = f"http://127.0.0.1:{self.port}{path}"
        return urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.operator_token()}"}
        )

    def http(self, path: str) -> tuple[int, Any]:
        """(status, JSON body) of GET `path`; (0, None) when nothing answers."""
        try:
            with urllib.request.urlopen(self._get(path), timeout=3) as r:
                return int(r.status), json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return int(e.code), json.loads(e.read() or b"null")
        except (urllib.error.URLError, OSError, ValueError):
            return 0, None

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples as {'name{labels}': value}."""
        try:
            with urllib.request.urlopen(self._get("/metrics"), timeout=3) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, name: str, labels: str = "") -> float:
        return self.metrics().get(f"{name}{{{labels}}}" if labels else name, 0.0)

    def peak_rss_bytes(self) -> int:
        """Peak resident memory (VmHWM) of the live process."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    async def ready(self) -> bool:
        status, _ = await asyncio.to_thread(self.http, "/readyz")
        return status == 200

    async def wait_ready(self, timeout: float = 60) -> None:
        await wait_until(
            self.ready, timeout=timeout, what=f"{self.name} /readyz 200 (log: {self.log_path})"
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
        """SIGTERM and wait: the graceful path (drain, commit, close)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM") from None

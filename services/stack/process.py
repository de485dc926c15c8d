"""Plain-process helpers for the local stack: pid files, liveness, logs, waiting on conditions."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.common.errors import StateError


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (a zombie of ours is reaped on the way).

    A process whose main thread is a zombie while other threads still exit is alive: after
    a SIGKILL a JVM's main thread shows `Z` at once, and its sockets stay open (a restart
    on its ports is refused) until the last thread, seconds later for a broker's heap."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and is ours (its command line holds
    `marker`); a stale file (crash, reboot, reused pid) is removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and marker in cmdline(pid):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def spawn(cmd: Sequence[str], *, log_file: Path, pid_file: Path) -> int:
    """Start `cmd` detached in its own session, output appended to `log_file`.

    posix_spawn rather than Popen: the part outlives this process, and a Popen object
    dropped while its child runs is a resource-leak warning (pid_alive reaps it instead).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log, open(os.devnull, "rb") as devnull:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull.fileno(), 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ]
        pid = os.posix_spawnp(
            cmd[0], list(cmd), dict(os.environ), file_actions=actions, setsid=True
        )
    pid_file.write_text(f"{pid}\n")
    return pid


def terminate(pid: int, *, timeout_s: float = 30.0) -> None:
    """SIGTERM, wait for exit, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not pid_alive(pid), timeout_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10)


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes (an external process offers no
    event to wait on; polling its answer is the condition itself)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log yet)"


def run(cmd: Sequence[str], *, what: str, fix: str, timeout_s: float = 600, **kw: object) -> str:
    """Run a set-up command; on failure raise a StateError with its output and the fix."""
    try:
        out = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            **kw,  # type: ignore[call-overload]
        )
    except FileNotFoundError as exc:
        raise StateError(f"{what}: {cmd[0]} is not installed. {fix}") from exc
    except subprocess.TimeoutExpired as exc:
        raise StateError(f"{what}: timed out after {timeout_s:.0f}s. {fix}") from exc
    if out.returncode != 0:
        output = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise StateError(
            f"{what} failed (exit {out.returncode}):\n  " + "\n  ".join(output) + f"\n{fix}"
        )
    return str(out.stdout)


def is_loopback(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")

"""What `bench pipeline` reads off the machine and the services: CPU time, histograms, packs.

Pure functions and small readers of `/proc`, kept apart from the run so that a test can
check them without a stack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.topics import uplink_topic
from simulators import Fleet, Message
from simulators.formats import Identity, Sample, encode_senml

_TICK = os.sysconf("SC_CLK_TCK")


def box_cpu_seconds(stat: Path = Path("/proc/stat")) -> float:
    """CPU-seconds the whole machine has spent busy since boot, all cores summed.

    Busy is every column of the `cpu` line but idle and iowait (proc(5)); guest time is
    already inside user time, so it is not added again."""
    fields = stat.read_text().splitlines()[0].split()
    assert fields[0] == "cpu", fields[0]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _parse_stat(text: str) -> tuple[int, float]:
    """(parent pid, CPU-seconds used so far) from a `/proc/<pid>/stat` or task's stat line."""
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK


def _proc_table(proc: Path) -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU-seconds used so far) for every live process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        out[int(entry.name)] = _parse_stat(text)
    return out


def tree_cpu(roots: Iterable[int], proc: Path = Path("/proc")) -> dict[int, float]:
    """CPU-seconds used so far by each of the processes `roots` and all their descendants
    (the PostgreSQL backends under the postmaster, for one), by pid."""
    table = _proc_table(proc)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [p for p in roots if p in table]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return {p: table[p][1] for p in seen}


# The JIT compiler threads of a HotSpot JVM (Kafka, Artemis), by their kernel names.
_JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def jit_threads(pid: int, proc: Path = Path("/proc")) -> dict[int, float]:
    """CPU-seconds each JIT compiler thread of the JVM `pid` has used so far, by thread id
    (none for a process that is no JVM, or gone); `cpu_used` of two snapshots is the JIT's
    CPU between them (HotSpot starts and ends compiler threads as its queue grows and
    shrinks, so a thread may be gone by the second snapshot).

    A JVM compiles its hot code while it runs, and compiles again whenever the load's shape
    changes which code is hot: on a freshly started stack that was most of Kafka's and
    Artemis's CPU in a bench run (docs/performance.md), a cost a long-running broker has
    long paid. The bench shows it apart so that a phase's figures say what they include."""
    out: dict[int, float] = {}
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            if not (task / "comm").read_text().startswith(_JIT_THREADS):
                continue
            out[int(task.name)] = _parse_stat((task / "stat").read_text())[1]
        except OSError:
            continue  # the thread ended while we looked
    return out


def cpu_used(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU-seconds the processes alive at the end used between two `tree_cpu` snapshots (a
    process that started meanwhile counts in full; one that exited is not counted, so the
    exit of a long-lived backend of someone else's never makes the figure negative)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def histogram(samples: Mapping[str, float], name: str) -> dict[float, float]:
    """A Prometheus histogram's cumulative buckets, {upper bound: count}."""
    out: dict[float, float] = {}
    for key, value in samples.items():
        if key.startswith(f'{name}_bucket{{le="'):
            bound = key.split('le="')[1].split('"')[0]
            out[float("inf") if bound == "+Inf" else float(bound)] = value
    return out


def histogram_delta(
    after: Mapping[float, float], before: Mapping[float, float]
) -> dict[float, float]:
    """The buckets of what was observed between two scrapes of the same histogram."""
    return {le: n - before.get(le, 0.0) for le, n in after.items()}


def bucket_quantile(buckets: Mapping[float, float], q: float) -> float:
    """A quantile from cumulative buckets, interpolated linearly within its bucket (as
    PromQL's histogram_quantile does); NaN when nothing was observed."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return float("nan")
    target = q * ordered[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in ordered:
        if count >= target:
            if le == float("inf"):
                return prev_le  # beyond the largest bound: its bound is all we know
            span = count - prev_count
            return prev_le + (le - prev_le) * ((target - prev_count) / span if span else 0)
        prev_le, prev_count = le, count
    return prev_le


@dataclass
class Counted:
    """Messages and values a generator handed to the publisher."""

    messages: int = 0
    values: int = 0


def _stamp(device_id: str, last: dict[str, datetime], span_ms: int = 1) -> datetime:
    """The wall clock to the millisecond (the payloads' precision), moved just past the
    device's previous instant when it would repeat it: a reading is (device, time), and a
    repeated instant is a duplicate stored once, not a new reading. With a fleet of tens
    of devices per kind this never moves a stamp; with a handful at full speed it does."""
    wall = datetime.now(UTC)
    now = wall.replace(microsecond=wall.microsecond // 1000 * 1000)
    first = now - timedelta(milliseconds=span_ms - 1)
    prev = last.get(device_id)
    if prev is not None and first <= prev:
        first = prev + timedelta(milliseconds=1)
    last[device_id] = first + timedelta(milliseconds=span_ms - 1)
    return first


def native_stream(fleet: Fleet, counted: Counted) -> Iterator[Message]:
    """One reading per message, round-robin over the fleet, stamped with the wall clock
    as it is published."""
    last: dict[str, datetime] = {}
    per_kind: dict[str, int] = {}  # values per message: the same for every device of a kind
    while True:
        for device in fleet.devices:
            at = _stamp(device.device_id, last)
            payload = fleet.payload(device, at)
            if device.kind not in per_kind:
                per_kind[device.kind] = len(json.loads(payload)["metrics"])
            counted.messages += 1
            counted.values += per_kind[device.kind]
            topic = uplink_topic(fleet.prefix, device.kind, device.device_id)
            yield Message(topic, payload, True, device.device_id, kind=device.kind)


def senml_stream(fleet: Fleet, counted: Counted, *, pack: int = 10) -> Iterator[Message]:
    """SenML packs of `pack` readings of one device, 1 ms apart and ending at the wall
    clock, round-robin over the fleet (a device uploading what it buffered)."""
    last: dict[str, datetime] = {}
    while True:
        for device in fleet.devices:
            first = _stamp(device.device_id, last, span_ms=pack)
            samples = []
            for i in range(pack):
                at = first + timedelta(milliseconds=i)
                device.seq += 1
                samples.append(Sample(at, device.seq, fleet.values(device, at)))
            last[device.device_id] = samples[-1].time
            who = Identity(device.device_id, device.kind, device.lat, device.lon, "")
            topic, payload = encode_senml(fleet.prefix, who, samples)
            counted.messages += 1
            counted.values += sum(len(s.metrics) for s in samples)
            yield Message(topic, payload, True, device.device_id, kind=device.kind, format="senml")

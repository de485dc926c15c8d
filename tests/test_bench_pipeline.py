"""`citywatch bench pipeline`: its readers and its report, never its speed.

The pure parts (histogram arithmetic, CPU accounting, the SenML pack stream) are checked
without a stack; one tiny run on the stack checks that the report is whole and that its
counts add up at the source (every phase's rows counted in the database: stored ==
published, none twice). No figure is compared with a target here: speed belongs to the
bench's own table.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import asyncpg
import pytest

from schemas.adapters import decode_native, decode_senml
from services.bench.alerts import Probes
from services.bench.measure import (
    Counted,
    box_cpu_seconds,
    bucket_quantile,
    cpu_used,
    histogram,
    histogram_delta,
    jit_threads,
    native_stream,
    senml_stream,
    tree_cpu,
)
from services.bench.pipeline import TARGETS, run_bench
from services.common.settings import Settings
from simulators import Fleet
from tests.harness import REPO, wait_until


def test_phase_latency_is_the_quantile_of_what_the_phase_alone_observed() -> None:
    scrape = {
        'h_bucket{le="0.01"}': 10.0,
        'h_bucket{le="0.1"}': 30.0,
        'h_bucket{le="1.0"}': 40.0,
        'h_bucket{le="+Inf"}': 40.0,
        "h_count": 40.0,
    }
    before = histogram(scrape, "h")
    after = histogram({**scrape, 'h_bucket{le="1.0"}': 140.0, 'h_bucket{le="+Inf"}': 140.0}, "h")
    delta = histogram_delta(after, before)
    assert delta == {0.01: 0.0, 0.1: 0.0, 1.0: 100.0, float("inf"): 100.0}
    # All 100 new observations lie in (0.1, 1]: the median is interpolated inside it.
    assert bucket_quantile(delta, 0.5) == pytest.approx(0.55)
    assert math.isnan(bucket_quantile(histogram_delta(before, before), 0.99))


def test_cpu_accounting_never_counts_an_exited_process_negative() -> None:
    before = {1: 10.0, 2: 50.0}  # pid 2 (someone's backend) exits during the window
    after = {1: 12.5, 3: 0.5}  # pid 3 started during it
    assert cpu_used(before, after) == pytest.approx(3.0)


def test_cpu_readers_see_this_process_and_a_busy_machine() -> None:
    import os

    mine = tree_cpu([os.getpid()])
    assert os.getpid() in mine
    assert box_cpu_seconds() >= mine[os.getpid()] > 0


def test_jit_cpu_is_the_compiler_threads_of_the_jvm_alone(tmp_path: Path) -> None:
    """A JVM's JIT compiler threads, by their kernel names, and none of its other threads;
    a process that is gone (or no JVM) has none; a compiler thread that ended between two
    snapshots (HotSpot ends idle ones) never makes the phase's JIT CPU negative."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    threads = {  # tid: (kernel name, utime ticks, stime ticks)
        101: ("C2 CompilerThre", 3 * tick, 1 * tick),
        102: ("C1 CompilerThre", tick // 2, 0),
        103: ("data-plane-kafk", 50 * tick, 9 * tick),
        104: ("java", 7 * tick, 2 * tick),
    }
    for tid, (name, utime, stime) in threads.items():
        task = tmp_path / "100" / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "comm").write_text(name + "\n")
        # pid (comm) state ppid pgrp session tty tpgid flags 4 fault counts, utime, stime
        (task / "stat").write_text(f"{tid} ({name}) S 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0\n")
    before = jit_threads(100, tmp_path)
    assert before == pytest.approx({101: 4.0, 102: 0.5})
    assert jit_threads(999, tmp_path) == {}
    task = tmp_path / "100" / "task"
    for path in (task / "102").iterdir():
        path.unlink()
    (task / "102").rmdir()  # C1's thread ended
    (task / "101" / "stat").write_text(
        f"101 (C2 CompilerThre) S 1 1 1 0 -1 0 0 0 0 0 {5 * tick} {tick} 0 0\n"
    )
    assert cpu_used(before, jit_threads(100, tmp_path)) == pytest.approx(2.0)


def test_senml_packs_carry_ten_readings_the_adapter_decodes_and_the_count_agrees() -> None:
    fleet = Fleet(per_kind=1, seed=3, prefix="benchx", id_prefix="bx-")
    counted = Counted()
    msgs = list(islice(senml_stream(fleet, counted), 8))  # two rounds over 4 devices
    decoded = [decode_senml(m.topic, m.payload, datetime.now(UTC), None) for m in msgs]
    assert all(isinstance(d, list) and len(d) == 10 for d in decoded), decoded[0]
    values = sum(len(r.metrics) for d in decoded if isinstance(d, list) for r in d)
    assert (counted.messages, counted.values) == (8, values)
    # A device's instants never repeat from one pack to the next.
    times = [(r.device_id, r.time) for d in decoded if isinstance(d, list) for r in d]
    assert len(set(times)) == len(times)


def test_readings_of_three_values_are_what_the_bench_counts_and_the_adapters_store() -> None:
    """Issue 11 states its CPU target for readings of 3 values; the fleet's own readings
    carry 2-7 metrics and a battery level. Both streams, every kind: what the gateway's
    adapters decode is what the bench counts, 3 values a reading."""
    fleet = Fleet(per_kind=1, seed=3, prefix="benchx", id_prefix="b3-", values_per_reading=3)
    counted = Counted()
    native = list(islice(native_stream(fleet, counted), 4))  # one message per kind
    decoded = [decode_native(m.topic, m.payload, datetime.now(UTC)) for m in native]
    assert all(isinstance(d, list) and len(d) == 1 for d in decoded), decoded
    assert [len(r.metrics) for d in decoded if isinstance(d, list) for r in d] == [3] * 4
    assert (counted.messages, counted.values) == (4, 12)
    packs = list(islice(senml_stream(fleet, Counted()), 4))
    readings = [decode_senml(m.topic, m.payload, datetime.now(UTC), None) for m in packs]
    assert all(len(r.metrics) == 3 for d in readings if isinstance(d, list) for r in d), readings[0]
    # 0 keeps every metric of the kind: more values than 3 on average.
    whole = Fleet(per_kind=1, seed=3, prefix="benchx", id_prefix="b0-")
    full = Counted()
    list(islice(native_stream(whole, full), 4))
    assert full.values > 12


def test_a_probe_phase_counts_only_the_fleet_messages_it_hands_to_the_publisher() -> None:
    """The publisher stops between two messages: whatever it took last, every fleet message
    counted must have been taken (else the bench waits for rows that never come)."""
    fleet = Fleet(per_kind=1, seed=3, prefix="benchx", id_prefix="bp-")
    counted = Counted()
    probes = Probes(devices=["bp-probe-00", "bp-probe-01"], prefix="benchx", interval_s=0.0)
    stream = probes.messages(native_stream(fleet, counted))
    fleet_ids = {d.device_id for d in fleet.devices}
    taken = 0
    for msg in islice(stream, 12):  # interval 0: a probe before every fleet message
        taken += msg.device_id in fleet_ids
        assert counted.messages == taken
    assert 0 < taken < 12


@pytest.mark.stack
def test_tiny_bench_report_is_whole_and_every_phase_stored_what_it_published(
    stack: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    run_bench(
        stack,
        rate=0,
        duration_s=1,
        per_kind=1,
        phase_s=2,
        burst_s=1,
        warmup_s=2,
        json_path=out,
    )
    report = json.loads(out.read_text())
    assert report["broker"] == stack.mqtt_broker  # the figures are the broker's too
    assert report["values_per_reading"] == 3  # issue 11's readings, by default
    # The warm-up is load, not a phase: it is in no figure and no count.
    assert report["warmup_s"] == 2
    names = [p["name"] for p in report["phases"]]
    assert names == ["saturation", "senml", "25 %", "50 %", "75 %", "burst"]
    for p in report["phases"]:
        assert p["values"] > 0, p["name"]
        # Counted in the readings table after the run: nothing lost, nothing doubled.
        assert p["stored"] == p["values"] == p["stored_distinct"], p["name"]
        assert p["box_cpu_s"] > 0 and p["own_cpu_s"] > 0, p["name"]
        # JIT compiling is part of a JVM's own CPU, never more than it.
        for part, jit in p["jit_cpu_s"].items():
            assert 0 <= jit <= p["cpu_by_process"][part] + 0.05, (p["name"], part)
    by_name = {p["name"]: p for p in report["phases"]}
    assert report["reference_rate"] == pytest.approx(by_name["saturation"]["msg_per_s"])
    assert by_name["50 %"]["target_rate"] == pytest.approx(report["reference_rate"] / 2)
    for share in ("25 %", "50 %", "75 %"):
        assert set(by_name[share]["latency_ms"]) == {"p50", "p95", "p99"}
        assert set(by_name[share]["received_ms"]) == {"p50", "p99"}
        seen, crossings = by_name[share]["alerts"]
        assert crossings > 0 and seen <= crossings
    assert by_name["burst"]["peak_lag"] is not None
    assert set(report["rss_mb"]) == {"ingest", "processor", "alerts"}
    assert all(mb > 0 for mb in report["rss_mb"].values())
    assert [t["key"] for t in report["targets"]] == [key for key, *_ in TARGETS]


def _children(pid: int) -> set[int]:
    """Every process below `pid` (the services a bench started), by the bench's own reader."""
    return set(tree_cpu([pid])) - {pid}


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


@pytest.mark.stack
async def test_a_bench_stopped_by_sigterm_stops_its_services_and_removes_its_devices(
    stack: Settings, dbcon: asyncpg.Connection, log_dir: Path
) -> None:
    """Until 2026-12-05 SIGTERM ended the bench at once: its gateway, processor and alerts
    service ran on for half an hour, and the operations centre showed its 200 devices as
    offline. Now it stops as on Ctrl-C (exit 130), through its cleanup."""
    count = "SELECT count(*) FROM devices WHERE device_id LIKE 'bench%'"
    before = await dbcon.fetchval(count)
    cmd = [
        sys.executable, "-m", "services.cli", "bench", "pipeline", "--duration", "5",
        "--phase", "2", "--burst", "1", "--warmup", "0", "--per-kind", "1",
    ]  # fmt: skip
    log_path = log_dir / "bench-sigterm.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=REPO,
            env={**os.environ, "CITYWATCH_STATE_DIR": str(stack.state_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def loaded() -> bool:  # its services run and its devices are stored
            return len(_children(proc.pid)) >= 3 and await dbcon.fetchval(count) > before

        await wait_until(loaded, timeout=120, what=f"the bench under load (log {log_path})")
        services = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 130, f"the bench exited {code}: see {log_path}"
    assert not _alive(services), "services left running"
    assert await dbcon.fetchval(count) == before  # its devices removed with it

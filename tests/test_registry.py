"""The device registry: `citywatch devices import` applies a whole file or none of it, and its
password hashes are the ones Mosquitto's own tool writes.

The CLI runs as a real process (`python -m services.cli devices ...`) against the test
stack's PostgreSQL; each test checks the `devices` table itself. Each test has its own
state folder (so no broker is reloaded) and its own device ids.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from schemas.city import load_city
from services.common.settings import Settings
from services.ingest.registry_cache import RegistryCache
from services.registry.cli import cmd_provision
from services.registry.errors import ImportFailed, RegistryError
from services.registry.importer import parse_csv, parse_yaml, profile_from_fields
from services.registry.integrations import Network, application_of
from services.registry.mosquitto import (
    DeviceLogin,
    IntegrationLogin,
    check_password,
    hash_password,
    render_device_acl,
    render_device_passwd,
    render_services_acl,
    write_broker_files,
)
from tests.harness import REPO, free_port, share_stack_logins, wait_until

UUID = "0f4a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"  # a ChirpStack application id


@dataclass
class Cli:
    env: dict[str, str]
    prefix: str

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "devices",
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def cli(migrated: Settings, dbcon: asyncpg.Connection) -> AsyncIterator[Cli]:
    suffix = uuid.uuid4().hex[:8]
    state = migrated.state_dir / f"registry-{suffix}"
    share_stack_logins(migrated, state)  # the same PostgreSQL as the stack's
    env = {**os.environ, "CITYWATCH_STATE_DIR": str(state), "CITYWATCH_LOG_FORMAT": "text"}
    yield Cli(env=env, prefix=f"r{suffix}-")
    await dbcon.execute("DELETE FROM devices WHERE device_id LIKE $1", f"r{suffix}-%")
    shutil.rmtree(state, ignore_errors=True)


async def registered(db: asyncpg.Connection, prefix: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT device_id, kind, name, area, lat, lon, payload_format, field_mapping::text AS fm,"
        " install_date, calibration::text AS cal, status, password_hash FROM devices"
        " WHERE device_id LIKE $1",
        f"{prefix}%",
    )
    return {r["device_id"]: r for r in rows}


# -- against PostgreSQL, through the real CLI ---------------------------------------------


@pytest.mark.stack
async def test_csv_import_registers_every_device_with_every_field(
    cli: Cli, dbcon: asyncpg.Connection, tmp_path: Path
) -> None:
    p = cli.prefix
    file = tmp_path / "devices.csv"
    file.write_text(
        "id,kind,name,lat,lon,area,payload_format,field_mapping,install_date,calibration\n"
        f"{p}buoy-1,water,Buoy 1,10.627,103.522,Mittapheap,native,,2026-01-10,ph=-0.1\n"
        f'{p}gauge-1,flood,"Gauge, Prek Tuk Sap",10.65,103.56,Prey Nob,ttn,'
        f'waterLevel=water_level_m,2026-02-01,"{{""water_level_m"": 0.05}}"\n'
        f"{p}aq-1,air,,,,,chirpstack,fiware-air-quality,,\n"
    )
    done = await cli.run("import", str(file))
    assert done.returncode == 0, done.stderr
    assert "3 new, 0 updated" in done.stdout

    rows = await registered(dbcon, p)
    assert set(rows) == {f"{p}buoy-1", f"{p}gauge-1", f"{p}aq-1"}
    buoy, gauge, aq = rows[f"{p}buoy-1"], rows[f"{p}gauge-1"], rows[f"{p}aq-1"]
    # areas are stored as the city's ids (the label resolved by City.resolve)
    assert (buoy["kind"], buoy["name"], buoy["area"]) == ("water", "Buoy 1", "mittapheap")
    assert (buoy["lat"], buoy["lon"], buoy["install_date"]) == (10.627, 103.522, date(2026, 1, 10))
    assert json.loads(buoy["cal"]) == {"ph": -0.1} and buoy["fm"] is None
    assert gauge["name"] == "Gauge, Prek Tuk Sap" and gauge["payload_format"] == "ttn"
    assert json.loads(gauge["fm"]) == {"waterLevel": "water_level_m"}
    assert json.loads(gauge["cal"]) == {"water_level_m": 0.05}
    assert json.loads(aq["fm"]) == "fiware-air-quality" and aq["lat"] is None
    # Registered and active, but no MQTT login until `provision`.
    assert {r["status"] for r in rows.values()} == {"active"}
    assert all(r["password_hash"] is None for r in rows.values())

    # Importing the same file again changes nothing but `updated_at`: it is idempotent.
    again = await cli.run("import", str(file))
    assert again.returncode == 0 and "0 new, 3 updated" in again.stdout


@pytest.mark.stack
async def test_yaml_import_registers_devices_with_nested_mapping_and_calibration(
    cli: Cli, dbcon: asyncpg.Connection, tmp_path: Path
) -> None:
    p = cli.prefix
    file = tmp_path / "devices.yaml"
    file.write_text(
        "devices:\n"
        f"  - id: {p}boom-3\n"
        "    kind: litter\n"
        "    name: Ream river boom\n"
        "    area: Ream coast\n"
        "    lat: 10.52\n"
        "    lon: 103.63\n"
        "    install_date: 2025-12-01\n"
        f"  - id: {p}tts-7\n"
        "    kind: flood\n"
        "    payload_format: ttn\n"
        "    field_mapping: {waterLevel: water_level_m, rain: rain_mm_h}\n"
        "    calibration:\n"
        "      water_level_m: -0.02\n"
        "    status: disabled\n"
    )
    done = await cli.run("import", str(file))
    assert done.returncode == 0, done.stderr

    rows = await registered(dbcon, p)
    boom, tts = rows[f"{p}boom-3"], rows[f"{p}tts-7"]
    assert (boom["kind"], boom["name"], boom["area"], boom["status"]) == (
        "litter",
        "Ream river boom",
        "ream-coast",
        "active",
    )
    assert boom["install_date"] == date(2025, 12, 1) and (boom["lat"], boom["lon"]) == (
        10.52,
        103.63,
    )
    assert json.loads(tts["fm"]) == {"waterLevel": "water_level_m", "rain": "rain_mm_h"}
    assert json.loads(tts["cal"]) == {"water_level_m": -0.02}
    assert tts["status"] == "disabled"

    listed = await cli.run("list")
    assert f"{p}boom-3" in listed.stdout and f"{p}tts-7" in listed.stdout
    shown = await cli.run("show", f"{p}tts-7")
    assert "disabled" in shown.stdout and "waterLevel" in shown.stdout


@pytest.mark.stack
@pytest.mark.parametrize("fmt", ["csv", "yaml"])
async def test_import_with_a_bad_row_applies_nothing_and_names_the_line(
    cli: Cli, dbcon: asyncpg.Connection, tmp_path: Path, fmt: str
) -> None:
    p = cli.prefix
    if fmt == "csv":
        file = tmp_path / "devices.csv"
        file.write_text(
            "id,kind,lat,lon,calibration\n"
            f"{p}ok-1,water,10.6,103.5,\n"
            f"{p}ok-2,air,10.6,103.5,\n"
            f"{p}bad-1,water,95,103.5,\n"  # line 4: latitude beyond the pole
            f"{p}ok-3,flood,,,water_level_m=0.1\n"
        )
        bad_line, reason = 4, "lat 95.0: Input should be less than or equal to 90"
    else:
        file = tmp_path / "devices.yaml"
        file.write_text(
            f"- id: {p}ok-1\n"
            "  kind: water\n"
            f"- id: {p}ok-2\n"
            "  kind: air\n"
            f"- id: {p}bad-1\n"  # line 5: calibrates a metric water devices do not have
            "  kind: water\n"
            "  calibration: {pm25_ugm3: 1.5}\n"
            f"- id: {p}ok-3\n"
            "  kind: flood\n"
        )
        bad_line, reason = 5, "calibration names 'pm25_ugm3', which is not a water metric"

    done = await cli.run("import", str(file))
    assert done.returncode == 2
    assert f"{file}:{bad_line}: {reason}" in done.stderr
    assert "nothing was applied" in done.stderr
    assert await registered(dbcon, p) == {}  # not even the good rows before the bad one


@pytest.mark.stack
async def test_add_refuses_a_registered_id_and_disable_keeps_the_row(
    cli: Cli, dbcon: asyncpg.Connection
) -> None:
    device = f"{cli.prefix}aq-9"
    added = await cli.run("add", device, "--kind", "air", "--area", "Stueng Hav", "--lat", "10.6")
    assert added.returncode == 0, added.stderr
    again = await cli.run("add", device, "--kind", "air")
    assert again.returncode == 2 and "already registered (active)" in again.stderr

    disabled = await cli.run("disable", device)
    assert disabled.returncode == 0, disabled.stderr
    row = (await registered(dbcon, cli.prefix))[device]
    assert (row["status"], row["area"], row["lat"]) == ("disabled", "stueng-hav", 10.6)

    refused = await cli.run("provision", device)
    assert refused.returncode == 2 and "is disabled" in refused.stderr
    missing = await cli.run("disable", f"{cli.prefix}nobody")
    assert missing.returncode == 2 and "is not registered" in missing.stderr


@pytest.mark.stack
async def test_simulated_devices_are_registered_as_such_by_add_and_by_csv_import(
    cli: Cli, dbcon: asyncpg.Connection, tmp_path: Path
) -> None:
    """Issue 14: the registry says which devices are simulated (their alerts are CAP
    Exercise); a device is real unless registered as simulated."""
    p = cli.prefix
    added = await cli.run("add", f"{p}sim-1", "--kind", "flood", "--simulated")
    assert added.returncode == 0, added.stderr
    plain = await cli.run("add", f"{p}real-1", "--kind", "flood")
    assert plain.returncode == 0, plain.stderr
    file = tmp_path / "devices.csv"
    file.write_text(f"id,kind,simulated\n{p}sim-2,air,yes\n{p}real-2,air,false\n{p}real-3,air,\n")
    done = await cli.run("import", str(file))
    assert done.returncode == 0, done.stderr
    rows = await dbcon.fetch(
        "SELECT device_id, simulated FROM devices WHERE device_id LIKE $1", f"{p}%"
    )
    assert {r["device_id"]: r["simulated"] for r in rows} == {
        f"{p}sim-1": True,
        f"{p}real-1": False,
        f"{p}sim-2": True,
        f"{p}real-2": False,
        f"{p}real-3": False,
    }
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,kind,simulated\n{p}x,air,perhaps\n")
    refused = await cli.run("import", str(bad))
    assert refused.returncode == 2 and "simulated 'perhaps' must be one of" in refused.stderr


@pytest.mark.stack
async def test_drinking_water_points_are_registered_by_add_csv_and_yaml_and_shown(
    cli: Cli, dbcon: asyncpg.Connection, tmp_path: Path
) -> None:
    """Issue 14: only a device registered as a drinking-water point is one (the residents'
    page calls its water "drinking water"); every door an engineer uses can say so, and
    `show` and `list` tell which devices are."""
    p = cli.prefix
    added = await cli.run("add", f"{p}tap-1", "--kind", "water", "--drinking-water")
    assert added.returncode == 0, added.stderr
    plain = await cli.run("add", f"{p}buoy-1", "--kind", "water")
    assert plain.returncode == 0, plain.stderr
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(f"id,kind,drinking_water\n{p}tap-2,water,yes\n{p}buoy-2,water,\n")
    yaml_file = tmp_path / "devices.yaml"
    yaml_file.write_text(
        f"- id: {p}tap-3\n  kind: water\n  drinking_water: true\n"
        f"- id: {p}buoy-3\n  kind: water\n  drinking_water: false\n"
    )
    for file in (csv_file, yaml_file):
        done = await cli.run("import", str(file))
        assert done.returncode == 0, done.stderr
    rows = await dbcon.fetch(
        "SELECT device_id, drinking_water FROM devices WHERE device_id LIKE $1", f"{p}%"
    )
    assert {r["device_id"]: r["drinking_water"] for r in rows} == {
        f"{p}tap-1": True,
        f"{p}buoy-1": False,
        f"{p}tap-2": True,
        f"{p}buoy-2": False,
        f"{p}tap-3": True,
        f"{p}buoy-3": False,
    }
    shown = await cli.run("show", f"{p}tap-1")
    assert shown.returncode == 0, shown.stderr
    assert "drinking water:  yes" in shown.stdout
    other = await cli.run("show", f"{p}buoy-1")
    assert "drinking water:  no" in other.stdout
    listed = await cli.run("list")
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines() if line}
    assert "drinking water" in listed.stdout.splitlines()[0]
    # columns: id kind status format area drinking-water login last-seen
    assert lines[f"{p}tap-2"][5] == "yes" and lines[f"{p}buoy-2"][5] == "no"
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,kind,drinking_water\n{p}x,water,perhaps\n")
    refused = await cli.run("import", str(bad))
    assert refused.returncode == 2 and "drinking_water 'perhaps' must be one of" in refused.stderr


# -- pure: no stack ---------------------------------------------------------------------------


def test_our_password_hash_and_mosquitto_passwd_agree_both_ways(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is part of the Debian mosquitto package"
    file = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(file), "dev-1", "s3cret!"], check=True)
    theirs = file.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert check_password("s3cret!", theirs) and not check_password("s3cret", theirs)

    ours = hash_password("s3cret!")
    assert ours.startswith("$7$101$") and ours != hash_password("s3cret!")  # salted
    assert check_password("s3cret!", ours)
    # Byte for byte what mosquitto_passwd computes, given its salt.
    salt = base64.b64decode(theirs.split("$")[3])
    assert hash_password("s3cret!", salt=salt) == theirs


def test_acl_gives_a_device_its_own_uplink_only_and_no_read() -> None:
    acl = render_device_acl([DeviceLogin("buoy-1", "water", "$7$x")])
    block = acl.split("user buoy-1\n", 1)[1]
    assert block.strip() == "topic write citywatch/water/buoy-1/up"
    assert "citywatch-" not in acl.replace("citywatch/", "")  # no service account here
    services = render_services_acl()
    assert "user citywatch-ingest\ntopic read +/+/+/up" in services
    assert "user citywatch-alerts\ntopic readwrite citywatch/alerts/#" in services
    assert "NOT FOR PRODUCTION" in services.split("user citywatch-simulator")[0]


def test_an_integration_may_publish_its_applications_uplinks_only_and_read_nothing() -> None:
    logins = [
        DeviceLogin("buoy-1", "water", "$7$a"),
        IntegrationLogin("river", "ttn", application_of("ttn", "river-gauges", "ttn"), "$7$b"),
        IntegrationLogin(
            "port", "chirpstack", application_of("chirpstack", UUID.upper(), None), "$7$c"
        ),
    ]
    acl = render_device_acl(logins)
    assert "user citywatch-integration-river\ntopic write v3/river-gauges@ttn/devices/+/up\n" in acl
    assert (
        f"user citywatch-integration-port\ntopic write application/{UUID}/device/+/event/up\n"
        in acl
    )
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert all(r.startswith(("user ", "topic write ")) for r in rules)  # no read, no wildcard
    assert not any("#" in r for r in rules) and len(rules) == 6
    assert render_device_passwd(logins).splitlines() == [
        "buoy-1:$7$a",
        "citywatch-integration-port:$7$c",
        "citywatch-integration-river:$7$b",
    ]
    assert application_of("ttn", "river-gauges", None) == "river-gauges"  # Open Source


@pytest.mark.parametrize(
    ("network", "app", "tenant"),
    [
        ("ttn", "+", "ttn"),  # a wildcard would widen the ACL line
        ("ttn", "a/devices/#", "ttn"),
        ("ttn", "River", "ttn"),
        ("ttn", "river", "t t"),
        ("chirpstack", "not-a-uuid", None),
        ("chirpstack", UUID, "ttn"),
    ],
)
def test_an_integration_names_exactly_one_application(
    network: Network, app: str, tenant: str | None
) -> None:
    with pytest.raises(RegistryError):
        application_of(network, app, tenant)


def test_services_acl_grants_uplink_reads_by_pattern_so_a_restored_session_is_queued_for() -> None:
    """Issue 10: Mosquitto 2.0 applies `user` lines only once a client has connected, so the
    gateway's session restored after a broker crash is queued for only through `pattern`
    lines (tests/test_broker_crash.py shows it end to end)."""
    lines = render_services_acl(simulator=False).splitlines()
    patterns = [line for line in lines if line.startswith("pattern ")]
    assert patterns == [
        "pattern read +/+/+/up",
        "pattern read v3/+/devices/+/up",
        "pattern read application/+/device/+/event/up",
    ]
    assert lines.index(patterns[-1]) < lines.index("user citywatch-ingest")


def test_production_brokers_can_leave_the_simulator_account_out(tmp_path: Path) -> None:
    """Issue 10: the simulator may publish as any device; `mqtt_simulator_account: false`
    writes neither its password nor its ACL lines."""
    accounts = {"citywatch-ingest": "a", "citywatch-alerts": "b", "citywatch-simulator": "c"}
    files = write_broker_files(tmp_path, accounts, [], owner=None, simulator=False)
    passwd, acl = files.services_passwd.read_text(), files.services_acl.read_text()
    assert "citywatch-simulator" not in passwd and "citywatch-simulator" not in acl
    assert "citywatch-ingest:" in passwd and "user citywatch-alerts" in acl
    files = write_broker_files(tmp_path, accounts, [], owner=None)
    assert "citywatch-simulator:" in files.services_passwd.read_text()


def test_device_password_file_never_holds_a_reserved_id() -> None:
    """A `citywatch-` id that reached the database some other way still cannot log in on
    the device listener, where its client id would be a service's."""
    passwd = render_device_passwd(
        [DeviceLogin("buoy-1", "water", "$7$a"), DeviceLogin("CityWatch-ingest-1", "air", "$7$b")]
    )
    assert passwd == "buoy-1:$7$a\n"


@pytest.mark.parametrize("device_id", ["citywatch-ingest-1", "CityWatch-delivery-x"])
def test_no_login_is_provisioned_for_an_id_that_is_a_service_client_id(
    device_id: str, tmp_path: Path
) -> None:
    """Refused before the database is even asked (none is reachable here)."""
    settings = Settings(state_dir=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/x")
    with pytest.raises(RegistryError, match="CityWatch's own client ids"):
        cmd_provision(settings, argparse.Namespace(id=device_id), io.StringIO())


def test_every_bad_row_is_reported_with_its_line_in_one_pass() -> None:
    with pytest.raises(ImportFailed) as failed:
        parse_csv(
            "id,kind,install_date\n"
            "a-1,water,2026-01-01\n"
            "a-2,sea,\n"
            "a-3,air,yesterday\n"
            "a-1,water,\n"
            "citywatch-ingest,air,\n"
            "citywatch-ingest-1,air,\n",
            source="f.csv",
        )
    lines = [(p.line, p.reason.split(":")[0]) for p in failed.value.problems]
    assert [line for line, _ in lines] == [3, 4, 5, 6, 7]
    assert "kind 'sea'" in lines[0][1]
    assert "install_date" in lines[1][1]
    assert "also on line 2" in failed.value.problems[2].reason
    assert "reserved for a CityWatch service account" in failed.value.problems[3].reason
    # Not only the accounts: every id a service's MQTT client may use (issue 10, point 2).
    assert "reserved for a CityWatch service account" in failed.value.problems[4].reason

    with pytest.raises(ImportFailed) as bad_yaml:
        parse_yaml("- id: x-1\n  kind: water\n- id: x-2\n  kind: [\n", source="f.yaml")
    assert bad_yaml.value.problems[0].reason.startswith("not valid YAML")
    assert bad_yaml.value.problems[0].line >= 4


# -- the gateway's cache ------------------------------------------------------------------------


@pytest.mark.stack
async def test_gateway_cache_serves_its_last_snapshot_when_the_database_goes_away(
    cli: Cli, migrated: Settings
) -> None:
    device = f"{cli.prefix}cache-1"
    done = await cli.run("add", device, "--kind", "water", "--calibration", "ph=-0.2")
    assert done.returncode == 0, done.stderr
    pool = await asyncpg.create_pool(migrated.database_dsn, min_size=0, max_size=1)
    async with RegistryCache(pool, refresh_s=0.2) as cache:
        await asyncio.wait_for(cache.warm.wait(), 10)
        profile = cache.get(device)
        assert profile is not None and profile.calibration == {"ph": -0.2}
        assert cache.get(f"{cli.prefix}nobody") is None

        await pool.close()  # from now on every reload fails

        async def reload_failed() -> bool:
            return not cache.healthy

        await wait_until(reload_failed, timeout=10, what="a failed registry reload")
        # Still warm (the gateway stays ready) and still answering from the snapshot.
        assert cache.warm.is_set() and cache.get(device) == profile


def _lookups(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "citywatch_ingest_registry_lookups_total", {"outcome": outcome}
    )
    return value or 0.0


@pytest.mark.stack
async def test_gateway_cache_finds_a_device_registered_after_its_snapshot_at_the_source(
    cli: Cli, migrated: Settings
) -> None:
    device, stranger = f"{cli.prefix}late-1", f"{cli.prefix}nobody"
    pool = await asyncpg.create_pool(migrated.database_dsn, min_size=0, max_size=2)
    try:
        async with RegistryCache(pool, refresh_s=3600) as cache:
            await asyncio.wait_for(cache.warm.wait(), 10)
            done = await cli.run("add", device, "--kind", "flood")
            assert done.returncode == 0, done.stderr
            assert cache.get(device) is None  # the snapshot predates it
            found = await cache.check_source(device)
            assert found is not None and found.kind == "flood"
            assert cache.get(device) == found  # kept: the next message needs no lookup

            # A flood of one unknown id asks PostgreSQL once; the rest are remembered.
            absent, remembered = _lookups("absent"), _lookups("remembered")
            for _ in range(100):
                assert await cache.check_source(stranger) is None
            assert _lookups("absent") - absent == 1
            assert _lookups("remembered") - remembered == 99
    finally:
        await pool.close()


@pytest.mark.stack
async def test_gateway_cache_limits_lookups_of_many_unknown_ids(
    cli: Cli, migrated: Settings
) -> None:
    pool = await asyncpg.create_pool(migrated.database_dsn, min_size=0, max_size=2)
    try:
        async with RegistryCache(pool, refresh_s=3600, lookups_per_s=5) as cache:
            await asyncio.wait_for(cache.warm.wait(), 10)
            absent, throttled = _lookups("absent"), _lookups("throttled")
            for n in range(50):
                assert await cache.check_source(f"{cli.prefix}flood-{n}") is None
            asked = _lookups("absent") - absent
            # A burst of one second's worth (5), plus what refilled while they ran.
            assert 5 <= asked < 50
            assert _lookups("throttled") - throttled == 50 - asked
    finally:
        await pool.close()


@pytest.mark.stack
async def test_gateway_cache_is_not_warm_until_the_registry_has_loaded_once() -> None:
    # Nothing listens on a fresh free port: the database is "down" from the start.
    dsn = f"postgresql://citywatch@127.0.0.1:{free_port()}/citywatch"
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=1)
    try:
        async with RegistryCache(pool, refresh_s=0.2) as cache:
            before = (
                REGISTRY.get_sample_value("citywatch_ingest_registry_refresh_errors_total") or 0.0
            )

            async def failed_once() -> bool:
                now = REGISTRY.get_sample_value("citywatch_ingest_registry_refresh_errors_total")
                return (now or 0.0) > before

            await wait_until(failed_once, timeout=10, what="a failed first load")
            assert not cache.warm.is_set() and not cache.healthy
    finally:
        await pool.close()


@pytest.mark.stack
async def test_add_refuses_an_area_the_city_does_not_have(
    cli: Cli, dbcon: asyncpg.Connection
) -> None:
    device = f"{cli.prefix}gauge-x"
    refused = await cli.run("add", device, "--kind", "flood", "--area", "Stung Hav")
    assert refused.returncode == 2
    assert "area 'Stung Hav' is not an area of" in refused.stderr
    assert "stueng-hav (Stueng Hav" in refused.stderr  # the known areas, to pick from
    assert await registered(dbcon, cli.prefix) == {}


def test_an_area_label_resolves_to_the_citys_id_or_is_refused() -> None:
    city = load_city()
    for label in ("Stueng Hav", "stueng-hav", "Stueng Hav (port and industrial coast)"):
        profile = profile_from_fields({"id": "g-1", "kind": "flood", "area": label}, city)
        assert profile.area == "stueng-hav"
    with pytest.raises(ValueError, match="'Atlantis' is not an area of"):
        profile_from_fields({"id": "g-1", "kind": "flood", "area": "Atlantis"}, city)
    bad = "id,kind,area\ng-1,flood,Mittapheap\ng-2,flood,Atlantis\n"
    with pytest.raises(ImportFailed, match=r"<csv>:3: area 'Atlantis'"):
        parse_csv(bad, city=city)

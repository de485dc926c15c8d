"""`citywatch devices add/import/show/profiles` accept everything docs/devices.md says can be
written (issue 13): `-` to ignore a field, `metric@unit`, `time@UTC`, catalog metrics,
profiles with their per-device parameters; and refuse a bad mapping naming every bad entry.
Driven through the real CLI against the test stack's PostgreSQL, checked in the registry."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from schemas.adapters import decode
from services.registry import store
from tests import test_registry
from tests.adapter_contract import RECEIVED, _readings
from tests.test_adapter_ttn import TTS_UPLINK_EXAMPLE
from tests.test_registry import Cli

pytestmark = pytest.mark.stack
cli = test_registry.cli  # the registry tests' fixture: a CLI with its own id prefix


def _uplink(device_id: str, decoded: dict[str, object]) -> tuple[str, bytes]:
    body = json.loads(json.dumps(TTS_UPLINK_EXAMPLE))
    body["end_device_ids"]["device_id"] = device_id
    body["uplink_message"]["decoded_payload"] = decoded
    return f"v3/app1@ttn/devices/{device_id}/up", json.dumps(body).encode()


async def test_add_accepts_ignore_unit_and_utc_targets_and_the_gateway_decodes_with_them(
    cli: Cli, dbcon: asyncpg.Connection
) -> None:
    gauge = f"{cli.prefix}gauge-7"
    done = await cli.run(
        "add", gauge, "--kind", "flood", "--format", "ttn",
        "--mapping", "waterLevel=water_level_m@cm; battery=battery_pct; status=-; "
        "seen=time@UTC; co2=co2_ppm",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    entry = await store.get_device(dbcon, gauge)
    assert entry.profile.field_mapping == {
        "waterLevel": "water_level_m@cm",
        "battery": "battery_pct",
        "status": "-",
        "seen": "time@UTC",
        "co2": "co2_ppm",
    }
    # The registered entry, as the gateway loads it, decodes the docs' uplink example.
    topic, payload = _uplink(gauge, {"waterLevel": 235, "battery": 91, "status": 3})
    (reading,) = _readings(decode(topic, payload, RECEIVED, lookup={gauge: entry.profile}.get))
    assert reading.metrics == {"water_level_m": 2.35, "battery_pct": 91, "rssi_dbm": -35}


async def test_csv_and_yaml_import_accept_what_the_docs_say_and_a_bad_mapping_names_every_entry(
    cli: Cli, dbcon: asyncpg.Connection, tmp_path: Path
) -> None:
    p = cli.prefix
    csv = tmp_path / "devices.csv"
    csv.write_text(
        "id,kind,payload_format,field_mapping\n"
        f'{p}aq-1,air,chirpstack,"pm2_5=pm25_ugm3; relativeHumidity=humidity_pct@/; '
        f'temperature=temperature_c@Cel; status=-; co2=co2_ppm@ppm"\n'
    )
    yml = tmp_path / "devices.yaml"
    yml.write_text(
        "devices:\n"
        f"  - id: {p}ctd-1\n"
        "    kind: water\n"
        "    format: ttn\n"
        "    field_mapping: {water_depth: depth_m@mm, temperature: temperature_c,\n"
        "                    electrical_conductivity: conductivity_uscm@uS/cm,\n"
        "                    device_id: '-', protocol_version: '-', dateObserved: time@UTC}\n"
    )
    for file in (csv, yml):
        done = await cli.run("import", str(file))
        assert done.returncode == 0, done.stderr
    aq = (await store.get_device(dbcon, f"{p}aq-1")).profile
    ctd = (await store.get_device(dbcon, f"{p}ctd-1")).profile
    assert aq.field_mapping is not None and aq.field_mapping["status"] == "-"
    assert isinstance(ctd.field_mapping, dict) and ctd.field_mapping["water_depth"] == "depth_m@mm"

    bad = tmp_path / "bad.csv"
    bad.write_text(
        f'id,kind,field_mapping\n{p}bad-1,flood,"a=ph; b=water_level_m@kg; c=lat@x; d=-"\n'
    )
    refused = await cli.run("import", str(bad))
    assert refused.returncode != 0
    for part in ("'a' -> 'ph'", "'b' -> 'water_level_m@kg'", "'c' -> 'lat@x'"):
        assert part in refused.stderr, refused.stderr
    assert (
        await dbcon.fetchval("SELECT count(*) FROM devices WHERE device_id = $1", f"{p}bad-1") == 0
    )


async def test_add_with_a_profile_and_parameters_is_shown_and_decodes_the_vendor_example(
    cli: Cli, dbcon: asyncpg.Connection
) -> None:
    gauge = f"{cli.prefix}mbx-1"
    listed = await cli.run("profiles")
    assert listed.returncode == 0, listed.stderr
    assert "decentlab-dl-mbx  (flood, ttn)" in listed.stdout
    assert "--param mount_height_m=..." in listed.stdout

    missing = await cli.run("add", gauge, "--profile", "decentlab-dl-mbx")
    assert missing.returncode != 0 and "mount_height_m" in missing.stderr
    done = await cli.run(
        "add", gauge, "--profile", "decentlab-dl-mbx",
        "--param", "mount_height_m=3", "--param", "datum_offset_m=0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = await cli.run("show", gauge)
    assert "profile:         decentlab-dl-mbx" in shown.stdout
    assert "parameters:      datum_offset_m=0.5; mount_height_m=3" in shown.stdout
    assert "level_from_distance (distance_m -> water_level_m)" in shown.stdout

    entry = await store.get_device(dbcon, gauge)
    topic, payload = _uplink(gauge, {"distance": {"unit": "mm", "value": 1234}, "device_id": 303})
    (reading,) = _readings(decode(topic, payload, RECEIVED, lookup={gauge: entry.profile}.get))
    assert reading.metrics["water_level_m"] == pytest.approx(3 - 1.234 + 0.5)
    assert reading.metrics["distance_m"] == pytest.approx(1.234)

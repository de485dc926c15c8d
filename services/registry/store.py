"""The device registry in PostgreSQL: the `devices` table's registry columns (0001, 0003,
0010, 0013, 0014).

Rows the processor creates for devices nobody registered carry status `unprovisioned`;
registering such a device (`add` or `import`) adopts the row, keeping its history
(first/last seen). Every write sets `updated_at`, and multi-row writes run in one
transaction, so an import is applied whole or not at all.

JSON columns travel as text cast to `jsonb` in SQL, so this module needs no codec set-up
on the connection and works with a plain connection or one lent by a pool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from schemas.device import DeviceProfile, DeviceStatus
from services.common.db import CONNECTION_ERRORS, Conn, connect
from services.common.errors import DatabaseUnavailable
from services.registry.errors import DeviceExists, DeviceNotFound
from services.registry.integrations import integration_logins
from services.registry.mosquitto import DeviceLogin, ListenerLogin

__all__ = [
    "DeviceEntry",
    "ImportResult",
    "add_device",
    "device_logins",
    "fetch_device_logins",
    "get_device",
    "list_devices",
    "load_profile",
    "load_profiles",
    "set_password_hash",
    "set_status",
    "upsert_devices",
]

_PROFILE_COLUMNS = (
    "device_id, kind, name, area, lat, lon, payload_format, field_mapping::text, "
    "install_date, calibration::text, qc_overrides::text, status, simulated, drinking_water, "
    "profile, params::text, derived::text, measurements::text, also_kinds"
)


@dataclass(frozen=True)
class DeviceEntry:
    """A registry row as an operator sees it: the profile plus what the platform observed."""

    profile: DeviceProfile
    has_credentials: bool
    first_seen: datetime | None
    last_seen: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int


def _profile(row: asyncpg.Record) -> DeviceProfile:
    return DeviceProfile(
        device_id=row["device_id"],
        kind=row["kind"],
        name=row["name"],
        area=row["area"],
        lat=row["lat"],
        lon=row["lon"],
        payload_format=row["payload_format"],
        field_mapping=json.loads(row["field_mapping"]) if row["field_mapping"] else None,
        install_date=row["install_date"],
        calibration=json.loads(row["calibration"]),
        qc_overrides=json.loads(row["qc_overrides"]),
        status=row["status"],
        simulated=row["simulated"],
        drinking_water=row["drinking_water"],
        profile=row["profile"],
        params=json.loads(row["params"]),
        derived=json.loads(row["derived"]),
        measurements=json.loads(row["measurements"]) if row["measurements"] else None,
        also_kinds=tuple(row["also_kinds"]),
    )


def _entry(row: asyncpg.Record) -> DeviceEntry:
    return DeviceEntry(
        profile=_profile(row),
        has_credentials=row["password_hash"] is not None,
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        updated_at=row["updated_at"],
    )


_ENTRY_SELECT = (
    f"SELECT {_PROFILE_COLUMNS}, password_hash, first_seen, last_seen, updated_at FROM devices"
)


async def load_profiles(con: Conn) -> list[DeviceProfile]:
    """Every registered device the gateway must know: active and disabled ones.
    Unprovisioned rows are not registrations, so the unknown-device policy applies to them."""
    rows = await con.fetch(
        f"SELECT {_PROFILE_COLUMNS} FROM devices WHERE status IN ('active', 'disabled')"
    )
    return [_profile(r) for r in rows]


async def load_profile(con: Conn, device_id: str) -> DeviceProfile | None:
    """One device as `load_profiles` would give it, or None: the gateway's check at the source
    when its snapshot does not know the device (services/ingest/registry_cache.py)."""
    row = await con.fetchrow(
        f"SELECT {_PROFILE_COLUMNS} FROM devices "
        "WHERE device_id = $1 AND status IN ('active', 'disabled')",
        device_id,
    )
    return None if row is None else _profile(row)


async def list_devices(con: Conn, status: DeviceStatus | None = None) -> list[DeviceEntry]:
    rows = await con.fetch(
        f"{_ENTRY_SELECT} WHERE $1::text IS NULL OR status = $1 ORDER BY device_id", status
    )
    return [_entry(r) for r in rows]


async def get_device(con: Conn, device_id: str) -> DeviceEntry:
    row = await con.fetchrow(f"{_ENTRY_SELECT} WHERE device_id = $1", device_id)
    if row is None:
        raise DeviceNotFound(device_id)
    return _entry(row)


def _params(p: DeviceProfile) -> tuple[Any, ...]:
    return (
        p.device_id,
        p.kind,
        p.name,
        p.area,
        p.lat,
        p.lon,
        p.payload_format,
        None if p.field_mapping is None else json.dumps(p.field_mapping),
        p.install_date,
        json.dumps(p.calibration),
        json.dumps(p.qc_overrides),
        p.status,
        p.simulated,
        p.drinking_water,
        p.profile,
        json.dumps(p.params),
        json.dumps([d.model_dump(exclude_none=True) for d in p.derived]),
        None if p.measurements is None else p.measurements.model_dump_json(),
        ",".join(p.also_kinds),
    )


_UPSERT = """
INSERT INTO devices AS d (device_id, kind, name, area, lat, lon, payload_format, field_mapping,
                          install_date, calibration, qc_overrides, status, simulated,
                          drinking_water, profile, params, derived, measurements, also_kinds,
                          updated_at)
SELECT u.id, u.kind, u.name, u.area, u.lat, u.lon, u.fmt, u.mapping::jsonb,
       u.installed, u.calibration::jsonb, u.qc::jsonb, u.status, u.simulated,
       u.drinking_water, u.profile, u.params::jsonb, u.derived::jsonb, u.measurements::jsonb,
       coalesce(string_to_array(nullif(u.also_kinds, ''), ','), '{{}}'), now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[],
            $7::text[], $8::text[], $9::date[], $10::text[], $11::text[], $12::text[],
            $13::bool[], $14::bool[], $15::text[], $16::text[], $17::text[], $18::text[],
            $19::text[])
     AS u(id, kind, name, area, lat, lon, fmt, mapping, installed, calibration, qc, status,
          simulated, drinking_water, profile, params, derived, measurements, also_kinds)
ON CONFLICT (device_id) DO UPDATE SET
    kind = EXCLUDED.kind, name = EXCLUDED.name, area = EXCLUDED.area,
    lat = EXCLUDED.lat, lon = EXCLUDED.lon, payload_format = EXCLUDED.payload_format,
    field_mapping = EXCLUDED.field_mapping, install_date = EXCLUDED.install_date,
    calibration = EXCLUDED.calibration, qc_overrides = EXCLUDED.qc_overrides,
    status = EXCLUDED.status, simulated = EXCLUDED.simulated,
    drinking_water = EXCLUDED.drinking_water, profile = EXCLUDED.profile,
    params = EXCLUDED.params, derived = EXCLUDED.derived,
    measurements = EXCLUDED.measurements, also_kinds = EXCLUDED.also_kinds,
    updated_at = now()
{where}
RETURNING (xmax = 0) AS created
"""


async def upsert_devices(con: Conn, profiles: Sequence[DeviceProfile]) -> ImportResult:
    """Create or update every device in one statement inside one transaction: all or none."""
    columns = list(zip(*(_params(p) for p in profiles), strict=True)) if profiles else [()] * 19
    async with con.transaction():
        rows = await con.fetch(_UPSERT.format(where=""), *(list(c) for c in columns))
    created = sum(1 for r in rows if r["created"])
    return ImportResult(created=created, updated=len(rows) - created)


async def add_device(con: Conn, profile: DeviceProfile) -> bool:
    """Register one device; True if new, False if an unprovisioned row was adopted.
    A device already registered (active or disabled) is refused, not silently changed."""
    async with con.transaction():
        rows = await con.fetch(
            _UPSERT.format(where="WHERE d.status = 'unprovisioned'"),
            *([v] for v in _params(profile)),
        )
        if not rows:
            status = await con.fetchval(
                "SELECT status FROM devices WHERE device_id = $1", profile.device_id
            )
            raise DeviceExists(profile.device_id, str(status))
    return bool(rows[0]["created"])


async def set_status(con: Conn, device_id: str, status: DeviceStatus) -> DeviceProfile:
    row = await con.fetchrow(
        f"UPDATE devices SET status = $2, updated_at = now() WHERE device_id = $1 "
        f"AND status <> 'unprovisioned' RETURNING {_PROFILE_COLUMNS}",
        device_id,
        status,
    )
    if row is None:
        raise DeviceNotFound(device_id)
    return _profile(row)


async def set_password_hash(con: Conn, device_id: str, password_hash: str) -> DeviceProfile:
    row = await con.fetchrow(
        f"UPDATE devices SET password_hash = $2, updated_at = now() WHERE device_id = $1 "
        f"AND status <> 'unprovisioned' RETURNING {_PROFILE_COLUMNS}",
        device_id,
        password_hash,
    )
    if row is None:
        raise DeviceNotFound(device_id)
    return _profile(row)


async def device_logins(con: Conn) -> list[DeviceLogin]:
    """Active devices with credentials: the ones Mosquitto lets in."""
    rows = await con.fetch(
        "SELECT device_id, kind, password_hash FROM devices "
        "WHERE status = 'active' AND password_hash IS NOT NULL ORDER BY device_id"
    )
    return [DeviceLogin(r["device_id"], r["kind"], r["password_hash"]) for r in rows]


async def fetch_device_logins(dsn: str) -> list[ListenerLogin] | None:
    """The device listener's logins (devices and network-server integrations), [] before
    the registry migration, None if PostgreSQL is down (the caller then keeps the files it
    has rather than lock every device out)."""
    try:
        con = await connect(dsn, timeout=5)
    except DatabaseUnavailable:
        return None
    try:
        return [*await device_logins(con), *await integration_logins(con)]
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return []  # not migrated yet: no device can have credentials
    except CONNECTION_ERRORS:
        return None
    finally:
        await con.close()

"""`citywatch devices ...`: register, list, disable and provision the city's devices.

Each command is a function `(settings, args, out) -> exit status`; `add_parser` wires them
into the `citywatch` command line. Commands that change who may log in (add, import,
disable, enable, provision) regenerate Mosquitto's password and ACL files afterwards and
have a running local broker reload them (`Mosquitto.sync_auth`; Artemis reads them again
by itself). Against an external
broker the files are still written into the state folder, for the operator to deploy.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from schemas.city import load_city
from schemas.device import Derivation, DeviceProfile
from services.common import db
from services.common.settings import Settings
from services.registry import store
from services.registry.errors import RegistryError
from services.registry.importer import parse_file, profile_from_fields
from services.registry.mosquitto import (
    SERVICE_ID_PREFIX,
    hash_password,
    new_password,
    reserved_id,
)
from services.registry.profiles import PROFILES_DIR, load_profiles, missing_params

__all__ = ["add_parser", "cmd_devices"]

T = TypeVar("T")


def _with_db(settings: Settings, work: Callable[[db.Conn], Awaitable[T]]) -> T:
    async def main() -> T:
        con = await db.connect(settings.database_dsn)
        try:
            return await work(con)
        finally:
            await con.close()

    return asyncio.run(main())


def _sync_broker(settings: Settings, out: TextIO) -> bool:
    """Regenerate the broker's files and reload it; say where they are. False when the
    registry could not be read (the files are left as they were)."""
    from services.stack.components import mqtt_broker

    broker = mqtt_broker(settings)
    if not broker.sync_auth():
        print(
            f"warning: PostgreSQL could not be read; {broker.name}'s files were left as they were",
            file=out,
        )
        return False
    if broker.managed and broker.pid() is not None:
        print(
            f"{broker.name}: password and ACL files regenerated and reloaded (pid {broker.pid()})",
            file=out,
        )
    elif broker.managed:
        print(
            f"{broker.name}: password and ACL files regenerated in {broker.dir}; "
            "it is not running: `citywatch stack up` starts it with them",
            file=out,
        )
    else:
        # An external broker: compose's and deploy/artemis/'s Artemis read this very folder
        # (a shared volume) and take the files at the next login; others need them installed.
        then = (
            "a broker that reads this folder takes them at its next login"
            if broker.name == "artemis"
            else "install them on your broker and reload it (SIGHUP)"
        )
        print(
            f"{broker.name}: password and ACL files regenerated in {broker.dir} (devices.* for "
            f"the device listener, services.* for the services listener); {then}",
            file=out,
        )
    return True


# -- the commands --------------------------------------------------------------------------


def cmd_add(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    fields: dict[str, Any] = {
        "id": args.id,
        "kind": args.kind,
        "name": args.name,
        "lat": args.lat,
        "lon": args.lon,
        "area": args.area,
        "payload_format": args.payload_format,
        "field_mapping": args.field_mapping,
        "install_date": args.install_date,
        "calibration": args.calibration,
        "simulated": args.simulated,
        "drinking_water": args.drinking_water,
        "profile": args.profile,
        "params": "; ".join(args.param) or None,
        "derived": "; ".join(args.derive) or None,
        "also_kinds": "; ".join(args.also_kind) or None,
    }
    try:
        profile = profile_from_fields(fields, load_city(settings.city_file))
    except ValueError as exc:
        raise RegistryError(f"device {args.id!r} not added: {exc}") from None
    created = _with_db(settings, lambda con: store.add_device(con, profile))
    verb = "registered" if created else "registered (it had reported before, unprovisioned)"
    print(f"device {profile.device_id} {verb}: {profile.kind}, status active", file=out)
    print(
        f"give it MQTT credentials with `citywatch devices provision {profile.device_id}`", file=out
    )
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    # every row checked (areas resolved to the city's ids) before anything is written
    profiles = parse_file(Path(args.file), load_city(settings.city_file))
    result = _with_db(settings, lambda con: store.upsert_devices(con, profiles))
    print(
        f"imported {len(profiles)} devices from {args.file}: "
        f"{result.created} new, {result.updated} updated",
        file=out,
    )
    _sync_broker(settings, out)
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    entries = _with_db(settings, lambda con: store.list_devices(con, args.status))
    header = ("id", "kind", "status", "format", "area", "drinking water", "login", "last seen")
    rows = [
        (
            e.profile.device_id,
            e.profile.kind,
            e.profile.status,
            e.profile.payload_format,
            e.profile.area or "-",
            "yes" if e.profile.drinking_water else "no",
            "yes" if e.has_credentials else "no",
            e.last_seen.isoformat(timespec="seconds") if e.last_seen else "never",
        )
        for e in entries
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
    print(f"{len(rows)} device(s)", file=out)
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    entry = _with_db(settings, lambda con: store.get_device(con, args.id))
    p = entry.profile
    facts: list[tuple[str, object]] = [
        ("id", p.device_id),
        ("kind", p.kind),
        ("status", p.status),
        ("name", p.name),
        ("area", p.area),
        ("location", f"{p.lat}, {p.lon}" if p.lat is not None else None),
        ("payload format", p.payload_format),
        ("field mapping", p.field_mapping),
        ("profile", p.profile),
        ("also reports", ", ".join(p.also_kinds) or None),
        ("parameters", "; ".join(f"{k}={v:g}" for k, v in sorted(p.params.items())) or None),
        ("derived", "; ".join(_derivation(d) for d in p.derived) or None),
        ("measurements", p.measurements.model_dump() if p.measurements else None),
        ("install date", p.install_date),
        ("calibration", p.calibration or None),
        ("qc overrides", p.qc_overrides or None),
        ("simulated", "yes: its alerts are CAP Exercise" if p.simulated else "no"),
        (
            "drinking water",
            "yes: a drinking-water point (boil-water advice)" if p.drinking_water else "no",
        ),
        ("mqtt login", "provisioned" if entry.has_credentials else "none"),
        ("publishes to", f"citywatch/{p.kind}/{p.device_id}/up"),
        ("first seen", entry.first_seen),
        ("last seen", entry.last_seen),
        ("updated", entry.updated_at),
    ]
    for label, value in facts:
        print(f"{label + ':':<16} {'-' if value is None else value}", file=out)
    return 0


def _derivation(d: Derivation) -> str:
    baro = f", barometric {d.baro_metric}" if d.baro_metric else ""
    return f"{d.type} ({d.source_metric} -> {d.target_metric}{baro})"


def cmd_profiles(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """The shipped device profiles: name, kind, model, what it derives and needs."""
    profiles = load_profiles()
    for p in profiles.values():
        needs = missing_params(p.derived, p.params)
        print(
            f"{p.name}  ({p.kind}, {p.payload_format})  {p.vendor} {p.model}: {p.description}",
            file=out,
        )
        if p.derived:
            print(f"    derives: {'; '.join(_derivation(d) for d in p.derived)}", file=out)
        if needs:
            print(f"    needs:   --param {' --param '.join(n + '=...' for n in needs)}", file=out)
        print(f"    codec:   {p.codec}", file=out)
    print(f"{len(profiles)} profile(s) in {PROFILES_DIR}", file=out)
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    _with_db(settings, lambda con: store.set_status(con, args.id, "disabled"))
    print(
        f"device {args.id} disabled: its login is removed and its readings are rejected "
        "(reason device_disabled)",
        file=out,
    )
    _sync_broker(settings, out)
    return 0


def cmd_enable(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    _with_db(settings, lambda con: store.set_status(con, args.id, "active"))
    print(f"device {args.id} enabled", file=out)
    _sync_broker(settings, out)
    return 0


def cmd_provision(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """A new random password: only its hash is stored; the password is printed once."""
    if ":" in args.id:
        raise RegistryError(
            f"device {args.id!r} cannot have an MQTT login: ':' ends a username in "
            "Mosquitto's password file (its readings can still come through a network server)"
        )
    if reserved_id(args.id):
        raise RegistryError(
            f"device {args.id!r} cannot have an MQTT login: ids starting with "
            f"{SERVICE_ID_PREFIX!r} are CityWatch's own client ids"
        )
    password = new_password()

    async def work(con: db.Conn) -> DeviceProfile:
        entry = await store.get_device(con, args.id)
        if entry.profile.status != "active":
            raise RegistryError(
                f"device {args.id!r} is {entry.profile.status}; "
                f"`citywatch devices enable {args.id}` first"
            )
        return await store.set_password_hash(con, args.id, hash_password(password))

    profile = _with_db(settings, work)
    _sync_broker(settings, out)
    print(
        f"\nMQTT credentials for {profile.device_id}. They are shown this once and cannot be\n"
        f"recovered (only a hash is stored); provisioning again replaces them.\n"
        f"  broker:     {settings.mqtt_url}\n"
        f"  client id:  {profile.device_id}\n"
        f"  username:   {profile.device_id}\n"
        f"  password:   {password}\n"
        f"  publish to: citywatch/{profile.kind}/{profile.device_id}/up  (QoS 1)",
        file=out,
    )
    return 0


def cmd_sync(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Regenerate the broker's files from the registry: what every command that changes a
    login does, for where the files must be written without a change (compose's `init`, a
    broker's first start on Kubernetes: deploy/artemis/README.md)."""
    return 0 if _sync_broker(settings, out) else 1


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace, TextIO], int]] = {
    "add": cmd_add,
    "import": cmd_import,
    "list": cmd_list,
    "show": cmd_show,
    "disable": cmd_disable,
    "enable": cmd_enable,
    "provision": cmd_provision,
    "profiles": cmd_profiles,
    "sync": cmd_sync,
}


def cmd_devices(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _COMMANDS[args.action](settings, args, out or sys.stdout)


def add_parser(sub: Any) -> None:
    """Add `devices` and its sub-commands to the `citywatch` parser's sub-parsers."""
    dev = sub.add_parser("devices", help="the device registry: add, import, provision, ...")
    actions = dev.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="register one device")
    add.add_argument("id")
    add.add_argument("--kind", help="water, air, flood or litter (default: the profile's)")
    add.add_argument(
        "--profile", help="a shipped device profile (`citywatch devices profiles` lists them)"
    )
    add.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the derived metrics, e.g. mount_height_m=4.2 (repeatable)",
    )
    add.add_argument(
        "--also-kind",
        action="append",
        default=[],
        metavar="KIND",
        help="another kind whose metrics the device also reports (repeatable)",
    )
    add.add_argument(
        "--derive",
        action="append",
        default=[],
        metavar="TYPE",
        help="a derived metric: level_from_distance, level_from_pressure, fill_from_distance, "
        "rain_rate, rain_from_tips (repeatable; a profile declares its own)",
    )
    add.add_argument("--name")
    add.add_argument("--lat", type=float)
    add.add_argument("--lon", type=float)
    add.add_argument("--area", help="the city's area: its id, name or an alias (stored as the id)")
    add.add_argument("--format", dest="payload_format", help="native, senml, ttn, chirpstack")
    add.add_argument(
        "--mapping", dest="field_mapping", help="JSON, 'field=metric; ...' or a mapping name"
    )
    add.add_argument("--install-date", help="YYYY-MM-DD")
    add.add_argument("--calibration", help="JSON or 'metric=offset; ...'")
    add.add_argument(
        "--simulated",
        action="store_true",
        help="a simulated device: its alerts are CAP Exercise, never Actual",
    )
    add.add_argument(
        "--drinking-water",
        action="store_true",
        help="a water device at a drinking-water point: the residents' page calls its water "
        "drinking water, with boil-water advice (other water is named for its water body)",
    )

    imp = actions.add_parser("import", help="register or update devices from a CSV/YAML file")
    imp.add_argument("file")

    actions.add_parser("profiles", help="list the shipped device profiles (one per model)")
    actions.add_parser(
        "sync", help="write the MQTT broker's password and ACL files from the registry"
    )

    lst = actions.add_parser("list", help="list registered and unprovisioned devices")
    lst.add_argument("--status", choices=["active", "disabled", "unprovisioned"])

    for name, text in (
        ("show", "one device in full"),
        ("disable", "reject its readings and remove its MQTT login"),
        ("enable", "accept a disabled device again, with its previous login"),
        ("provision", "generate MQTT credentials (printed once) and reload Mosquitto"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("id")
    dev.set_defaults(fn=cmd_devices)

"""`citywatch integrations ...`: MQTT accounts for LoRaWAN network servers.

`add ttn|chirpstack NAME --app ...` creates an account on the device listener that may
publish one application's uplinks (The Things Stack: `v3/{app}@{tenant}/devices/+/up`;
ChirpStack v4: `application/{uuid}/device/+/event/up`) and nothing else; its password is
printed once and only its hash is stored. `list` and `remove` do what they say. Like
`devices provision`, each change regenerates Mosquitto's files and reloads a running local
Mosquitto. docs/devices.md walks through pointing each network server at CityWatch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from services.common import db
from services.common.settings import Settings
from services.registry import integrations as store
from services.registry.cli import _sync_broker, _with_db
from services.registry.mosquitto import (
    IntegrationLogin,
    hash_password,
    new_password,
)

__all__ = ["add_parser", "cmd_integrations"]

_NETWORKS = {"ttn": "The Things Stack", "chirpstack": "ChirpStack"}


def cmd_add(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.network == "ttn":
        tenant = None if args.no_tenant else (args.tenant or "ttn")
    else:
        tenant = args.tenant  # ChirpStack has none: `application_of` refuses one, saying so
    name = store.check_name(args.name)
    application = store.application_of(args.network, args.app, tenant)
    password = new_password()

    async def work(con: db.Conn) -> None:
        await store.add_integration(con, name, args.network, application, hash_password(password))

    _with_db(settings, work)
    _sync_broker(settings, out)
    login = IntegrationLogin(name, args.network, application, password_hash="")
    print(
        f"\nMQTT account for {_NETWORKS[args.network]} application {application}. The password\n"
        f"is shown this once and cannot be recovered (only a hash is stored); to replace it,\n"
        f"remove the integration and add it again.\n"
        f"  broker:     {settings.mqtt_url}\n"
        f"  username:   {login.username}\n"
        f"  client id:  {login.username}  (the broker uses the username, whatever is sent)\n"
        f"  password:   {password}\n"
        f"  publish to: {login.uplink_topic}  (QoS 1; nothing else)",
        file=out,
    )
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    found = _with_db(settings, store.list_integrations)
    for i in found:
        print(
            f"{i.name}  {i.network}  {i.login.username}  {i.login.uplink_topic}  "
            f"created {i.created_at.isoformat(timespec='seconds')}",
            file=out,
        )
    print(f"{len(found)} integration(s)", file=out)
    return 0


def cmd_remove(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    _with_db(settings, lambda con: store.remove_integration(con, args.name))
    print(f"integration {args.name} removed: its MQTT login is gone", file=out)
    _sync_broker(settings, out)
    return 0


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace, TextIO], int]] = {
    "add": cmd_add,
    "list": cmd_list,
    "remove": cmd_remove,
}


def cmd_integrations(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None
) -> int:
    return _COMMANDS[args.action](settings, args, out or sys.stdout)


def add_parser(sub: Any) -> None:
    """Add `integrations` and its sub-commands to the `citywatch` parser's sub-parsers."""
    top = sub.add_parser(
        "integrations", help="MQTT accounts for LoRaWAN network servers (TTN, ChirpStack)"
    )
    actions = top.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", help="an account that may publish one application's uplinks (password shown once)"
    )
    add.add_argument("network", choices=sorted(_NETWORKS))
    add.add_argument("name", help="a name for it: lowercase letters, digits and '-'")
    add.add_argument(
        "--app",
        required=True,
        help="The Things Stack: the application id; ChirpStack: the application's UUID",
    )
    add.add_argument(
        "--tenant", help="The Things Stack tenant id (default: ttn, The Things Network's)"
    )
    add.add_argument(
        "--no-tenant",
        action="store_true",
        help="The Things Stack Open Source: topics carry the application id alone",
    )
    actions.add_parser("list", help="the integrations and the topics each may publish")
    rm = actions.add_parser("remove", help="delete an integration and its MQTT login")
    rm.add_argument("name")
    top.set_defaults(fn=cmd_integrations)

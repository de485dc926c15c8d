"""Network-server integrations in PostgreSQL: the `mqtt_integrations` table (0015).

An integration is an MQTT account for one LoRaWAN application on The Things Stack (`ttn`) or
ChirpStack (`chirpstack`): it may publish that application's uplinks, on the topics the
gateway reads, and nothing else (services/registry/mosquitto.py renders its ACL). Only the
password's hash is stored, as for a device.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from services.common.db import Conn
from services.registry.errors import RegistryError
from services.registry.mosquitto import IntegrationLogin

__all__ = [
    "Integration",
    "Network",
    "add_integration",
    "application_of",
    "check_name",
    "integration_logins",
    "list_integrations",
    "remove_integration",
]

Network = Literal["ttn", "chirpstack"]

# The Things Stack's identifiers (applications, tenants): 2-36 lowercase letters, digits and
# dashes, not starting or ending with a dash. Nothing an ACL line could misread (`+`, `#`,
# `/`, spaces) gets through.
_TTS_ID = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,34}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Integration:
    name: str
    network: Network
    application: str
    created_at: datetime

    @property
    def login(self) -> IntegrationLogin:
        """Its login without the hash: for its username and topic."""
        return IntegrationLogin(self.name, self.network, self.application, password_hash="")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise RegistryError(
            f"integration name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


def application_of(network: Network, app: str, tenant: str | None) -> str:
    """The application as it appears in the network server's uplink topics.

    The Things Stack: `{app}@{tenant}` (The Things Network's tenant is `ttn`), or `{app}`
    alone on The Things Stack Open Source (`tenant` None). ChirpStack v4: the application's
    UUID, in its canonical lowercase form, as ChirpStack writes it in topics.
    """
    if network == "ttn":
        for label, value in (("application id", app), ("tenant id", tenant)):
            if value is not None and not _TTS_ID.match(value):
                raise RegistryError(
                    f"The Things Stack {label} {value!r}: 2-36 lowercase letters, digits and "
                    "'-', as the Console shows it"
                )
        return app if tenant is None else f"{app}@{tenant}"
    if tenant is not None:
        raise RegistryError("--tenant is for The Things Stack; ChirpStack topics carry no tenant")
    try:
        return str(uuid.UUID(app))
    except ValueError:
        raise RegistryError(
            f"ChirpStack application id {app!r} is not a UUID (copy it from the application's "
            "page in ChirpStack)"
        ) from None


async def add_integration(
    con: Conn, name: str, network: Network, application: str, password_hash: str
) -> None:
    try:
        await con.execute(
            "INSERT INTO mqtt_integrations (name, network, application, password_hash) "
            "VALUES ($1, $2, $3, $4)",
            check_name(name),
            network,
            application,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        taken = await con.fetchval(
            "SELECT name FROM mqtt_integrations WHERE name = $1 OR "
            "(network = $2 AND application = $3)",
            name,
            network,
            application,
        )
        raise RegistryError(
            f"integration {taken!r} already exists for that name or application; remove it "
            "first (`citywatch integrations remove`) to replace its password"
        ) from exc


async def list_integrations(con: Conn) -> list[Integration]:
    rows = await con.fetch(
        "SELECT name, network, application, created_at FROM mqtt_integrations ORDER BY name"
    )
    return [Integration(r["name"], r["network"], r["application"], r["created_at"]) for r in rows]


async def remove_integration(con: Conn, name: str) -> None:
    if await con.execute("DELETE FROM mqtt_integrations WHERE name = $1", name) == "DELETE 0":
        raise RegistryError(
            f"integration {name!r} does not exist (see `citywatch integrations list`)"
        )


async def integration_logins(con: Conn) -> list[IntegrationLogin]:
    """Every integration's login, or [] before migration 0015."""
    try:
        rows = await con.fetch(
            "SELECT name, network, application, password_hash FROM mqtt_integrations ORDER BY name"
        )
    except asyncpg.UndefinedTableError:
        return []
    return [
        IntegrationLogin(r["name"], r["network"], r["application"], r["password_hash"])
        for r in rows
    ]

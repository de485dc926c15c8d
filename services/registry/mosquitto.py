"""Mosquitto's password and ACL files, generated from the registry and the service accounts.

The registry (PostgreSQL) is the source of truth; these two files are derived from it and
rewritten whole, atomically, after every change, then Mosquitto is told to reload them
with SIGHUP (no restart: connected clients and sessions stay). Rendering is pure; the
file, lock and signal handling is at the bottom.

Password hashes are Mosquitto 2.0's `$7$` format, as `mosquitto_passwd` writes it:
`$7$<iterations>$<base64 salt (12 bytes)>$<base64 PBKDF2-HMAC-SHA512 (64 bytes)>`.
Device passwords are 192 random bits, so key stretching adds no protection that matters
and we keep Mosquitto's default of 101 iterations, which it pays on every CONNECT.

Mosquitto has two listeners, each with its own password and ACL file (`per_listener_settings
true`): devices log in on the device listener (CITYWATCH_MQTT_URL), where Mosquitto uses
their username as their client id, and only CityWatch's service accounts log in on the
services listener (CITYWATCH_MQTT_SERVICES_URL). A device therefore cannot take over a
service's session (the gateway's `citywatch-ingest-1`): its client id is its device id,
and the registry refuses device ids starting with `citywatch-`.

Who may do what (Mosquitto denies everything not granted here):
- each provisioned, active device publishes to its own `citywatch/{kind}/{id}/up` and
  reads nothing;
- `citywatch-ingest` reads device uplinks (directly or through `$share/...`). The read is
  also granted by `pattern` lines, which reach every service account of the listener:
  Mosquitto 2.0 applies `user` lines only to a connected client, and a session restored
  after a broker crash must be queued for before its gateway is back (issue 10);
- `citywatch-alerts` publishes (and may read back) `citywatch/alerts/#`;
- each network-server integration (`citywatch integrations add`) logs in on the device
  listener as `citywatch-integration-{name}` and publishes its one application's uplink
  topics (`v3/{app}@{tenant}/devices/+/up` or `application/{uuid}/device/+/event/up`) and
  reads nothing; its username starts with `citywatch-`, so it is no device's id, and
  `citywatch-integration-` is the prefix of no service's client id;
- `citywatch-simulator` publishes to any device uplink, under any one-level prefix, and
  reads the alerts (a simulated siren). It is for the demo, the tests and the benchmarks,
  and is NOT for production: it can publish as any device.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import pwd
import secrets
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import StateError
from services.common.settings import (
    MQTT_ACCOUNTS_FILE,
    SERVICE_ACCOUNTS,
    SERVICE_ID_PREFIX,
    read_mqtt_accounts,
)

log = logging.getLogger(__name__)

__all__ = [
    "INTEGRATION_PREFIX",
    "SERVICE_ID_PREFIX",
    "BrokerFiles",
    "DeviceLogin",
    "IntegrationLogin",
    "ListenerLogin",
    "check_password",
    "ensure_service_accounts",
    "hash_password",
    "integration_topic",
    "locked",
    "new_password",
    "reload_broker",
    "render_device_acl",
    "render_device_passwd",
    "render_passwd",
    "render_services_acl",
    "reserved_id",
    "write_broker_files",
]

HASH_ITERATIONS = 101  # mosquitto_passwd's default for $7$
_SALT_BYTES = 12  # what mosquitto_passwd uses

# The uplink topics of every format the gateway reads: native/SenML under any one-level
# prefix ("citywatch" in production, a per-test or per-benchmark prefix otherwise), The
# Things Stack v3 and ChirpStack v4.
UPLINK_FILTERS: tuple[str, ...] = (
    "+/+/+/up",
    "v3/+/devices/+/up",
    "application/+/device/+/event/up",
)
ALERT_FILTERS: tuple[str, ...] = ("citywatch/alerts/#",)


def reserved_id(device_id: str) -> bool:
    """True if `device_id` is reserved for CityWatch's services (case-insensitively)."""
    return device_id.lower().startswith(SERVICE_ID_PREFIX)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """The four files Mosquitto's two listeners read (deploy/mosquitto/mosquitto.conf)."""

    broker_dir: Path

    @property
    def devices_passwd(self) -> Path:
        return self.broker_dir / "devices.passwd"

    @property
    def devices_acl(self) -> Path:
        return self.broker_dir / "devices.acl"

    @property
    def services_passwd(self) -> Path:
        return self.broker_dir / "services.passwd"

    @property
    def services_acl(self) -> Path:
        return self.broker_dir / "services.acl"


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    """A device that may log in: its id (the MQTT username), its kind and password hash."""

    device_id: str
    kind: str
    password_hash: str

    @property
    def uplink_topic(self) -> str:
        return f"citywatch/{self.kind}/{self.device_id}/up"


# The username of every integration account starts with this (a reserved id: no device
# has it, and no CityWatch service's client id starts with it).
INTEGRATION_PREFIX = f"{SERVICE_ID_PREFIX}integration-"


def integration_topic(network: str, application: str) -> str:
    """The one topic filter an integration may publish to: its application's uplinks, on the
    layout the gateway reads (schemas/adapters/ttn.py, chirpstack.py)."""
    if network == "ttn":
        return f"v3/{application}/devices/+/up"
    return f"application/{application}/device/+/event/up"


@dataclass(frozen=True, slots=True)
class IntegrationLogin:
    """A network server's account (The Things Stack or ChirpStack), for one application."""

    name: str
    network: str
    application: str
    password_hash: str

    @property
    def username(self) -> str:
        return f"{INTEGRATION_PREFIX}{self.name}"

    @property
    def uplink_topic(self) -> str:
        return integration_topic(self.network, self.application)


# Who logs in on the device listener.
ListenerLogin = DeviceLogin | IntegrationLogin


# -- passwords -----------------------------------------------------------------------------


def new_password() -> str:
    """192 random bits, URL-safe (no `:` that could break a password file line)."""
    return secrets.token_urlsafe(24)


def hash_password(
    password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None
) -> str:
    """The `$7$` PBKDF2-SHA512 hash Mosquitto 2.0 checks a CONNECT's password against."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """True if `password` matches a `$7$` hash (as Mosquitto would decide)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)


# -- rendering (pure) ------------------------------------------------------------------------

_HEADER = (
    "# Generated by CityWatch from the device registry and the service accounts.\n"
    "# Do not edit: it is rewritten by `citywatch stack up` and `citywatch devices ...`.\n"
)


def render_passwd(logins: Mapping[str, str]) -> str:
    """A Mosquitto password file: `username:hash` lines, sorted by username."""
    return "".join(f"{name}:{hashed}\n" for name, hashed in sorted(logins.items()))


def render_device_passwd(logins: Sequence[ListenerLogin]) -> str:
    """The device listener's password file: the provisioned, active devices (never a
    reserved id, even one that reached the database some other way) and the integrations."""
    return render_passwd(
        {
            _username(login): login.password_hash
            for login in logins
            if isinstance(login, IntegrationLogin) or not reserved_id(login.device_id)
        }
    )


def render_services_acl(*, simulator: bool = True) -> str:
    """The services listener's ACL file. `topic read` also governs SUBSCRIBE. Without
    `simulator` (production: `CITYWATCH_MQTT_SIMULATOR_ACCOUNT=false`) the simulator's
    account is left out of it and of the password file."""
    # Read rights on the uplinks as `pattern` lines (issue 10, point 3): Mosquitto 2.0 looks
    # a client's `user` section up only when it connects, so a session it restored from its
    # persistence file after a crash has none, and until the gateway reconnects every uplink
    # for it would be refused and dropped, though acknowledged to the device. A pattern is
    # matched on every check, restored sessions included. It grants every account of this
    # listener (CityWatch's own) reading uplinks; only the gateway subscribes to them.
    out = [_HEADER, *(f"pattern read {f}" for f in UPLINK_FILTERS), "", "user citywatch-ingest"]
    out += [f"topic read {f}" for f in UPLINK_FILTERS]
    out += ["", "user citywatch-alerts"]
    out += [f"topic readwrite {f}" for f in ALERT_FILTERS]
    if not simulator:
        return "\n".join(out) + "\n"
    out += [
        "",
        "# NOT FOR PRODUCTION: the simulator may publish as any device. It exists for",
        "# `citywatch demo`, `simulate`, `bench` and the tests.",
        "# It may also watch the alerts, as a simulated siren or street display would.",
        "user citywatch-simulator",
    ]
    out += [f"topic write {f}" for f in UPLINK_FILTERS]
    out += [f"topic read {f}" for f in ALERT_FILTERS]
    return "\n".join(out) + "\n"


def render_device_acl(logins: Sequence[ListenerLogin]) -> str:
    """The device listener's ACL file: each device publishes to its own uplink topic only,
    each integration to its application's uplink topics only; no `read` line means none
    can subscribe to or receive anything."""
    devices = [d for d in logins if isinstance(d, DeviceLogin)]
    integrations = [i for i in logins if isinstance(i, IntegrationLogin)]
    out = [_HEADER, "# Devices: each publishes to its own uplink topic only, and reads nothing."]
    for d in sorted(devices, key=_username):
        out += [f"user {d.device_id}", f"topic write {d.uplink_topic}"]
    if integrations:
        out += ["", "# Network-server integrations: one application's uplinks each, read nothing."]
    for i in sorted(integrations, key=_username):
        out += [f"user {i.username}", f"topic write {i.uplink_topic}"]
    return "\n".join(out) + "\n"


def _username(login: ListenerLogin) -> str:
    return login.device_id if isinstance(login, DeviceLogin) else login.username


# -- files, lock, reload ---------------------------------------------------------------------


def ensure_service_accounts(state_dir: Path) -> dict[str, str]:
    """The service accounts' passwords, generating any that are missing into
    `{state_dir}/mqtt-accounts.json` (mode 0600: it holds plain passwords)."""
    path = state_dir / MQTT_ACCOUNTS_FILE
    with locked(state_dir, "mqtt-accounts"):
        accounts = read_mqtt_accounts(path)
        missing = [name for name in SERVICE_ACCOUNTS if name not in accounts]
        if missing:
            accounts.update({name: new_password() for name in missing})
            _write_atomic(path, json.dumps(accounts, indent=2) + "\n", owner=None)
            log.info("mqtt service accounts generated", extra={"accounts": missing})
    return accounts


def write_broker_files(
    broker_dir: Path,
    accounts: Mapping[str, str],
    devices: Sequence[ListenerLogin],
    *,
    owner: str | None,
    simulator: bool = True,
) -> BrokerFiles:
    """Write both listeners' password and ACL files into `broker_dir` atomically (a reader
    never sees half a file); `owner` is the user Mosquitto runs as, when we are root."""
    files = BrokerFiles(broker_dir)
    service_hashes = {
        name: hash_password(pw)
        for name, pw in accounts.items()
        if simulator or name != "citywatch-simulator"
    }
    _write_atomic(files.services_passwd, render_passwd(service_hashes), owner=owner)
    _write_atomic(files.services_acl, render_services_acl(simulator=simulator), owner=owner)
    _write_atomic(files.devices_passwd, render_device_passwd(devices), owner=owner)
    _write_atomic(files.devices_acl, render_device_acl(devices), owner=owner)
    return files


def reload_broker(pid: int) -> None:
    """Ask Mosquitto to re-read its configuration, password and ACL files (no restart)."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise StateError(
            f"mosquitto (pid {pid}) is gone; start it with `citywatch stack up`"
        ) from exc


@contextlib.contextmanager
def locked(state_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock across processes on `{state_dir}/.{name}.lock`. Not reentrant:
    never take the same name twice in one call chain."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / f".{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str, *, owner: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if owner is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(owner)
            os.chown(tmp, entry.pw_uid, entry.pw_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

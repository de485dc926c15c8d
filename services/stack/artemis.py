"""Apache ActiveMQ Artemis as the stack's MQTT broker (`CITYWATCH_MQTT_BROKER=artemis`).

Why: Artemis journals a QoS 1 PUBLISH and fsyncs it before it sends the PUBACK, and keeps
queueing for a persistent session across its own restart, so a broker crash loses nothing
it acknowledged; Mosquitto 2.0 acknowledges first and saves later (docs/broker-durability.md).

It is the Mosquitto component with another process behind the same two ports: the same
password and ACL files, generated from the registry by `Mosquitto.sync_auth`, are read by a
small security manager compiled at first start (deploy/artemis/java/), which checks them per
acceptor, requires a device's client id to be its username, and reads the files again when
they change, so no reload signal is needed (a JVM would stop on SIGHUP).

The broker is the `apache-artemis` distribution from Maven Central, fetched with Maven once
and unpacked into the cache folder (keyed by version); the broker instance (configuration,
journal, log) lives in the state folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from services.common.errors import StateError
from services.registry.mosquitto import BrokerFiles
from services.stack.components import DEPLOY, Mosquitto
from services.stack.process import run, spawn

__all__ = [
    "ARTEMIS_VERSION",
    "GLOBAL_MAX_SIZE",
    "HEAP",
    "MAIN",
    "QUEUE_LIMIT_BYTES",
    "TEMPLATES",
    "Artemis",
    "broker_values",
    "java_command",
    "render",
]

ARTEMIS_VERSION = "2.44.0"
_SOURCES = DEPLOY / "artemis" / "java"
MAIN = "org.apache.activemq.artemis.boot.Artemis"
# The configuration files `artemis run` reads, filled in from deploy/artemis/.
TEMPLATES = ("broker.xml", "bootstrap.xml", "management.xml")
# Memory: the heap, and how much of it messages may take before the broker pages them to
# disk. Each address (one device's uplink topic) may hold this much on disk (paging).
HEAP = "512m"
GLOBAL_MAX_SIZE = 128 * 1024 * 1024
QUEUE_LIMIT_BYTES = 512 * 1024 * 1024


def _cache() -> Path:
    return Path(os.environ.get("CITYWATCH_CACHE_DIR", Path.home() / ".cache" / "citywatch"))


class Artemis(Mosquitto):
    name = "artemis"
    marker = MAIN
    start_timeout_s = 90.0

    def reload(self, pid: int) -> None:
        """Nothing to signal: the security manager reads the files again at the next login
        once they have changed."""

    def home(self) -> Path:
        """The unpacked distribution, fetched by Maven into the cache on first use."""
        home = _cache() / f"artemis-{ARTEMIS_VERSION}"
        dist = home / f"apache-artemis-{ARTEMIS_VERSION}"
        if (home / "complete").exists():
            return dist
        tmp = home.with_name(f"{home.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"fetching Apache ActiveMQ Artemis {ARTEMIS_VERSION} with Maven (first run only) ...")
        run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact=org.apache.activemq:apache-artemis:{ARTEMIS_VERSION}:tar.gz:bin",
                f"-DoutputDirectory={tmp}",
            ],
            what="fetching the Artemis distribution from Maven Central",
            fix="Check that Maven (`mvn`) is installed and Maven Central is reachable.",
        )
        archive = tmp / f"apache-artemis-{ARTEMIS_VERSION}-bin.tar.gz"
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        archive.unlink()
        shutil.rmtree(home, ignore_errors=True)
        tmp.rename(home)
        (home / "complete").write_text("ok\n")
        return dist

    def plugin(self, home: Path) -> Path:
        """A folder with the security manager's jar, compiled against this broker version's
        jars into the cache, keyed by the version and the sources' hash (the broker's boot
        loader adds the jars of the folders named in `artemis.extra.libs`)."""
        sources = sorted(_SOURCES.rglob("*.java"))
        digest = hashlib.sha256(ARTEMIS_VERSION.encode())
        for src in sources:
            digest.update(src.read_bytes())
        out = _cache() / f"artemis-plugin-{digest.hexdigest()[:12]}"
        if (out / "complete").exists():
            return out / "lib"
        if shutil.which("javac") is None:
            raise StateError(
                "artemis: javac is not installed (the broker's security manager is compiled "
                "at first start): run ./citywatch or `apt-get install openjdk-17-jdk-headless`."
            )
        shutil.rmtree(out, ignore_errors=True)
        run(
            ["javac", "-d", str(out / "classes"), "-cp", f"{home}/lib/*", *map(str, sources)],
            what="compiling CityWatch's Artemis security manager",
            fix="Is a JDK 17+ installed (`javac -version`)?",
        )
        (out / "lib").mkdir()
        with zipfile.ZipFile(out / "lib" / "citywatch-artemis.jar", "w") as jar:
            for cls in sorted((out / "classes").rglob("*.class")):
                jar.write(cls, cls.relative_to(out / "classes").as_posix())
        (out / "complete").write_text("ok\n")
        return out / "lib"

    def _launch(self) -> None:
        home = self.home()
        plugin = self.plugin(home)
        self.sync_auth()  # the password and ACL files the security manager reads
        etc = self.dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        values = broker_values(
            devices=(self.host, self.port),
            services=(self.services_host, self.services_port),
            data_dir=self.dir / "data",
            etc=etc,
            files=self.files,
            max_packet_size=self.max_packet_size,
        )
        for name in TEMPLATES:
            (etc / name).write_text(render(name, values))
        spawn(
            java_command(
                home=home,
                instance=self.dir,
                etc=etc,
                plugin=plugin,
                log4j=DEPLOY / "artemis" / "log4j2.properties",
                properties=[f"-Dartemis.log.file={self.log_file}"],
            ),
            log_file=self.dir / "stdout.log",
            pid_file=self.pid_file,
        )


# -- what the stack and the image's start script (deploy/artemis/start.sh) both run -------
# tests/test_deploy.py runs the script and compares what it wrote and ran with these.


def broker_values(
    *,
    devices: tuple[str, int],
    services: tuple[str, int],
    data_dir: Path,
    etc: Path,
    files: BrokerFiles,
    max_packet_size: int,
) -> dict[str, str]:
    """The value of every @…@ placeholder of the templates (TEMPLATES): where each acceptor
    listens, the journal's folder, the registry's four files, the bounds."""
    return {
        "@HOST@": devices[0],
        "@PORT@": str(devices[1]),
        "@SERVICES_HOST@": services[0],
        "@SERVICES_PORT@": str(services[1]),
        "@DATA_DIR@": str(data_dir),
        "@MAX_PACKET_SIZE@": str(max_packet_size),
        "@GLOBAL_MAX_SIZE@": str(GLOBAL_MAX_SIZE),
        "@QUEUE_LIMIT_BYTES@": str(QUEUE_LIMIT_BYTES),
        "@BROKER_XML@": str(etc / "broker.xml"),
        "@DEVICES_PASSWORD_FILE@": str(files.devices_passwd),
        "@DEVICES_ACL_FILE@": str(files.devices_acl),
        "@SERVICES_PASSWORD_FILE@": str(files.services_passwd),
        "@SERVICES_ACL_FILE@": str(files.services_acl),
    }


def render(name: str, values: Mapping[str, str]) -> str:
    """deploy/artemis/`name` with its placeholders filled in."""
    text = (DEPLOY / "artemis" / name).read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def java_command(
    *, home: Path, instance: Path, etc: Path, plugin: Path, log4j: Path, properties: list[str]
) -> list[str]:
    """The broker's JVM: its flags, the instance's folders, the security manager's jar folder
    (`artemis.extra.libs`: the boot loader adds its jars), `properties` (more -D flags), and
    `artemis run` on the filled-in bootstrap.xml."""
    return [
        "java",
        "-Xms64m",
        f"-Xmx{HEAP}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dartemis.home={home}",
        f"-Dartemis.instance={instance}",
        f"-Dartemis.instance.etc={etc}",
        f"-Dartemis.extra.libs={plugin}",
        *properties,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        str(home / "lib" / "artemis-boot.jar"),
        MAIN,
        "run",
        f"xml:{etc / 'bootstrap.xml'}",
    ]

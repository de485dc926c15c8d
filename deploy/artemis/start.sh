#!/bin/sh
# The entry point of CityWatch's broker image (deploy/artemis/Dockerfile), in compose
# (deploy/compose/compose.yaml, service `mqtt`) and on Kubernetes (deploy/artemis/README.md):
# Apache ActiveMQ Artemis configured as `citywatch stack up` configures it with
# CITYWATCH_MQTT_BROKER=artemis (services/stack/artemis.py, Artemis._launch): the templates
# of deploy/artemis/ with their @…@ values filled in, the same JVM flags and system
# properties, the registry's security manager. Two differences: the log goes to stdout
# (log4j2-console.properties), and the registry's four password/ACL files are not written
# here but read from ARTEMIS_FILES, where CityWatch's `init` (compose) or a
# `citywatch` container (Kubernetes) writes them; the security manager reads them again
# when they change, so `citywatch devices provision` needs no reload or restart.
#
# It lives beside the templates, not in deploy/compose/, because it is baked into the image
# that both compose and Kubernetes run. tests/test_deploy.py runs this very script on the CI
# machine against the Maven-fetched distribution and compares what it writes and runs with
# services/stack/artemis.py.
#
# Every path, host and port can be set (ARTEMIS_*); the defaults are the image's.
set -eu
home=${ARTEMIS_HOME:-/opt/activemq-artemis}
templates=${ARTEMIS_TEMPLATES:-/opt/citywatch/artemis}
plugin=${ARTEMIS_PLUGIN:-/opt/citywatch/lib}
instance=${ARTEMIS_INSTANCE:-/var/lib/citywatch-artemis}  # the journal's volume
files=${ARTEMIS_FILES:-/var/lib/citywatch/artemis}  # the registry's four files
devices_host=${ARTEMIS_DEVICES_HOST:-0.0.0.0}
devices_port=${ARTEMIS_DEVICES_PORT:-1883}
services_host=${ARTEMIS_SERVICES_HOST:-0.0.0.0}
services_port=${ARTEMIS_SERVICES_PORT:-1884}
# What a device may send: the gateway's payload limit (the same setting, same default) plus
# 64 KiB for the topic and properties, as Mosquitto.max_packet_size.
payload=${CITYWATCH_INGEST__MAX_PAYLOAD_BYTES:-262144}
# The bounds of services/stack/artemis.py (GLOBAL_MAX_SIZE, QUEUE_LIMIT_BYTES, HEAP).
global_max_size=${ARTEMIS_GLOBAL_MAX_SIZE:-134217728}
queue_limit_bytes=${ARTEMIS_QUEUE_LIMIT_BYTES:-536870912}
heap=${ARTEMIS_HEAP:-512m}
etc=$instance/etc
data=$instance/data

for name in devices.passwd devices.acl services.passwd services.acl; do
  if [ ! -r "$files/$name" ]; then
    echo "artemis: $files/$name is missing or unreadable: CityWatch writes the registry's" >&2
    echo "artemis: files there (compose: the \`init\` service; Kubernetes: deploy/artemis/README.md)" >&2
    exit 1
  fi
done

umask 077
mkdir -p "$etc" "$data"
for name in broker.xml bootstrap.xml management.xml; do
  sed -e "s|@HOST@|$devices_host|g" \
      -e "s|@PORT@|$devices_port|g" \
      -e "s|@SERVICES_HOST@|$services_host|g" \
      -e "s|@SERVICES_PORT@|$services_port|g" \
      -e "s|@DATA_DIR@|$data|g" \
      -e "s|@MAX_PACKET_SIZE@|$((payload + 65536))|g" \
      -e "s|@GLOBAL_MAX_SIZE@|$global_max_size|g" \
      -e "s|@QUEUE_LIMIT_BYTES@|$queue_limit_bytes|g" \
      -e "s|@BROKER_XML@|$etc/broker.xml|g" \
      -e "s|@DEVICES_PASSWORD_FILE@|$files/devices.passwd|g" \
      -e "s|@DEVICES_ACL_FILE@|$files/devices.acl|g" \
      -e "s|@SERVICES_PASSWORD_FILE@|$files/services.passwd|g" \
      -e "s|@SERVICES_ACL_FILE@|$files/services.acl|g" \
      "$templates/$name" >"$etc/$name"
  if grep -q '@[A-Z_]*@' "$etc/$name"; then
    echo "artemis: $templates/$name has a placeholder this script does not fill" >&2
    exit 1
  fi
done

echo "artemis: devices on $devices_host:$devices_port, services on $services_host:$services_port, journal in $data"
exec java -Xms64m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  "-Dartemis.home=$home" "-Dartemis.instance=$instance" "-Dartemis.instance.etc=$etc" \
  "-Dartemis.extra.libs=$plugin" "-Dlog4j2.configurationFile=$templates/log4j2-console.properties" \
  -cp "$home/lib/artemis-boot.jar" org.apache.activemq.artemis.boot.Artemis run "xml:$etc/bootstrap.xml"

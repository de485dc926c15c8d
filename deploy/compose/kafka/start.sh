#!/bin/sh
# The compose Kafka's entry point (deploy/compose/compose.yaml, service `kafka`): the local
# stack's own broker configuration, deploy/kafka/server.properties, filled in as
# `citywatch stack up` fills it (services/stack/components.py, Kafka._server_properties):
# SASL/SCRAM-SHA-512 on the client listener, SASL/PLAIN with the admin's login on the
# controller listener, the StandardAuthorizer with `citywatch-admin` as the one super user.
# On first start it formats the storage with every principal's SCRAM credential
# (`--add-scram`, read from an argument file as the stack does, so no password shows in
# the process list), then runs the broker from its jars (`java -cp libs/*`), as the local
# stack does. tests/test_deploy.py runs this very script on the CI machine, from the
# Maven-resolved jars, and logs in as each principal.
#
# Every path and the host/port can be set (KAFKA_*); the defaults are the apache/kafka
# image's. Passwords: CITYWATCH_KAFKA_{ADMIN,INGEST,PROCESSOR,ALERTS,API}_PASSWORD.
set -eu
template=${KAFKA_TEMPLATE:-/opt/citywatch/server.properties}
libs=${KAFKA_LIBS:-/opt/kafka/libs}
host=${KAFKA_HOST:-kafka}
port=${KAFKA_PORT:-9092}
data=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
conf=${KAFKA_CONFIG_DIR:-/opt/kafka/config/citywatch}
logs=${KAFKA_LOGS_DIR:-/opt/kafka/logs}
log4j=${KAFKA_LOG4J:-/opt/kafka/config/log4j2.yaml}
: "${CLUSTER_ID:?set CLUSTER_ID (a KRaft cluster id)}"
admin=citywatch-admin

umask 077  # the files below hold passwords
mkdir -p "$conf" "$data" "$logs"

password() {  # password ACCOUNT -> the value of CITYWATCH_KAFKA_<ACCOUNT>_PASSWORD
  var="CITYWATCH_KAFKA_$(printf %s "$1" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  eval "value=\${$var:-}"
  # It goes into a JAAS line ("...") and a --add-scram argument ([name=..,password=..]).
  case $value in
    '' | *[!A-Za-z0-9._~-]*)
      echo "kafka: $var must be set, with letters, digits and . _ ~ - only" >&2
      exit 1 ;;
  esac
  printf %s "$value"
}
for account in admin ingest processor alerts api; do
  password "$account" >/dev/null  # exits here, with the message, when one is unusable
done
admin_password=$(password admin)

sed -e "s|@HOST@|$host|g" \
    -e "s|@PORT@|$port|g" \
    -e "s|@CONTROLLER_PORT@|$((port + 1))|g" \
    -e "s|@DATA_DIR@|$data|g" \
    -e "s|@ADMIN@|$admin|g" \
    -e "s|@ADMIN_PASSWORD@|$admin_password|g" \
    "$template" >"$conf/server.properties"
if grep -q '@[A-Z_]*@' "$conf/server.properties"; then
  echo "kafka: $template has a placeholder this script does not fill" >&2
  exit 1
fi
# The admin's client login, for the health check and for kafka-*.sh --command-config.
cat >"$conf/client.properties" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$admin" password="$admin_password";
PROPS

if [ ! -f "$data/meta.properties" ]; then
  args="$conf/format.args"
  {
    printf '"%s"\n' kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$conf/server.properties"
    for account in admin ingest processor alerts api; do
      printf '"%s"\n' --add-scram \
        "SCRAM-SHA-512=[name=citywatch-$account,password=$(password "$account")]"
    done
  } >"$args"
  # Its stdout lists the credentials' salted keys: not for the container's log.
  java -Xmx256m -cp "$libs/*" "@$args" >/dev/null || { rm -f "$args"; exit 1; }
  rm -f "$args"
  : >"$data/.citywatch-logins"  # what the check below looks for (Kafka reads folders only)
  echo "kafka: storage formatted with the SCRAM credentials of 5 principals"
elif [ ! -f "$data/.citywatch-logins" ]; then
  # Formatted by the compose file of before, without logins: no principal could log in.
  echo "kafka: $data was formatted without CityWatch's logins and cannot get them now." >&2
  echo "kafka: once the processor and the alerts service have caught up, remove the" >&2
  echo "kafka: volume (docker compose rm -sf kafka; docker volume rm <project>_kafka) and" >&2
  echo "kafka: start again; Kafka only carries data in transit." >&2
  exit 1
fi

# shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -Djava.awt.headless=true -Dkafka.logs.dir="$logs" -Dlog4j2.configurationFile="$log4j" \
  -cp "$libs/*" kafka.Kafka "$conf/server.properties"

#!/bin/sh
# The compose platform's one-shot `init` service (deploy/compose/compose.yaml), run before
# any CityWatch service starts and again on every `docker compose up` (each step is
# idempotent): the database schema, the Kafka topics and each principal's ACLs (logged in
# as the admin principal, a super user), the MQTT service accounts with the broker's
# password/ACL files, and the operator token for Prometheus.
set -eu
citywatch db migrate
citywatch topics ensure
# The broker's password and ACL files, from the registry, into the folder of
# CITYWATCH_MQTT_BROKER's broker: {state}/artemis/, the `broker` volume, which Artemis
# reads again when they change (no signal: the broker is not on loopback, not ours).
citywatch devices sync
python - <<'PY'
import os
from pathlib import Path

from services.common.http_auth import operator_token
from services.common.settings import load_settings

settings = load_settings()
# Prometheus runs as another user and reads only this copy, in a volume of its own.
token = Path(os.environ.get("PROMETHEUS_TOKEN_DIR", "/var/lib/citywatch-prometheus"))
token = token / "operator-token"
token.unlink(missing_ok=True)  # read-only from the last run
token.write_text(operator_token(settings) + "\n")
token.chmod(0o444)
print("init: operator token written")
PY

#!/bin/sh
# The compose platform's one-shot `init` service (deploy/compose/compose.yaml), run before
# any CityWatch service starts and again on every `docker compose up` (each step is
# idempotent): the database schema, the Kafka topics and each principal's ACLs (logged in
# as the admin principal, a super user), the MQTT service accounts with the broker's
# password/ACL files, and the operator token for Prometheus.
set -eu
citywatch db migrate
citywatch topics ensure
mkdir -p "$CITYWATCH_STATE_DIR/mosquitto/data"
python - <<'PY'
import os
from pathlib import Path

from services.common.http_auth import operator_token
from services.common.settings import load_settings
from services.stack import Mosquitto

settings = load_settings()
# The broker is external here (not on loopback): this writes the four files into
# {state_dir}/mosquitto/ (the `broker` volume) and signals nobody.
if not Mosquitto(settings).sync_auth():
    raise SystemExit("init: PostgreSQL could not be read for the device logins")
# Prometheus runs as another user and reads only this copy, in a volume of its own.
token = Path(os.environ.get("PROMETHEUS_TOKEN_DIR", "/var/lib/citywatch-prometheus"))
token = token / "operator-token"
token.unlink(missing_ok=True)  # read-only from the last run
token.write_text(operator_token(settings) + "\n")
token.chmod(0o444)
print("init: broker files and operator token written")
PY

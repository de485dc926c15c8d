#!/bin/sh
# Runs once, when the TimescaleDB container initialises an empty data volume: a read-only
# role for Grafana (deploy/grafana/README.md). Default privileges make every table that
# `citywatch db migrate` creates later (as the owner, citywatch) readable by it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$CITYWATCH_GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE citywatch_grafana LOGIN PASSWORD :'pw';
GRANT CONNECT ON DATABASE citywatch TO citywatch_grafana;
GRANT USAGE ON SCHEMA public TO citywatch_grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE citywatch IN SCHEMA public
  GRANT SELECT ON TABLES TO citywatch_grafana;
SQL

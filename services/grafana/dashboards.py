"""The operations centre's Grafana dashboards, built as Grafana JSON models (schemaVersion 39).

The dashboards in `deploy/grafana/dashboards/` are generated from this module
(`citywatch grafana build`) rather than edited by hand, so the per-kind dashboards follow
the metric registry (`schemas/registry.py`): a metric added to the contract gets its
panel and its column, with its unit, the next time the files are built. The test suite
checks that the committed files equal what this module builds.

Every SQL query here runs unchanged on plain PostgreSQL and on TimescaleDB: the
PostgreSQL datasource is provisioned with `timescaledb: false`, so Grafana expands
`$__timeGroupAlias` to `floor(extract(epoch from ...))` instead of `time_bucket()`, and
the queries use no TimescaleDB function themselves. Devices the processor registered on
first sight have no area; they are shown under `(none)` rather than hidden.

Pure code: building a dashboard does no I/O; `write_dashboards` and `load_dashboards`
are the two functions that touch files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from schemas.registry import COMMON, KINDS, METRICS, Kind, MetricSpec
from services.common.settings import REPO_ROOT

__all__ = [
    "DASHBOARD_DIR",
    "PG",
    "PROM",
    "build_dashboards",
    "load_dashboards",
    "write_dashboards",
]

Json = dict[str, Any]

DASHBOARD_DIR: Final = REPO_ROOT / "deploy" / "grafana" / "dashboards"
SCHEMA_VERSION: Final = 39
# The datasource uids are fixed in deploy/grafana/provisioning/datasources/citywatch.yaml.
PG: Final[Json] = {"type": "grafana-postgresql-datasource", "uid": "citywatch-pg"}
PROM: Final[Json] = {"type": "prometheus", "uid": "citywatch-prom"}
TAGS: Final = ["citywatch"]

# A device that has not been heard from for this long is shown as offline.
OFFLINE_AFTER: Final = "15 minutes"
NO_AREA: Final = "(none)"
AREA = f"coalesce(d.area, '{NO_AREA}')"

KIND_TITLES: Final[dict[Kind, str]] = {
    "water": "Water quality",
    "air": "Air quality",
    "flood": "Flood",
    "litter": "Plastic litter",
}
# The one or two metrics per kind an area's operator looks at first.
HEADLINE: Final[dict[Kind, tuple[str, ...]]] = {
    "flood": ("water_level_m", "rain_mm_h"),
    "air": ("pm25_ugm3",),
    "water": ("ph", "turbidity_ntu"),
    "litter": ("fill_level_pct",),
}
# Registry units -> Grafana unit ids; anything else becomes a "suffix:" custom unit.
_UNITS: Final[dict[str, str]] = {
    "°C": "celsius",
    "%": "percent",
    "µg/m³": "conµgm3",
    "ppb": "ppb",
    "ppm": "ppm",
    "m": "lengthm",
    "m³/s": "flowcms",
    "kg": "masskg",
    "count": "short",
    "dBm": "dBm",
}


def _unit(spec: MetricSpec) -> str:
    return _UNITS.get(spec.unit, f"suffix: {spec.unit}")


# -- panels ------------------------------------------------------------------------------------
class _Layout:
    """Gives each panel an id and a place on Grafana's 24-column grid, left to right."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def place(self, panel: Json, w: int, h: int) -> Json:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def row(self, title: str) -> Json:
        """A row header across the full width (rows are panels in Grafana's model)."""
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
        self.place(panel, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0
        return panel


def _sql(sql: str, fmt: str = "table", ref: str = "A") -> Json:
    return {
        "datasource": PG,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql.strip(),
        "refId": ref,
    }


def _prom(expr: str, legend: str, ref: str) -> Json:
    return {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
    }


def _timeseries(title: str, targets: list[Json], unit: str, description: str = "") -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"drawStyle": "line", "lineWidth": 1, "spanNulls": False},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _stat(title: str, target: Json, unit: str = "short", description: str = "") -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "targets": [target],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
        },
    }


def _table(title: str, target: Json, description: str = "") -> Json:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "targets": [target],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    }


def _sql_variable(
    name: str, label: str, sql: str, *, multi: bool, include_all: bool = False
) -> Json:
    """A variable whose options come from a PostgreSQL query (refreshed on time range change)."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PG,
        "query": sql.strip(),
        "definition": sql.strip(),
        "refresh": 2,
        "multi": multi,
        "includeAll": include_all,
        "sort": 1,
        "current": {},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def _dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    variables: list[Json],
    annotations: Iterable[Json] = (),
    time_from: str = "now-6h",
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "title": "CityWatch",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *annotations,
            ]
        },
        "templating": {"list": variables},
        "panels": panels,
    }


def _series_sql(where: str, join: str = "") -> str:
    """A per-device average series that reads the cheapest table for the panel's interval.

    Grafana sets `$__interval` from the time range and the panel's width: a week on a
    dashboard is an interval of minutes or hours, and averaging raw readings for it would
    scan every row of the week. So the query has one branch per source, and the interval
    keeps exactly one: raw `readings` below a minute, the minute rollup `readings_1m` up to
    an hour, the hour rollup `readings_1h` from an hour (services/common/maintenance.py;
    continuous aggregates on TimescaleDB, same names and columns). The other branches'
    conditions are constants PostgreSQL folds to false at plan time, so they cost nothing.
    Rollup averages are re-weighted by their counts, and raw values flagged QARTOD fail are
    left out as the rollups leave them out, so a panel shows the same average whichever
    branch answers. `where` and `join` see the source as `r`.
    """
    return f"""
SELECT $__timeGroupAlias(s.time, $__interval), s.device_id AS metric,
       sum(s.total) / sum(s.n) AS value
FROM (
  SELECT r.time, r.device_id, r.value AS total, 1 AS n
  FROM readings r {join}
  WHERE $__interval_ms < 60000 AND $__timeFilter(r.time) AND r.quality <> 4 AND {where}
  UNION ALL
  SELECT r.bucket, r.device_id, r.avg * r.count, r.count
  FROM readings_1m r {join}
  WHERE $__interval_ms >= 60000 AND $__interval_ms < 3600000 AND $__timeFilter(r.bucket)
    AND {where}
  UNION ALL
  SELECT r.bucket, r.device_id, r.avg * r.count, r.count
  FROM readings_1h r {join}
  WHERE $__interval_ms >= 3600000 AND $__timeFilter(r.bucket) AND {where}
) s
GROUP BY 1, 2
ORDER BY 1, 2"""


def _alert_annotation(where: str) -> Json:
    """CityWatch alert episodes drawn as regions on every time series of a dashboard."""
    sql = f"""
SELECT a.started_at AS "time", a.resolved_at AS "timeend",
       a.severity || ': ' || a.title_en || ' (' || a.device_id || ', ' || a.state || ')' AS text,
       a.severity || ',' || a.kind AS tags
FROM alerts a LEFT JOIN devices d USING (device_id)
WHERE $__timeFilter(a.started_at) AND {where}
ORDER BY a.started_at"""
    return {
        "name": "CityWatch alerts",
        "datasource": PG,
        "enable": True,
        "iconColor": "red",
        "rawQuery": sql.strip(),
        "target": _sql(sql),
    }


# -- per kind --------------------------------------------------------------------------------
def _kind_dashboard(kind: Kind) -> Json:
    specs = METRICS[kind]
    lay = _Layout()
    in_kind = f"d.kind = '{kind}' AND {AREA} IN ($area)"
    selected = "r.device_id IN ($device)"
    panels: list[Json] = [lay.row("Now")]
    panels.append(
        lay.place(
            _stat("Devices", _sql(f"SELECT count(*) AS devices FROM devices d WHERE {in_kind}")),
            6,
            4,
        )
    )
    panels.append(
        lay.place(
            _stat(
                "Online",
                _sql(
                    "SELECT count(*) AS online FROM devices d "
                    f"WHERE {in_kind} AND d.last_seen > now() - interval '{OFFLINE_AFTER}'"
                ),
                description=f"Devices heard from in the last {OFFLINE_AFTER}.",
            ),
            6,
            4,
        )
    )
    panels.append(
        lay.place(
            _stat(
                "Active alerts",
                _sql(
                    "SELECT count(*) AS alerts FROM alerts a JOIN devices d USING (device_id) "
                    f"WHERE a.state <> 'resolved' AND {in_kind}"
                ),
                description="Alert episodes firing or acknowledged.",
            ),
            6,
            4,
        )
    )
    panels.append(
        lay.place(
            _stat(
                "Readings in range",
                _sql(
                    "SELECT count(*) AS readings FROM readings r "
                    f"WHERE $__timeFilter(r.time) AND {selected}"
                ),
                description="Stored values of the selected devices in the dashboard's range.",
            ),
            6,
            4,
        )
    )
    columns = ",\n       ".join(
        f"max(l.value) FILTER (WHERE l.metric = '{name}') AS \"{name} ({spec.unit})\""
        for name, spec in {**specs, **COMMON}.items()
    )
    latest = f"""
SELECT d.device_id AS device, d.name, {AREA} AS area, max(l.time) AS "latest reading",
       {columns}
FROM devices d LEFT JOIN device_latest l USING (device_id)
WHERE d.kind = '{kind}' AND d.device_id IN ($device)
GROUP BY d.device_id, d.name, d.area
ORDER BY d.device_id"""
    panels.append(
        lay.place(
            _table(
                "Latest values",
                _sql(latest),
                "The newest value of each metric per device, by reading time.",
            ),
            24,
            8,
        )
    )
    panels.append(lay.row("Metrics"))
    for name, spec in specs.items():
        sql = _series_sql(f"r.metric = '{name}' AND {selected}")
        panels.append(
            lay.place(
                _timeseries(
                    f"{spec.description.capitalize()} ({name})",
                    [_sql(sql, fmt="time_series")],
                    _unit(spec),
                    f"Average per interval and device, {spec.unit}; values flagged QARTOD fail"
                    " left out. From the minute or hour rollups once an interval spans them.",
                ),
                12,
                8,
            )
        )
    quality = f"""
SELECT $__timeGroupAlias(r.time, $__interval),
       r.metric || CASE r.quality WHEN 3 THEN ' suspect' ELSE ' fail' END AS metric,
       count(*) AS value
FROM readings r
WHERE $__timeFilter(r.time) AND r.quality IN (3, 4) AND {selected}
GROUP BY 1, 2
ORDER BY 1, 2"""
    panels.append(
        lay.place(
            _timeseries(
                "Suspect and failed values",
                [_sql(quality, fmt="time_series")],
                "short",
                "Stored values flagged 3 (suspect) or 4 (fail) by the IOOS QARTOD tests.",
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Devices and alerts"))
    panels.append(
        lay.place(
            _table(
                "Devices", _sql(_devices_sql(f"d.kind = '{kind}' AND d.device_id IN ($device)"))
            ),
            24,
            8,
        )
    )
    panels.append(
        lay.place(
            _table("Active alerts", _sql(_alerts_sql(in_kind))),
            24,
            6,
        )
    )
    variables = [
        _sql_variable(
            "area",
            "Area",
            f"SELECT DISTINCT {AREA} FROM devices d WHERE d.kind = '{kind}' ORDER BY 1",
            multi=True,
            include_all=True,
        ),
        _sql_variable(
            "device",
            "Device",
            f"""
SELECT d.device_id AS __value, coalesce(d.name, d.device_id) || ' (' || d.device_id || ')' AS __text
FROM devices d WHERE {in_kind} ORDER BY d.device_id""",
            multi=True,
            include_all=True,
        ),
    ]
    return _dashboard(
        f"citywatch-{kind}",
        f"CityWatch · {KIND_TITLES[kind]}",
        f"Operations centre: {kind} sensors, their latest values, series and alerts.",
        panels,
        variables,
        annotations=[_alert_annotation(f"a.kind = '{kind}' AND {AREA} IN ($area)")],
    )


def _devices_sql(where: str) -> str:
    return f"""
SELECT d.device_id AS device, d.kind, d.name, {AREA} AS area, d.status,
       CASE WHEN d.last_seen IS NULL THEN 'never seen'
            WHEN d.last_seen < now() - interval '{OFFLINE_AFTER}' THEN 'offline'
            ELSE 'online' END AS state,
       d.last_seen AS "last seen", d.last_reading_at AS "last reading",
       (SELECT l.value FROM device_latest l
         WHERE l.device_id = d.device_id AND l.metric = 'battery_pct') AS "battery %",
       (SELECT l.value FROM device_latest l
         WHERE l.device_id = d.device_id AND l.metric = 'rssi_dbm') AS "rssi dBm",
       d.lat, d.lon
FROM devices d
WHERE {where}
ORDER BY d.device_id"""


def _alerts_sql(where: str) -> str:
    return f"""
SELECT a.started_at AS "started", a.severity, a.state, a.kind, a.device_id AS device,
       {AREA} AS area, a.metric, a.value AS "opening value", a.last_value AS "last value",
       a.threshold, a.title_en AS title
FROM alerts a JOIN devices d USING (device_id)
WHERE a.state <> 'resolved' AND {where}
ORDER BY a.started_at DESC
LIMIT 200"""


# -- per area --------------------------------------------------------------------------------
def _area_dashboard() -> Json:
    lay = _Layout()
    in_area = f"{AREA} = '$area' AND d.kind IN ($kind)"
    panels: list[Json] = [lay.row("Now")]
    panels.append(
        lay.place(
            _table(
                "Devices by kind",
                _sql(
                    f"""
SELECT d.kind, count(*) AS devices,
       count(*) FILTER (WHERE d.last_seen > now() - interval '{OFFLINE_AFTER}') AS online,
       (SELECT count(*) FROM alerts a JOIN devices d2 USING (device_id)
         WHERE a.state <> 'resolved' AND a.kind = d.kind
           AND coalesce(d2.area, '{NO_AREA}') = '$area') AS "active alerts"
FROM devices d
WHERE {in_area}
GROUP BY d.kind
ORDER BY d.kind"""
                ),
            ),
            10,
            7,
        )
    )
    panels.append(lay.place(_table("Active alerts", _sql(_alerts_sql(in_area))), 14, 7))
    panels.append(lay.row("Headline metrics"))
    for kind, names in HEADLINE.items():
        for name in names:
            spec = METRICS[kind][name]
            sql = _series_sql(
                f"r.metric = '{name}' AND d.kind = '{kind}' AND {AREA} = '$area' "
                "AND d.kind IN ($kind)",
                join="JOIN devices d USING (device_id)",
            )
            panels.append(
                lay.place(
                    _timeseries(
                        f"{KIND_TITLES[kind]}: {spec.description} ({name})",
                        [_sql(sql, fmt="time_series")],
                        _unit(spec),
                        f"Average per interval and device of the area, {spec.unit}; values"
                        " flagged QARTOD fail left out.",
                    ),
                    12,
                    8,
                )
            )
    throughput = f"""
SELECT $__timeGroupAlias(r.time, $__interval), d.kind AS metric, count(*) AS value
FROM readings r JOIN devices d USING (device_id)
WHERE $__timeFilter(r.time) AND {in_area}
GROUP BY 1, 2
ORDER BY 1, 2"""
    panels.append(
        lay.place(
            _timeseries(
                "Stored values by kind",
                [_sql(throughput, fmt="time_series")],
                "short",
                "Values stored per interval from the area's devices: a gap is a silent area.",
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Devices"))
    latest = f"""
SELECT d.device_id AS device, d.kind, l.metric, l.value, l.time AS "reading time"
FROM device_latest l JOIN devices d USING (device_id)
WHERE {in_area}
ORDER BY d.kind, d.device_id, l.metric"""
    panels.append(lay.place(_table("Latest values", _sql(latest)), 12, 10))
    panels.append(lay.place(_table("Devices", _sql(_devices_sql(in_area))), 12, 10))
    variables = [
        _sql_variable(
            "area", "Area", f"SELECT DISTINCT {AREA} FROM devices d ORDER BY 1", multi=False
        ),
        _sql_variable(
            "kind",
            "Kind",
            f"SELECT DISTINCT d.kind FROM devices d WHERE {AREA} = '$area' ORDER BY 1",
            multi=True,
            include_all=True,
        ),
    ]
    return _dashboard(
        "citywatch-area",
        "CityWatch · Area",
        "Operations centre: one area of the city, every kind of sensor in it.",
        panels,
        variables,
        annotations=[_alert_annotation(f"{AREA} = '$area'")],
    )


# -- pipeline health ---------------------------------------------------------------------------
RATE = "[$__rate_interval]"


def _pipeline_dashboard() -> Json:
    lay = _Layout()
    panels: list[Json] = [lay.row("Ingest")]

    def prom_panel(title: str, unit: str, description: str, *series: tuple[str, str]) -> Json:
        targets = [
            _prom(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(series)
        ]
        return _timeseries(title, targets, unit, description)

    panels.append(
        lay.place(
            prom_panel(
                "MQTT messages",
                "reqps",
                "Messages the gateways received, decoded, and acknowledged after Kafka acked.",
                (f"sum(rate(citywatch_ingest_received_total{RATE}))", "received"),
                (f"sum(rate(citywatch_ingest_accepted_total{RATE}))", "accepted"),
                (f"sum(rate(citywatch_ingest_acked_total{RATE}))", "acked"),
                (f"sum(rate(citywatch_ingest_readings_total{RATE}))", "readings to Kafka"),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Rejections by reason",
                "reqps",
                "Payloads sent to citywatch.rejected.v1, by reason code (README, devices).",
                (
                    f"sum by (reason) (rate(citywatch_ingest_rejected_total{RATE}))",
                    "{{reason}}",
                ),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Rejection ratio",
                "percentunit",
                "Share of received messages that were rejected.",
                (
                    f"sum(rate(citywatch_ingest_rejected_total{RATE})) / "
                    f"clamp_min(sum(rate(citywatch_ingest_received_total{RATE})), 1e-9)",
                    "rejected / received",
                ),
            ),
            8,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "In flight and Kafka errors",
                "short",
                "Messages taken from MQTT and not yet acked; failed Kafka deliveries (retried).",
                ("sum(citywatch_ingest_in_flight)", "in flight"),
                (f"sum(rate(citywatch_ingest_kafka_errors_total{RATE}))", "kafka errors/s"),
                (f"sum(rate(citywatch_ingest_ack_skipped_total{RATE}))", "acks skipped/s"),
            ),
            8,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Ready",
                "short",
                "1 while a service reaches its upstreams (its /readyz answers 200). Alerts: one"
                " instance leads (ready 1) and the others are standbys (ready 0); the sum of"
                " leaders must be exactly 1.",
                ("min by (instance) (citywatch_ingest_ready)", "ingest {{instance}}"),
                ("min by (instance) (citywatch_processor_ready)", "processor {{instance}}"),
                ("min by (instance) (citywatch_alerts_ready)", "alerts {{instance}}"),
                ("sum(citywatch_alerts_leader)", "alerts leaders"),
            ),
            8,
            8,
        )
    )
    panels.append(lay.row("Processor"))
    panels.append(
        lay.place(
            prom_panel(
                "Rows stored",
                "rowsps",
                "New rows in readings, and rows skipped as already stored (redeliveries).",
                (f"sum(rate(citywatch_processor_rows_stored_total{RATE}))", "stored"),
                (f"sum(rate(citywatch_processor_rows_duplicate_total{RATE}))", "duplicates"),
                (f"sum(rate(citywatch_processor_batches_total{RATE}))", "batches"),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Batch size",
                "short",
                "Readings per committed batch.",
                *(
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(citywatch_processor_batch_size_bucket{RATE})))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ),
                (
                    f"sum(rate(citywatch_processor_batch_size_sum{RATE})) / "
                    f"clamp_min(sum(rate(citywatch_processor_batch_size_count{RATE})), 1e-9)",
                    "mean",
                ),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Gateway receipt to database commit",
                "s",
                "Latency from the gateway receiving a reading to its batch committing.",
                *(
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(citywatch_publish_to_stored_seconds_bucket{RATE})))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Database and commit failures",
                "short",
                "Batches whose transaction failed and offset commits refused (both retried).",
                (f"sum(rate(citywatch_batch_failures_total{RATE}))", "batch failures/s"),
                (f"sum(rate(citywatch_commit_failures_total{RATE}))", "commit failures/s"),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Quality flags",
                "rowsps",
                "Rows stored per IOOS QARTOD flag.",
                (
                    f"sum by (flag) (rate(citywatch_processor_quality_flags_total{RATE}))",
                    "{{flag}}",
                ),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Kafka consumer lag",
                "short",
                "Readings waiting in each partition for the processor (highwater - position): "
                "growing lag means the processors or the database cannot keep up.",
                ("sum(citywatch_processor_consumer_lag)", "total"),
                (
                    "sum by (topic, partition) (citywatch_processor_consumer_lag)",
                    "{{topic}} [{{partition}}]",
                ),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            prom_panel(
                "Age of each area's newest reading",
                "s",
                "Seconds since any device of the area last reported: a rising line is an "
                "area gone silent.",
                (
                    "max by (area) (time() - citywatch_area_last_reading_timestamp_seconds)",
                    "{{area}}",
                ),
            ),
            12,
            8,
        )
    )
    stored = """
SELECT $__timeGroupAlias(r.time, $__interval), count(*) AS value
FROM readings r
WHERE $__timeFilter(r.time)
GROUP BY 1
ORDER BY 1"""
    panels.append(
        lay.place(
            _timeseries(
                "Values in the database by reading time",
                [_sql(stored, fmt="time_series")],
                "short",
                "Counted at the source: what the processor committed, by the readings' own time.",
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Alerts"))
    panels.append(
        lay.place(
            prom_panel(
                "Alert transitions",
                "short",
                "Alert state changes stored, by state and severity; alerts open now.",
                (
                    f"sum by (state, severity) "
                    f"(increase(citywatch_alerts_transitions_total{RATE}))",
                    "{{state}} {{severity}}",
                ),
                ("sum(citywatch_alerts_active)", "open"),
                (f"sum(increase(citywatch_alerts_published_total{RATE}))", "published"),
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            _table(
                "Prometheus alerts firing",
                _prom('ALERTS{alertstate="firing"}', "{{alertname}}", "A")
                | {"format": "table", "instant": True, "range": False},
                "The pipeline's Prometheus alerting rules (deploy/prometheus/) now firing.",
            ),
            12,
            8,
        )
    )
    outbox = """
SELECT count(*) FILTER (WHERE e.published_at IS NULL) AS "unpublished transitions",
       min(e.recorded_at) FILTER (WHERE e.published_at IS NULL) AS "oldest unpublished",
       count(*) FILTER (WHERE $__timeFilter(e.recorded_at)) AS "transitions in range"
FROM alert_events e"""
    panels.append(
        lay.place(
            _table(
                "Alert outbox",
                _sql(outbox),
                "alert_events not yet published to citywatch.alerts.v1: should drain to 0.",
            ),
            12,
            5,
        )
    )
    panels.append(
        lay.place(
            _table("Active alerts", _sql(_alerts_sql("TRUE"))),
            12,
            5,
        )
    )
    return _dashboard(
        "citywatch-pipeline",
        "CityWatch · Pipeline health",
        "Ingest, processor and alerts services: rates, rejections, batches, latency, alerts.",
        panels,
        [],
        time_from="now-1h",
    )


# -- files -------------------------------------------------------------------------------------
def build_dashboards() -> dict[str, Json]:
    """Every dashboard by file name, in a stable order."""
    out: dict[str, Json] = {f"{kind}.json": _kind_dashboard(kind) for kind in KINDS}
    out["area.json"] = _area_dashboard()
    out["pipeline.json"] = _pipeline_dashboard()
    return out


def render(dashboard: Json) -> str:
    """The file text of a dashboard: stable, diff-friendly JSON."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_dashboards(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """Write every dashboard into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in build_dashboards().items():
        path = directory / name
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


def load_dashboards(directory: Path = DASHBOARD_DIR) -> Iterator[tuple[Path, Json]]:
    """Every `*.json` dashboard in `directory`, sorted by file name."""
    for path in sorted(directory.glob("*.json")):
        yield path, json.loads(path.read_text(encoding="utf-8"))

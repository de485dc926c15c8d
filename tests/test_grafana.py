"""Grafana as code: every dashboard query runs, every metric exists, and push is idempotent.

1. Every SQL panel, SQL template variable and SQL annotation of deploy/grafana/dashboards/
   runs against the real PostgreSQL holding the simulator's data (a registered fleet of
   every kind, its readings with the processor's QARTOD flags, latest values, and the
   alerts the real alerts service raised; see `_play_simulated_day`), and against the
   TimescaleDB path holding a copy of it, and returns rows with values. Grafana's macros
   are expanded by `expand_sql` below, which mirrors what Grafana does for PostgreSQL.
2. Every Prometheus expression names only metrics the services register.
3. `citywatch grafana push` against `FakeGrafana`: Grafana itself cannot run on this machine
   (no Debian package, no Docker), so an aiohttp server on 127.0.0.1 implements the few
   endpoints grafana-client calls, with Grafana's semantics for uid, version and overwrite.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import prometheus_client
import pytest
import yaml
from aiohttp import web

from schemas.registry import KINDS, METRICS
from services.common import db
from services.grafana.dashboards import DASHBOARD_DIR, build_dashboards, load_dashboards, render
from services.registry.store import upsert_devices
from simulators import Publisher
from simulators.faults import FaultRates
from simulators.run import ScenarioRun
from simulators.scenarios import load_scenario
from tests.fixtures_databases import pglite
from tests.harness import REPO, Namespace, Services, wait_until

PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"


def _datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "citywatch.yaml").read_text())
    return {ds["uid"]: ds for ds in doc["datasources"]}


DATASOURCES = _datasources()
PG_UID = next(
    uid for uid, ds in DATASOURCES.items() if ds["type"].endswith("postgresql-datasource")
)
PROM_UID = next(uid for uid, ds in DATASOURCES.items() if ds["type"] == "prometheus")
DASHBOARDS = dict(load_dashboards())


# == 1. Grafana's macro expansion for the PostgreSQL datasource ================================
#
# Grafana expands a PostgreSQL query in three steps, and `expand_sql` does the same:
#  a. the browser replaces dashboard variables ($var, ${var}, [[var]]) with
#     SqlDatasource.interpolateVariable: a multi-value or include-All variable becomes
#     quoted literals joined by commas ('a','b'); a single-value one is inserted raw with
#     single quotes doubled (so queries write '$area');
#  b. the backend's sqleng Interpolate replaces $__interval_ms, $__interval (formatted like
#     gtime.FormatInterval: 5m, 1h, 30s), $__unixEpochFrom() and $__unixEpochTo();
#  c. the postgres macro engine (pkg/tsdb/grafana-postgresql-datasource/macros.go) replaces
#     each `$__name(args)`: $__timeFilter(c) -> c BETWEEN '<from>' AND '<to>' (RFC 3339 UTC),
#     $__timeFrom()/$__timeTo() -> quoted RFC 3339, $__timeGroup(c, iv) ->
#     floor(extract(epoch from c)/s)*s, or time_bucket('s.000s', c) when the datasource has
#     timescaledb enabled, $__timeGroupAlias -> the same plus AS "time", $__time(c) ->
#     c AS "time", $__timeEpoch(c) -> extract(epoch from c) as "time",
#     $__unixEpochFilter(c) -> c >= from AND c <= to (seconds).
# Anything `$__...` left over is an error, as it would be in Grafana.

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@dataclass
class Var:
    """A dashboard variable's current value, as the browser would hold it."""

    value: str | list[str]
    multi: bool = False
    include_all: bool = False


@dataclass
class TimeRange:
    start: datetime
    end: datetime
    interval_s: float = 60.0
    timescaledb: bool = False

    def rfc3339(self, at: datetime) -> str:
        return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _interpolate_variable(var: Var) -> str:
    if isinstance(var.value, list):
        return ",".join(_quote(v) for v in var.value)
    if var.multi or var.include_all:
        return _quote(var.value)
    return var.value.replace("'", "''")


def _format_interval(seconds: float) -> str:
    """gtime.FormatInterval: the count of the largest unit that fits, truncated (90s -> 1m)."""
    for unit in ("y", "d", "h", "m", "s", "ms"):
        if seconds >= _UNITS_S[unit]:
            return f"{int(seconds // _UNITS_S[unit])}{unit}"
    return "1ms"


def _parse_interval(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.strip().strip("'"))
    assert m, f"Grafana cannot parse interval {text!r}"
    return float(m.group(1)) * _UNITS_S[m.group(2)]


def _num(x: float) -> str:
    """Go's %v of a float64: 300 -> 300, 0.5 -> 0.5."""
    return f"{x:g}"


def _macro(name: str, args: list[str], tr: TimeRange) -> str:
    frm, to = tr.rfc3339(tr.start), tr.rfc3339(tr.end)
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
    if name == "__timeFrom":
        return f"'{frm}'"
    if name == "__timeTo":
        return f"'{to}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        assert len(args) >= 2, f"${name} needs a column and an interval"
        s = _parse_interval(args[1])
        group = (
            f"time_bucket('{s:.3f}s',{args[0]})"
            if tr.timescaledb
            else f"floor(extract(epoch from {args[0]})/{_num(s)})*{_num(s)}"
        )
        return group + (' AS "time"' if name == "__timeGroupAlias" else "")
    if name == "__unixEpochFilter":
        lo, hi = int(tr.start.timestamp()), int(tr.end.timestamp())
        return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
    raise AssertionError(f"unknown macro ${name}")


def expand_sql(sql: str, variables: dict[str, Var], tr: TimeRange) -> str:
    """The SQL Grafana would send to PostgreSQL for `sql` (see the three steps above)."""

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in variables:
            return _interpolate_variable(variables[name])
        return m.group(0)  # Grafana's own $__ names, handled below

    sql = _VARIABLE.sub(variable, sql)
    sql = sql.replace("$__interval_ms", str(round(tr.interval_s * 1000)))
    sql = sql.replace("$__interval", _format_interval(tr.interval_s))
    sql = sql.replace("$__unixEpochFrom()", str(int(tr.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(tr.end.timestamp())))
    sql = _MACRO.sub(
        lambda m: _macro(m.group(1), [a.strip() for a in m.group(2).split(",")], tr), sql
    )
    left = re.findall(r"\$\w+|\[\[\w+\]\]", sql)
    assert not left, f"unexpanded after Grafana's expansion: {left}\n{sql}"
    return sql


def test_macro_expander_matches_grafanas_postgres_expansion() -> None:
    """Pinned against the outputs macros_test.go and the SqlDatasource code document."""
    tr = TimeRange(
        datetime(2026, 11, 24, 10, 0, tzinfo=UTC), datetime(2026, 11, 24, 13, 0, tzinfo=UTC), 300
    )
    got = expand_sql(
        "SELECT $__timeGroupAlias(time, $__interval), x FROM t "
        "WHERE $__timeFilter(time) AND a = '$area' AND d IN ($device) AND k IN (${kind})",
        {
            "area": Var("O'Neill"),
            "device": Var(["d1", "d'2"], multi=True),
            "kind": Var("air", include_all=True),
        },
        tr,
    )
    assert got == (
        'SELECT floor(extract(epoch from time)/300)*300 AS "time", x FROM t '
        "WHERE time BETWEEN '2026-11-24T10:00:00Z' AND '2026-11-24T13:00:00Z' "
        "AND a = 'O''Neill' AND d IN ('d1','d''2') AND k IN ('air')"
    )
    tr.timescaledb = True
    assert expand_sql("$__timeGroup(t, '1h')", {}, tr) == "time_bucket('3600.000s',t)"
    assert expand_sql("$__interval_ms $__unixEpochFrom()", {}, tr) == "300000 1795514400"


# == the dashboards' queries ====================================================================
@dataclass
class Query:
    dashboard: str
    where: str  # panel title, "variable x" or "annotation x"
    text: str
    datasource: str


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def queries(uid: str | None = None) -> list[Query]:
    """Every query of every dashboard (or of one): panels, variables and annotations."""
    out: list[Query] = []
    for dash in DASHBOARDS.values():
        if uid is not None and dash["uid"] != uid:
            continue
        for panel in _walk_panels(dash["panels"]):
            for t in panel.get("targets", []):
                ds = (t.get("datasource") or panel["datasource"])["uid"]
                text = t["rawSql"] if ds == PG_UID else t["expr"]
                out.append(Query(dash["uid"], panel["title"], text, ds))
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                q = var["query"]
                text = q if isinstance(q, str) else q.get("rawSql") or q.get("query")
                out.append(
                    Query(dash["uid"], f"variable {var['name']}", text, var["datasource"]["uid"])
                )
        for ann in dash["annotations"]["list"]:
            if ann.get("builtIn"):
                continue
            out.append(
                Query(
                    dash["uid"],
                    f"annotation {ann['name']}",
                    ann["target"]["rawSql"],
                    ann["datasource"]["uid"],
                )
            )
    return out


def test_dashboard_files_are_what_the_builder_makes() -> None:
    """The committed JSON is generated (`citywatch grafana build`); hand edits would be lost."""
    built = build_dashboards()
    assert sorted(built) == sorted(p.name for p in DASHBOARDS)
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == render(built[path.name]), (
            f"{path} differs from services/grafana/dashboards.py: run `citywatch grafana build`"
        )


def test_every_dashboard_is_a_grafana_model_on_the_provisioned_datasources() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) == 6
    assert {f"citywatch-{k}" for k in KINDS} | {"citywatch-area", "citywatch-pipeline"} == set(uids)
    for dash in DASHBOARDS.values():
        assert dash["schemaVersion"] == 39 and dash["title"].startswith("CityWatch")
        ids = [p["id"] for p in _walk_panels(dash["panels"])]
        assert len(set(ids)) == len(ids), f"{dash['uid']}: duplicate panel ids"
        for p in _walk_panels(dash["panels"]):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (dash["uid"], p["title"])
    assert {q.datasource for q in queries()} == {PG_UID, PROM_UID}
    # The time series panels per kind follow the metric registry.
    for kind in KINDS:
        titles = " ".join(p["title"] for p in DASHBOARDS[DASHBOARD_DIR / f"{kind}.json"]["panels"])
        assert all(f"({m})" in titles for m in METRICS[kind]), kind
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "citywatch.yaml").read_text())
    assert providers["providers"][0]["folder"] == "CityWatch"
    assert providers["providers"][0]["type"] == "file"


# == 1. every SQL query against the real database ==============================================
# The data is the simulator's: the last SIM_HOURS of a normal day in Sihanoukville, the fleet
# registered as engineers would register it, played through MQTT -> ingest -> Kafka ->
# processor -> PostgreSQL, with the simulator's own spikes, duplicates and malformed
# payloads (so QARTOD flags come from the processor, not from the test), and the real
# alerts service evaluating it. A calm day raises no alert under the shipped rules, so the
# alerts service runs with a rehearsal rule per kind (CAP status Exercise) whose threshold a
# calm day crosses everywhere: every dashboard then has active alerts to list.
SIM_DEVICES = 12
SIM_HOURS = 3
# Spikes (flagged by QARTOD's spike test) and failing batteries (flagged by gross range on
# battery_pct late in the day: litter metrics have no other test) put suspect and failed
# values on every kind's panels.
SIM_FAULTS = FaultRates(spike=0.05, low_battery=0.5, duplicate=0.02, malformed=0.01)
REHEARSAL_RULES = """\
rules:
""" + "".join(
    f"""\
  - id: rehearsal-{kind}
    type: threshold
    kind: {kind}
    metric: {metric}
    threshold: {threshold}
    clear: {threshold - 1}
    severity: advisory
    status: Exercise
    title_en: "Rehearsal: {kind} {metric} {{value}} {{unit}} at {{device}}"
    title_km: "សមយុទ្ធ៖ {{value}} {{unit}} នៅ {{device}}"
"""
    for kind, metric, threshold in (
        ("water", "temperature_c", 15.0),  # the Gulf of Thailand is 26-33 C all year
        ("air", "temperature_c", 15.0),  # so is Sihanoukville's air, day and night
        ("flood", "water_level_m", 0.1),  # every gauge's base level is above 0.5 m
        ("litter", "fill_level_pct", 0.0),  # a fill level is never below 0 %
    )
)


@dataclass
class Seed:
    """The simulated day one module played, under its own device ids."""

    now: datetime
    areas: list[str]  # the areas of the fleet, the first holding every kind
    devices: dict[str, list[str]] = field(default_factory=dict)  # kind -> device ids
    rows: int = 0


async def _play_simulated_day(
    services: Services,
    con: asyncpg.Connection,
    ns: Namespace,
    publisher: Publisher,
    rules: Path,
) -> Seed:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    run = ScenarioRun(
        load_scenario("normal-day"),
        devices=SIM_DEVICES,
        seed=7,
        start=now - timedelta(hours=24),  # the day ends now; its last hours are played
        prefix=ns.prefix,
        id_prefix=ns.device_prefix,
        faults=SIM_FAULTS,
    )
    table = run.device_table()
    kinds_in: dict[str, set[str]] = {}
    for d in table:
        kinds_in.setdefault(d["area"], set()).add(d["kind"])
    full = [a for a, kinds in sorted(kinds_in.items()) if kinds == set(KINDS)]
    assert full, f"no area of the fleet holds every kind: {kinds_in}"
    seed = Seed(now=now, areas=[full[0], *sorted(set(kinds_in) - {full[0]})])
    for d in table:
        seed.devices.setdefault(d["kind"], []).append(d["device_id"])
    await upsert_devices(con, run.device_profiles())  # registered as the demo does
    since = now - timedelta(hours=SIM_HOURS)
    msgs = [m for m in run.messages() if m.sent_at is not None and m.sent_at >= since]
    assert any(m.fault == "spike" for m in msgs) and any(not m.valid for m in msgs)
    await services.start("ingest", "processor", "alerts", CITYWATCH_ALERTS__RULES_FILE=str(rules))
    stats = await asyncio.to_thread(publisher.run, iter(msgs))
    assert stats.acked == len(msgs)
    seed.rows = sum(m.rows for m in msgs)

    async def stored() -> bool:
        return await ns.rows(con) == seed.rows

    await wait_until(stored, timeout=90, what=f"{seed.rows} rows of the simulated day stored")

    async def alerting_everywhere() -> bool:
        kinds = await con.fetch(
            "SELECT DISTINCT kind FROM alerts WHERE device_id LIKE $1 AND state = 'firing'",
            f"{ns.device_prefix}%",
        )
        return {r["kind"] for r in kinds} == set(KINDS)

    await wait_until(alerting_everywhere, timeout=60, what="a rehearsal alert of every kind")
    flagged = await con.fetch(
        "SELECT DISTINCT d.kind FROM readings r JOIN devices d USING (device_id) "
        "WHERE r.device_id LIKE $1 AND r.quality IN (3, 4)",
        f"{ns.device_prefix}%",
    )
    assert {r["kind"] for r in flagged} == set(KINDS), "a kind without suspect values"
    return seed


@pytest.fixture(scope="module")
async def simulated_day(
    mod_services: Services,
    mod_dbcon: asyncpg.Connection,
    mod_ns: Namespace,
    mod_publisher: Publisher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Seed:
    rules = tmp_path_factory.mktemp("grafana") / "rehearsal-rules.yaml"
    rules.write_text(REHEARSAL_RULES, encoding="utf-8")
    return await _play_simulated_day(mod_services, mod_dbcon, mod_ns, mod_publisher, rules)


def _range(seed: Seed, *, timescaledb: bool) -> TimeRange:
    """From the start of the played hours up to now, as a dashboard would show them (the
    alerts service recorded its transitions after the last reading's time)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return TimeRange(seed.now - timedelta(hours=SIM_HOURS), now, timescaledb=timescaledb)


# The tables that hold the simulated day, and which of their rows are the fleet's.
_COPIED = (
    ("devices", "device_id LIKE $1"),
    ("readings", "device_id LIKE $1"),
    ("device_latest", "device_id LIKE $1"),
    ("alerts", "device_id LIKE $1"),
    ("alert_events", "alert_id IN (SELECT alert_id FROM alerts WHERE device_id LIKE $1)"),
)


async def _copy_simulated_day(src: asyncpg.Connection, dst: asyncpg.Connection, like: str) -> int:
    """Copy the simulated day from the test stack's PostgreSQL into another migrated database
    (the TimescaleDB one), row for row: the same simulator data on both storage paths."""
    copied = 0
    for table, where in _COPIED:
        rows = await src.fetch(f"SELECT * FROM {table} WHERE {where}", like)
        writable = {
            r["column_name"]
            for r in await dst.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                "AND is_generated = 'NEVER' AND coalesce(identity_generation, '') <> 'ALWAYS'",
                table,
            )
        }
        if not rows:
            continue
        columns = [c for c in dict(rows[0]) if c in writable]
        args = [tuple(r[c] for c in columns) for r in rows]
        # One multi-row INSERT per chunk, each a plain request and reply: asyncpg's
        # executemany pipelines a message stream per row, and twice late in a full CI run
        # (whole day, then chunks of 200) both sides went idle in the middle of one; the
        # statement timeout then asked PGlite, which serves one connection at a time, to
        # cancel through a second connection, which waited in its queue until the test's
        # 900 s timeout. No asyncpg timeout here for that reason: pytest-timeout bounds it.
        width = len(columns)
        for i in range(0, len(args), 200):
            chunk = args[i : i + 200]
            values = ", ".join(
                "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                for r in range(len(chunk))
            )
            await dst.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} "
                "ON CONFLICT DO NOTHING",
                *(value for row in chunk for value in row),
            )
        copied += len(rows)
    return copied


def _variables(uid: str, seed: Seed) -> dict[str, Var]:
    """The variable values an operator would pick to look at the simulated fleet."""
    if uid == "citywatch-area":
        return {"area": Var(seed.areas[0]), "kind": Var(list(KINDS), multi=True, include_all=True)}
    if uid == "citywatch-pipeline":
        return {}
    kind = uid.removeprefix("citywatch-")
    return {
        "area": Var(seed.areas, multi=True, include_all=True),
        "device": Var(seed.devices[kind], multi=True, include_all=True),
    }


def _has_values(rows: list[asyncpg.Record]) -> bool:
    """True when some cell other than the time column holds a non-zero value."""
    for row in rows:
        for key, value in row.items():
            if key != "time" and value not in (None, 0, "", "0"):
                return True
    return False


async def _run_dashboard_sql(con: asyncpg.Connection, uid: str, seed: Seed, tr: TimeRange) -> int:
    """Run every SQL query of one dashboard as Grafana would; returns how many ran."""
    variables = _variables(uid, seed)
    sql_queries = [q for q in queries(uid) if q.datasource == PG_UID]
    assert sql_queries, f"{uid} has no SQL queries"
    # A zoomed-in, a medium and a zoomed-out $__interval: the series panels answer from the
    # raw readings, the minute rollup and the hour rollup (`_series_sql`).
    for interval_s in (10, 60, 3600):
        tr.interval_s = interval_s
        for q in sql_queries:
            sql = expand_sql(q.text, variables, tr)
            try:
                rows = await con.fetch(sql)
            except asyncpg.PostgresError as exc:
                raise AssertionError(f"{uid} / {q.where}: {exc}\n{sql}") from exc
            assert rows, f"{uid} / {q.where}: no rows\n{sql}"
            assert _has_values(rows), f"{uid} / {q.where}: only empty values\n{sql}"
            if q.where.startswith("variable "):
                # The options include what the test inserted, so the panels' filters meet it.
                got = {str(r[0]) for r in rows}
                name = q.where.removeprefix("variable ")
                wanted = variables[name].value
                wanted = wanted if isinstance(wanted, list) else [wanted]
                assert set(wanted) <= got, f"{uid} / {q.where}: {set(wanted) - got} missing"
            if "__timeGroupAlias" in q.text and not tr.timescaledb:
                # Series panels: bucket times fall on the interval and inside the range.
                for r in rows:
                    t = float(r["time"])
                    assert t % interval_s == 0 and tr.start.timestamp() - interval_s <= t
                    assert t <= tr.end.timestamp()
    return len(sql_queries)


@pytest.mark.stack
@pytest.mark.parametrize("uid", sorted(d["uid"] for d in DASHBOARDS.values()))
async def test_every_sql_query_of_the_dashboard_returns_rows_from_the_simulated_day(
    uid: str,
    simulated_day: Seed,
    mod_dbcon: asyncpg.Connection,
) -> None:
    tr = _range(simulated_day, timescaledb=bool(DATASOURCES[PG_UID]["jsonData"].get("timescaledb")))
    await _run_dashboard_sql(mod_dbcon, uid, simulated_day, tr)


@pytest.mark.stack
# PGlite runs PostgreSQL in WebAssembly: copying the day and running every query took 14 s
# on a quiet box but passed 240 s twice late in a full CI run; 900 s bounds a hang.
@pytest.mark.timeout(900)
async def test_every_sql_query_also_runs_on_the_timescaledb_path(
    simulated_day: Seed,
    mod_dbcon: asyncpg.Connection,
    mod_ns: Namespace,
    pglite_port: int,
) -> None:
    """The same queries on a hypertable (PGlite with TimescaleDB, see deploy/pglite/) holding
    the same simulated day, with the datasource's timescaledb switch off as provisioned and
    on (time_bucket())."""
    async with pglite(pglite_port) as con:
        await db.migrate(con)
        assert await db.storage_path(con) == "timescaledb"
        copied = await _copy_simulated_day(mod_dbcon, con, f"{mod_ns.device_prefix}%")
        assert copied > simulated_day.rows
        ran = 0
        for timescaledb in (False, True):
            for dash in DASHBOARDS.values():
                tr = _range(simulated_day, timescaledb=timescaledb)
                ran += await _run_dashboard_sql(con, dash["uid"], simulated_day, tr)
        assert ran == 2 * len([q for q in queries() if q.datasource == PG_UID])


# == 2. Prometheus expressions name exported metrics ==========================================
# Series Prometheus itself creates, not the services.
PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE", "up", "scrape_duration_seconds"}
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strips string literals, label matchers `{...}`, range selectors `[...]`, grouping
    clauses `by (...)` / `without (...)` / `on (...)` / `ignoring (...)` / `group_*(...)`
    and `offset <duration>`; what is left that is an identifier not followed by `(` (a
    function call) and not a keyword is a metric name.
    """
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _PROMQL_WORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # the exponent of 1e-9
        names.add(m.group(0))
    return names


def exported_metric_names() -> set[str]:
    """Every sample name the ingest, processor and alerts services can expose on /metrics.

    Imports each service's module (which imports every module that registers a metric)
    and expands each registered family into its sample names the way prometheus_client
    exposes them (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms, ...).
    """
    for module in (
        "services.ingest.gateway",
        "services.processor.writer",
        "services.alerts.service",
    ):
        importlib.import_module(module)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "unknown": ("",),
    }
    names = set()
    for family in prometheus_client.REGISTRY.collect():
        if family.name.startswith("citywatch_"):
            names.update(family.name + s for s in suffixes[family.type])
    return names


def test_promql_name_parser_finds_metrics_not_functions_labels_or_durations() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="x",le!=""}[$__rate_interval])))'
        " / clamp_min(sum(rate(b_total[5m] offset 1h)), 1e-9) + on(instance) c"
    ) == {"a_bucket", "b_total", "c"}


def test_every_prometheus_expression_names_metrics_the_services_export() -> None:
    exported = exported_metric_names()
    assert "citywatch_ingest_rejected_total" in exported  # the collection itself works
    prom = [q for q in queries() if q.datasource == PROM_UID]
    assert len(prom) >= 20
    for q in prom:
        names = metric_names(q.text)
        assert names, f"{q.dashboard} / {q.where}: no metric in {q.text!r}"
        unknown = names - exported - PROMETHEUS_OWN
        assert not unknown, f"{q.dashboard} / {q.where}: {unknown} not exported by any service"


# == 3. `citywatch grafana push` against FakeGrafana ==========================================
@dataclass
class FakeGrafana:
    """The slice of Grafana's HTTP API that `citywatch grafana push` uses (grafana-client).

    Not Grafana: Grafana cannot run on this machine (no Debian package, no Docker). It keeps
    Grafana's rules that the push relies on: a dashboard is identified by uid, every save
    bumps its version, a save of an existing uid without `overwrite` is refused with 412,
    a folder must exist, and every request needs `Authorization: Bearer <token>` (401).
    """

    token: str
    folders: dict[str, str] = field(default_factory=dict)  # uid -> title
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> saved
    authorizations: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        @web.middleware
        async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            self.authorizations.append(header)
            self.calls.append(f"{request.method} {request.path}")
            if header != f"Bearer {self.token}":
                return web.json_response({"message": "invalid API key"}, status=401)
            return await handler(request)

        app = web.Application(middlewares=[auth])
        app.router.add_get("/api/search", self.search)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_get("/api/dashboards/uid/{uid}", self.get_dashboard)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
        return app

    async def search(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "").lower()
        kind = request.query.get("type", "")
        hits = []
        if kind in ("", "dash-folder"):
            hits += [
                {"uid": uid, "title": title, "type": "dash-folder"}
                for uid, title in self.folders.items()
                if query in title.lower()
            ]
        if kind in ("", "dash-db"):
            hits += [
                {"uid": uid, "title": d["dashboard"]["title"], "type": "dash-db"}
                for uid, d in self.dashboards.items()
                if query in d["dashboard"]["title"].lower()
            ]
        return web.json_response(hits)

    async def create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        uid = body.get("uid") or uuid.uuid4().hex[:9]
        if uid in self.folders or body["title"] in self.folders.values():
            return web.json_response(
                {"message": "a folder with that name already exists"}, status=409
            )
        self.folders[uid] = body["title"]
        return web.json_response(
            {"id": len(self.folders), "uid": uid, "title": body["title"], "version": 1}
        )

    async def get_dashboard(self, request: web.Request) -> web.Response:
        saved = self.dashboards.get(request.match_info["uid"])
        if saved is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(saved)

    async def save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dash = dict(body["dashboard"])
        uid = dash["uid"]
        if body.get("folderUid") not in self.folders:
            return web.json_response({"message": "folder not found"}, status=400)
        old = self.dashboards.get(uid)
        if old is not None and not body.get("overwrite"):
            return web.json_response({"status": "version-mismatch"}, status=412)
        dash["version"] = 1 if old is None else old["dashboard"]["version"] + 1
        dash["id"] = old["dashboard"]["id"] if old else len(self.dashboards) + 1
        self.dashboards[uid] = {"dashboard": dash, "meta": {"folderUid": body["folderUid"]}}
        return web.json_response(
            {
                "id": dash["id"],
                "uid": uid,
                "url": f"/d/{uid}/x",
                "status": "success",
                "version": dash["version"],
            }
        )


@pytest.fixture
async def fake_grafana() -> AsyncIterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana(token=f"glsa_{uuid.uuid4().hex}")
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _push(url: str, token: str) -> tuple[int, str, str]:
    """Run the real command line in a child process (the fake serves from this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "grafana", "push", "--url", url,
        cwd=REPO,
        env={**os.environ, "CITYWATCH_GRAFANA_TOKEN": token},  # never on the command line
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_push_creates_folder_and_dashboards_then_second_push_bumps_versions_same_uids(
    fake_grafana: tuple[FakeGrafana, str],
) -> None:
    fake, url = fake_grafana
    files = {d["uid"]: d for d in DASHBOARDS.values()}

    code, out, err = await _push(url, fake.token)
    assert code == 0, out + err
    assert list(fake.folders.values()) == ["CityWatch"]
    folder_uid = next(iter(fake.folders))
    assert set(fake.dashboards) == set(files)
    for uid, saved in fake.dashboards.items():
        assert saved["dashboard"]["version"] == 1
        assert saved["meta"]["folderUid"] == folder_uid
        assert saved["dashboard"]["panels"] == files[uid]["panels"]
    assert "folder 'CityWatch' created" in out
    assert out.count(" created -> version 1 ") == len(files)

    code, out, err = await _push(url, fake.token)
    assert code == 0, out + err
    assert list(fake.folders.values()) == ["CityWatch"]  # found, not created again
    assert set(fake.dashboards) == set(files)
    assert all(s["dashboard"]["version"] == 2 for s in fake.dashboards.values())
    assert "folder 'CityWatch' exists" in out
    assert out.count("updated from version 1 -> version 2") == len(files)

    # Every request of both pushes carried the token.
    assert fake.authorizations and set(fake.authorizations) == {f"Bearer {fake.token}"}
    assert "POST /api/dashboards/db" in fake.calls and "GET /api/search" in fake.calls


async def test_push_with_a_wrong_token_fails_clearly_and_changes_nothing(
    fake_grafana: tuple[FakeGrafana, str],
) -> None:
    fake, url = fake_grafana
    code, _, err = await _push(url, "glsa_wrong")
    assert code == 2
    assert "refused the token" in err
    assert not fake.folders and not fake.dashboards

"""deploy/prometheus/ checked by Prometheus's own tool, and against the services' metrics.

`promtool` comes with the Debian package `prometheus`, which ./citywatch installs; a
missing promtool fails these tests rather than skipping them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from services.common.http_auth import OPERATOR_TOKEN_FILE, operator_token
from services.common.settings import Settings
from tests.harness import REPO

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
# A metric as the services declare it: Counter("citywatch_...", ...), Gauge(...), ...
_DECLARED = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"(citywatch_[a-z0-9_]+)\"")
_USED = re.compile(r"\bcitywatch_[a-z0-9_]+\b")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install the Debian package `prometheus` (./citywatch does)"
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_config_and_its_rule_files_are_valid(tmp_path: Path) -> None:
    """promtool also opens the operator-token file the config names: a copy of the
    repository's layout with a state folder that holds one (a checkout has none until a
    service first runs)."""
    here = tmp_path / PROMETHEUS_DIR.relative_to(REPO)
    shutil.copytree(PROMETHEUS_DIR, here)
    operator_token(Settings(state_dir=tmp_path / ".citywatch"))
    done = promtool("check", "config", "prometheus.yml", cwd=here)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def test_alert_rules_fire_on_their_unit_test_series_and_only_there() -> None:
    done = promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_scrape_config_covers_every_service_port() -> None:
    targets = {
        name: [t for sc in job["static_configs"] for t in sc["targets"]]
        for name, job in _jobs().items()
    }
    assert targets == {
        "citywatch-ingest": ["127.0.0.1:8101"],
        "citywatch-processor": ["127.0.0.1:8102"],
        "citywatch-alerts": ["127.0.0.1:8103"],
        "citywatch-api": ["127.0.0.1:8104"],
    }


def test_operator_metrics_are_scraped_with_the_state_folders_operator_token() -> None:
    """The alerts service's and the API's /metrics answer 401 without the operator token
    (tests/test_api_fuzz.py checks that): their jobs send the default state folder's
    token file, the one the services create, as a bearer token."""
    default = Settings.model_fields["state_dir"].default / OPERATOR_TOKEN_FILE
    for name in ("citywatch-alerts", "citywatch-api"):
        auth = _jobs()[name]["authorization"]
        assert auth.get("type", "Bearer") == "Bearer", name
        assert (PROMETHEUS_DIR / auth["credentials_file"]).resolve() == default.resolve(), name


def test_every_metric_an_alert_rule_uses_is_exported_by_a_service() -> None:
    declared: set[str] = set()
    for path in (REPO / "services").rglob("*.py"):
        declared |= set(_DECLARED.findall(path.read_text()))
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {a["alert"] for a in alerts} == {
        "CityWatchIngestNotReady",
        "CityWatchRejectionRatioHigh",
        "CityWatchConsumerLagGrowing",
        "CityWatchDatabaseWriteErrors",
        "CityWatchNoDataFromArea",
        "CityWatchAlertsNoLeader",
    }
    for alert in alerts:
        used = set(_USED.findall(alert["expr"]))
        assert used, f"{alert['alert']} uses no CityWatch metric"
        assert used <= declared, f"{alert['alert']}: not exported: {sorted(used - declared)}"

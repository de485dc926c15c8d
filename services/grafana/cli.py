"""`citywatch grafana build | push`: the dashboards as files, and into a running Grafana."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from services.common.errors import ConfigError
from services.common.settings import Settings
from services.grafana.dashboards import DASHBOARD_DIR, write_dashboards
from services.grafana.push import push_dashboards

__all__ = ["add_parser", "cmd_grafana"]


def cmd_grafana(settings: Settings, args: argparse.Namespace) -> int:
    """Build the dashboard files, or push them to Grafana."""
    if args.action == "build":
        for path in write_dashboards(args.dir):
            print(f"wrote {path}")
        return 0
    if not args.url or not args.token:
        msg = "grafana push needs --url and --token (or CITYWATCH_GRAFANA_URL / _TOKEN)"
        raise ConfigError(msg)
    results = push_dashboards(args.url, args.token, args.folder, args.dir)
    created = sum(r.created for r in results)
    print(f"pushed {len(results)} dashboards ({created} created, {len(results) - created} updated)")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Wire `citywatch grafana ...` into the command line."""
    gp = sub.add_parser(
        "grafana",
        help="Grafana dashboards: build the JSON files, push them to a running Grafana",
        description="build: regenerate deploy/grafana/dashboards/*.json from the metric "
        "registry. push: upload them with the same uids (a new version each time) into a "
        "folder, created when missing. The token may come from CITYWATCH_GRAFANA_TOKEN, "
        "which keeps it out of the process list.",
    )
    gp.add_argument("action", choices=["build", "push"])
    gp.add_argument("--url", default=os.environ.get("CITYWATCH_GRAFANA_URL"), help="Grafana URL")
    gp.add_argument(
        "--token", default=os.environ.get("CITYWATCH_GRAFANA_TOKEN"), help="service account token"
    )
    gp.add_argument("--folder", default="CityWatch", help="dashboard folder title")
    gp.add_argument("--dir", type=Path, default=DASHBOARD_DIR, help="dashboard files")
    gp.set_defaults(fn=cmd_grafana)

"""`citywatch grafana build | push`: the dashboards as files, and into a running Grafana."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from services.common.errors import ConfigError
from services.common.settings import Settings
from services.grafana.dashboards import DASHBOARD_DIR, write_dashboards

__all__ = ["add_parser", "cmd_grafana"]


def cmd_grafana(settings: Settings, args: argparse.Namespace) -> int:
    """Build the dashboard files, or push them to Grafana."""
    if args.action == "build":
        for path in write_dashboards(args.dir):
            print(f"wrote {path}")
        return 0
    token = os.environ.get("CITYWATCH_GRAFANA_TOKEN")
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {exc}") from None
    if not args.url or not token:
        msg = "grafana push needs --url and a token (--token-file, or CITYWATCH_GRAFANA_TOKEN)"
        raise ConfigError(msg)
    from services.grafana.push import push_dashboards  # its HTTP client: only for a push

    results = push_dashboards(args.url, token, args.folder, args.dir)
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
        "folder, created when missing. The token comes from a file (--token-file) or "
        "CITYWATCH_GRAFANA_TOKEN, never from the command line, which every local user can "
        "read in the process list.",
    )
    gp.add_argument("action", choices=["build", "push"])
    gp.add_argument("--url", default=os.environ.get("CITYWATCH_GRAFANA_URL"), help="Grafana URL")
    gp.add_argument(
        "--token-file", type=Path, default=None, help="a file holding the service account token"
    )
    gp.add_argument("--folder", default="CityWatch", help="dashboard folder title")
    gp.add_argument("--dir", type=Path, default=DASHBOARD_DIR, help="dashboard files")
    gp.set_defaults(fn=cmd_grafana)

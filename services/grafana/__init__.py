"""Grafana as code: the operations centre's dashboards and `citywatch grafana build | push`.

- `dashboards`: the dashboards as Grafana JSON models, built from the metric registry and
  written to `deploy/grafana/dashboards/` (pure, except the two file functions);
- `push`: uploads those files to a running Grafana over its HTTP API (grafana-client);
- `cli`: the `citywatch grafana` command.

Grafana can also load the same files itself through the provisioning files in
`deploy/grafana/provisioning/`.

`push` (and its HTTP client) is imported on first use (PEP 562): every `citywatch` command,
the services included, builds its argument parser from `cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.grafana.dashboards import DASHBOARD_DIR, build_dashboards, load_dashboards

if TYPE_CHECKING:
    from services.grafana.push import PushResult, push_dashboards

__all__ = ["DASHBOARD_DIR", "PushResult", "build_dashboards", "load_dashboards", "push_dashboards"]


def __getattr__(name: str) -> Any:
    if name in ("PushResult", "push_dashboards"):
        from services.grafana import push

        return getattr(push, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Grafana as code: the operations centre's dashboards and `citywatch grafana build | push`.

- `dashboards`: the dashboards as Grafana JSON models, built from the metric registry and
  written to `deploy/grafana/dashboards/` (pure, except the two file functions);
- `push`: uploads those files to a running Grafana over its HTTP API (grafana-client);
- `cli`: the `citywatch grafana` command.

Grafana can also load the same files itself through the provisioning files in
`deploy/grafana/provisioning/`.
"""

from services.grafana.dashboards import DASHBOARD_DIR, build_dashboards, load_dashboards
from services.grafana.push import PushResult, push_dashboards

__all__ = ["DASHBOARD_DIR", "PushResult", "build_dashboards", "load_dashboards", "push_dashboards"]

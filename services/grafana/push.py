"""`citywatch grafana push`: upload the dashboards to a running Grafana over its HTTP API.

Idempotent by design: each dashboard keeps the `uid` its file gives it and is posted with
`overwrite: true`, so a second push of the same files updates the same dashboards (Grafana
gives them a new version, and keeps the old ones in the dashboard's history) instead of
creating copies. The folder is looked up by title and created only when it is missing.

It talks to Grafana through `grafana-client`, synchronously: a push is a short, one-off
command, not part of an asyncio service. Errors from Grafana or the network become
`UpstreamError` (or `ConfigError` for a refused token) at this edge.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaUnauthorizedError,
)

from services.common.errors import ConfigError, UpstreamError
from services.grafana.dashboards import DASHBOARD_DIR, load_dashboards

__all__ = ["PushResult", "push_dashboards"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What one dashboard upload did."""

    uid: str
    title: str
    version: int
    created: bool
    url: str


def _folder_uid(title: str) -> str:
    """A stable folder uid from its title ("CityWatch" -> "citywatch")."""
    return re.sub(r"[^a-z0-9-]+", "-", title.lower()).strip("-")[:40] or "citywatch"


def _call(what: str, fn: Callable[[], Any]) -> Any:
    """Run one grafana-client call; turn its errors into CityWatch's at this edge."""
    try:
        return fn()
    except GrafanaUnauthorizedError as exc:
        msg = f"Grafana refused the token while trying to {what}: check the token (a service "
        msg += "account token with the Editor role, or Admin to create the folder)"
        raise ConfigError(msg) from exc
    except GrafanaException as exc:
        raise UpstreamError("grafana", f"{what}: {exc.message}") from exc
    except niquests.exceptions.RequestException as exc:
        raise UpstreamError("grafana", f"{what}: {exc}") from exc


def _ensure_folder(api: GrafanaApi, title: str, say: Callable[[str], None]) -> str:
    """The uid of the folder called `title`, created when no such folder exists."""
    found = _call(
        f"search folder {title!r}",
        lambda: api.search.search_dashboards(query=title, type_="dash-folder"),  # type: ignore[no-untyped-call]
    )
    for hit in found or []:
        if hit.get("title") == title:
            uid = str(hit["uid"])
            say(f"folder {title!r} exists (uid {uid})")
            return uid
    uid = _folder_uid(title)
    made = _call(
        f"create folder {title!r}",
        lambda: api.folder.create_folder(title, uid=uid),  # type: ignore[no-untyped-call]
    )
    uid = str(made.get("uid", uid))
    say(f"folder {title!r} created (uid {uid})")
    log.info("grafana folder created", extra={"folder": title, "uid": uid})
    return uid


def _current_version(api: GrafanaApi, uid: str) -> int | None:
    """The version Grafana holds for `uid`, or None when it has no such dashboard."""

    def get() -> Any:
        try:
            return api.dashboard.get_dashboard(uid)  # type: ignore[no-untyped-call]
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise

    found = _call(f"get dashboard {uid}", get)
    return None if found is None else int(found["dashboard"].get("version", 0))


def push_dashboards(
    url: str,
    token: str,
    folder: str = "CityWatch",
    directory: Path = DASHBOARD_DIR,
    *,
    timeout_s: float = 10.0,
    say: Callable[[str], None] = print,
) -> list[PushResult]:
    """Upload every dashboard file in `directory` into `folder` of the Grafana at `url`.

    Args:
        url: Grafana's base URL, e.g. `http://127.0.0.1:3000`.
        token: a service account token (sent as `Authorization: Bearer ...`).
        folder: the folder title; created when missing.
        directory: where the dashboard JSON files are.
        timeout_s: per-request timeout.
        say: where the human-readable progress lines go.

    Returns:
        One `PushResult` per dashboard, in file-name order.
    """
    dashboards = list(load_dashboards(directory))
    if not dashboards:
        msg = f"no dashboard files (*.json) in {directory}"
        raise ConfigError(msg)
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    folder_uid = _ensure_folder(api, folder, say)
    results = []
    for path, dashboard in dashboards:
        uid, title = dashboard.get("uid"), dashboard.get("title")
        if not uid or not title:
            msg = f"{path}: a dashboard needs a uid and a title"
            raise ConfigError(msg)
        before = _current_version(api, uid)
        body = {
            # No id: Grafana matches on uid. Overwrite: the files are the source of truth.
            "dashboard": {**dashboard, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": f"citywatch grafana push ({path.name})",
        }
        saved = _call(f"save dashboard {uid}", partial(api.dashboard.update_dashboard, body))
        result = PushResult(
            uid=str(saved.get("uid", uid)),
            title=str(title),
            version=int(saved.get("version", 0)),
            created=before is None,
            url=str(saved.get("url", "")),
        )
        results.append(result)
        verb = "created" if result.created else f"updated from version {before}"
        say(f"dashboard {result.uid} {title!r} {verb} -> version {result.version} {result.url}")
        log.info(
            "grafana dashboard pushed",
            extra={"uid": result.uid, "version": result.version, "new": result.created},
        )
    return results

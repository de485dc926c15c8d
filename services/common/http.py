"""The one HTTP server every service runs: /metrics, /healthz, /readyz, plus its own routes.

`/healthz` says the process is alive (the event loop answers); `/readyz` says it can do
its work now (each upstream it needs is reachable), with the failing checks named so an
operator sees *why* a gateway is not ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.common.http_auth import Handler, OperatorAuth
from services.common.http_params import first_bad_text

log = logging.getLogger(__name__)

ReadyChecks = Callable[[], Mapping[str, bool]]


@web.middleware
async def refuse_control_characters(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A control character (NUL above all) in the path or a query parameter is a 400 that
    names it, whatever the route: no handler, and no database query, ever sees one."""
    bad = first_bad_text([("path", request.path), *request.query.items()])
    if bad is None:
        return await handler(request)
    return web.json_response(
        {"error": "bad_parameter", "parameter": bad.parameter, "detail": bad.detail}, status=400
    )


class HttpServer:
    """An aiohttp server as an async context manager, bound to `host:port`."""

    def __init__(
        self,
        *,
        service: str,
        host: str,
        port: int,
        ready_checks: ReadyChecks,
        routes: list[web.RouteDef] | None = None,
        operator: OperatorAuth | None = None,
    ) -> None:
        self._service = service
        self._host = host
        self._port = port
        self._ready_checks = ready_checks
        self._app = web.Application(middlewares=[refuse_control_characters])
        # With `operator`, /metrics is an operator route (counts of devices, alerts and
        # deliveries); /healthz and /readyz stay open for probes (orchestrators send none).
        guard: Callable[[Handler], Handler] = operator.require if operator else (lambda h: h)
        self._app.add_routes(
            [
                web.get("/metrics", guard(self._metrics)),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                *(routes or []),
            ]
        )
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        log.info("http listening", extra={"service": self._service, "port": self._port})
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"service": self._service, "alive": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = dict(self._ready_checks())
        ready = all(checks.values())
        return web.json_response(
            {"service": self._service, "ready": ready, "checks": checks},
            status=200 if ready else 503,
        )

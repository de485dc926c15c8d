"""Both HTTP APIs under schemathesis: each one's own OpenAPI document, fetched from the
running service, drives generated requests (valid and invalid) at every operation, and
every answer must keep the document's promises: no 5xx, only documented status codes and
media types, valid data accepted, invalid data refused with a 4xx.

Real processes on the shared stack (`citywatch api`, `citywatch alerts`), 50 examples per
operation from a fixed seed (hypothesis `derandomize`), no shrinking: a failure is
reported with the request that caused it (schemathesis prints a curl line) rather than
minimised, which keeps a run within a few minutes on a 2-core CI box.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from services.common.http_auth import operator_token
from services.common.settings import Settings
from tests.harness import Services

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EXAMPLES = 50
# Rules between parameters that no JSON Schema of one parameter can state, documented in
# the operations' descriptions (and `x-max-range-hours`): a range longer than the limit or
# reversed, a time outside datetime's years, an opaque cursor the API did not give out.
# Schema-valid data may get a 400 for these, naming one of these parameters, and for
# nothing else (schemathesis's own positive-data check, which knows none of them, is off).
# What schema-valid data may get besides a 2xx or 3xx (schemathesis's default list): no
# such alert or device, a token the ack does not know.
ACCEPTED = {*range(200, 400), 401, 403, 404, 409, 429}
RELATIONAL = {
    ("GET", "/readings"): {"from", "to", "cursor"},
    ("GET", "/open-data/hourly.csv"): {"from", "to"},
    ("GET", "/open-data/hourly.json"): {"from", "to"},
    ("GET", "/alerts"): {"since", "until", "cursor"},
}
# An SSE stream never ends, so a generated call to it would never return; its parameters
# are checked by tests/test_api.py (400s) and its stream by the live tests.
UNFUZZED = {("GET", "/stream")}


def _text_on_the_wire(value: Any) -> bool:
    if value is None or isinstance(value, int | float | bool):
        return False
    if not isinstance(value, str):
        return True  # an object: its keys go out as parameters the APIs refuse
    return value not in ("null", "true", "false") and re.fullmatch(r"-?[0-9.e+-]+", value) is None


def _negative_on_the_wire(params: dict[str, Any]) -> bool:
    """False for a "type" negation of a query parameter to a number or null: a query string
    holds only text, so `area=-4.1e-81` (or `rule_id=null`, or an empty value the client
    leaves out) is a valid id on the wire, not the number schemathesis meant (its ST201
    then reports a valid request as "invalid data accepted"). An extra parameter whose
    value is an empty list never reaches the wire either."""
    for value in params.values():
        values = value if isinstance(value, list) else [value]
        if not values or not all(_text_on_the_wire(v) for v in values):
            return False  # an empty list: `requests` sends no such parameter at all
    return True


def fuzz(base: str, headers: dict[str, str]) -> list[str]:
    """Every failure schemathesis finds in the service at `base`, one line each."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=headers, timeout=10)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in UNFUZZED:
            continue
        operations += 1

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the fixed seed: the same requests on every run
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=st.one_of(
                op.as_strategy(GenerationMode.POSITIVE),
                op.as_strategy(GenerationMode.NEGATIVE),
            )
        )
        def check(case: Any) -> None:
            # The request goes out through `requests` directly, not `case.call()`: that one
            # counts pooled connections through urllib3's pool internals, which the
            # urllib3-future package (niquests, from grafana-client) replaces in the venv.
            sent = case.as_transport_kwargs(base_url=base, headers=headers)
            if not case.meta.generation.mode.is_positive:
                assume(_negative_on_the_wire(sent.get("params") or {}))
            with requests.Session() as session:
                response = session.request(**sent, timeout=30, allow_redirects=False)
            case.validate_response(
                response,
                headers=headers,
                transport_kwargs=sent,
                # ignored_auth re-sends the request through schemathesis's transport (see
                # above); tests/test_operator_routes.py checks the 401s.
                excluded_checks=[positive_data_acceptance, ignored_auth],
            )
            if case.meta.generation.mode.is_positive and response.status_code not in ACCEPTED:
                url = response.request.url or ""
                if response.status_code == 400 and len(url) > 8190:
                    return  # the documented request-line limit of the HTTP server
                json_body = response.headers.get("Content-Type", "").startswith("application/json")
                body = response.json() if response.status_code == 400 and json_body else {}
                key = (case.method.upper(), case.operation.path)
                assert body.get("parameter") in RELATIONAL.get(key, ()), (
                    f"schema-valid request refused: {response.status_code} {response.text}"
                    f"\n{response.request.method} {url}"
                )

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - each operation's failure is reported
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert operations >= 5, f"only {operations} operations in {base}/openapi.json"
    return failures


@pytest.fixture(scope="module")
async def running(mod_services: Services) -> dict[str, str]:
    api, alerts = await mod_services.start("api", "alerts")
    return {"api": f"http://127.0.0.1:{api.port}", "alerts": f"http://127.0.0.1:{alerts.port}"}


@pytest.mark.parametrize("service", ["api", "alerts"])
async def test_schemathesis_finds_no_failure_in_either_api(running, service, migrated: Settings):
    headers = {"Authorization": f"Bearer {operator_token(migrated)}"}
    failures = await asyncio.to_thread(fuzz, running[service], headers)
    assert not failures, "\n\n".join(failures)

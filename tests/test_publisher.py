"""The simulator's publisher: each run's window and ack count are that run's own.

The bench publishes its phases through one publisher; its rates and its "published" figure
rest on `run` bounding the publishes in flight and returning only once the broker has
acknowledged what that run sent, on the real broker.
"""

from __future__ import annotations

import uuid
from typing import Any

from services.common.settings import Settings
from simulators import Fleet
from tests.conftest import simulator_publisher


def test_a_reused_publisher_keeps_its_window_and_counts_only_each_runs_own_acks(
    stack: Settings,
) -> None:
    fleet = Fleet(per_kind=2, prefix=f"pubtest{uuid.uuid4().hex[:6]}")
    window = 5
    with simulator_publisher(stack, max_inflight=window) as pub:
        client = pub._client  # observed, not replaced: every publish still reaches the broker
        publish = client.publish
        seen = {"sent": 0, "base": 0, "worst": 0}

        def counting_publish(*args: Any, **kwargs: Any) -> Any:
            in_flight = seen["sent"] - (pub.acked - seen["base"])
            seen["worst"] = max(seen["worst"], in_flight)
            seen["sent"] += 1
            return publish(*args, **kwargs)

        client.publish = counting_publish  # type: ignore[method-assign]
        for run in range(2):
            seen.update(sent=0, base=pub.acked)
            stats = pub.run(fleet.messages(), count=200)
            assert stats.sent == 200, f"run {run}"
            assert stats.acked == 200, f"run {run}: acked counts another run's acks"
            assert pub.acked == seen["base"] + 200, f"run {run} returned before its acks"
            assert seen["worst"] <= window, f"run {run}: {seen['worst']} in flight"

"""When and how a service refreshes its evaluator's drift verdicts from the database.

The drift check (drift.py) compares a device with its area's other devices, which no one
batch holds: both the processor (whose verdict is stored) and the alerts service (whose
verdict an alert acts on) run it on the same stored bucket means on the same schedule, so
the two agree (issue 14: one quality verdict). The judgement is pure (drift.judge); this
module is the I/O edge: one query, at most every `every_s` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from services.common import db
from services.quality.drift import drift_metrics, is_kind
from services.quality.drift import judge as judge_drift
from services.quality.qartod import QualityEvaluator

log = logging.getLogger(__name__)

__all__ = ["DriftRefresh"]


class DriftRefresh:
    """`await refresh.run(con)` before judging a batch: a drift check on the stored means
    before the first batch, then every `every_s` seconds; each series newly found drifting
    is logged."""

    def __init__(self, quality: QualityEvaluator, every_s: float) -> None:
        self.quality = quality
        self.every_s = every_s
        self.metrics = drift_metrics(quality.config)
        self._read_at: float | None = None  # loop time of the last check

    async def run(self, con: db.Conn) -> dict[tuple[str, str], str] | None:
        """The series found drifting (device, metric) -> reason, or None when not due."""
        loop_now = asyncio.get_running_loop().time()
        if not self.metrics or (
            self._read_at is not None and loop_now - self._read_at < self.every_s
        ):
            return None
        limits = self.quality.config.limits
        means, where = await db.drift_bucket_means(
            con, limits.drift_bucket_s, limits.drift_window_s, self.metrics
        )
        places = {d: (area, kind) for d, (area, kind) in where.items() if is_kind(kind)}
        verdict = judge_drift(means, places, self.quality.config)
        found = {k: v.reason for k, v in verdict.drifting.items()}
        for (device_id, metric), reason in found.items():
            if (device_id, metric) not in self.quality.drift:
                log.warning(
                    "drift suspected",
                    extra={"device_id": device_id, "metric": metric, "reason": reason},
                )
        self.quality.set_drift(found)
        self._read_at = loop_now
        return found

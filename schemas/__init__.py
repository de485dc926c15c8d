"""CityWatch's canonical models, metric registry and payload adapters (no I/O here)."""

from schemas.reading import Reading, RejectedRecord, Rejection, now_utc
from schemas.registry import KINDS, METRICS, Kind, MetricSpec, metric_spec

__all__ = [
    "KINDS",
    "METRICS",
    "Kind",
    "MetricSpec",
    "Reading",
    "RejectedRecord",
    "Rejection",
    "metric_spec",
    "now_utc",
]

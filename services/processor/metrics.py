"""Prometheus metrics of the processor."""

from prometheus_client import Counter, Gauge, Histogram

BATCHES = Counter("citywatch_processor_batches_total", "Batches committed to the database")
READINGS = Counter("citywatch_processor_readings_total", "Readings written (incl. redelivered)")
ROWS_STORED = Counter("citywatch_processor_rows_stored_total", "New rows in readings")
ROWS_DUPLICATE = Counter(
    "citywatch_processor_rows_duplicate_total", "Rows skipped as already stored (redeliveries)"
)
UNDECODABLE = Counter(
    "citywatch_processor_undecodable_total", "Kafka records that were not readings (forwarded)"
)
BATCH_SIZE = Histogram(
    "citywatch_processor_batch_size",
    "Readings per batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
LATENCY = Histogram(
    "citywatch_publish_to_stored_seconds",
    "From the gateway receiving a reading to its batch committing in the database",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
# Fine where issue 11's targets are (100 and 250 ms), coarse where only backlog lives.
_DEVICE_LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1)
_DEVICE_LATENCY_BUCKETS += (0.15, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
DEVICE_LATENCY = Histogram(
    "citywatch_device_to_stored_seconds",
    "From the reading's own time (the device stamps it as it publishes) to its batch"
    " committing; only meaningful for devices with a synchronised clock (the bench fleet)",
    buckets=_DEVICE_LATENCY_BUCKETS,
)
QUALITY_FLAGS = Counter(
    "citywatch_processor_quality_flags_total",
    "Rows stored, by metric and IOOS QARTOD flag (pass, not_evaluated, suspect, fail)",
    ["metric", "flag"],
)
QUALITY_REFLAGGED = Counter(
    "citywatch_processor_quality_reflagged_total",
    "Stored rows whose flag a later spike verdict made worse, by metric and new flag",
    ["metric", "flag"],
)
QUALITY_LATE = Counter(
    "citywatch_processor_quality_late_total",
    "Rows older than their series' newest value, judged by gross range alone",
)
QUALITY_SERIES = Gauge(
    "citywatch_processor_quality_series", "Series windows the quality evaluator holds in memory"
)
QUALITY_DRIFTING = Gauge(
    "citywatch_processor_quality_drifting",
    "Series the drift check last found drifting against their area (stored suspect)",
)
QUALITY_EVICTED = Counter(
    "citywatch_processor_quality_evicted_total",
    "Series windows evicted at the cap (warmed again from the database on next sight)",
)
QUALITY_WARMED = Counter(
    "citywatch_processor_quality_warmed_total", "Series windows loaded from the database"
)
READY = Gauge("citywatch_processor_ready", "1 when Kafka and the database are both reachable")
CONSUMER_LAG = Gauge(
    "citywatch_processor_consumer_lag",
    "Records in each assigned partition not yet consumed: highwater - position",
    ["topic", "partition"],
)
ROLLUP_BUCKETS = Counter(
    "citywatch_processor_rollup_buckets_total",
    "Minute buckets of readings_1m recomputed by the processor after a reflag to fail"
    " (plain PostgreSQL path; new rows are merged by the insert)",
)
AREA_LAST_READING = Gauge(
    "citywatch_area_last_reading_timestamp_seconds",
    "Newest reading time of any device in each area (from the device registry), Unix time",
    ["area"],
)
MAINTENANCE_RUNS = Counter(
    "citywatch_processor_maintenance_runs_total",
    "Retention runs the processor started, by outcome: done, skipped (another process was"
    " running it) or failed",
    ["outcome"],
)
MAINTENANCE_DROPPED = Counter(
    "citywatch_processor_maintenance_dropped_total",
    "Partitions or chunks past retention that the processor's retention runs dropped",
)

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
READY = Gauge("citywatch_processor_ready", "1 when Kafka and the database are both reachable")

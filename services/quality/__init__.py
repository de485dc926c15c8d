"""Data quality: one IOOS QARTOD verdict per value, for every service that judges readings.

The processor stores the verdict with each row; the alerts service acts on the same verdict
(same checks, same defaults file, windows warmed from `readings`). Both import this package
and neither imports the other. `qartod` is pure; `load_quality_config` reads the file.
"""

from services.quality.config_file import load_quality_config
from services.quality.qartod import (
    Evaluation,
    Flag,
    MetricQc,
    QualityConfig,
    QualityEvaluator,
    SeriesKey,
    worst,
)

__all__ = [
    "Evaluation",
    "Flag",
    "MetricQc",
    "QualityConfig",
    "QualityEvaluator",
    "SeriesKey",
    "load_quality_config",
    "worst",
]

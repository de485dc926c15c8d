"""Reading the QARTOD defaults file (`settings.quality_file`): the one I/O of quality."""

from __future__ import annotations

from pathlib import Path

from services.common.errors import ConfigError
from services.quality.qartod import QualityConfig

__all__ = ["load_quality_config"]


def load_quality_config(path: Path) -> QualityConfig:
    """Read and validate the QARTOD defaults file; a bad file stops the service at start."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the quality defaults file {path}: {exc}") from exc
    return QualityConfig.from_yaml(text, source=str(path))

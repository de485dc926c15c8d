"""Benchmarks: figures and ratios printed, never asserted (`citywatch bench ...`)."""

__all__: list[str] = []

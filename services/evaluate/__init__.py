"""`citywatch evaluate`: flags and alerts scored against the simulator's ground truth."""

from services.evaluate.runner import EvaluateOptions, run_evaluate

__all__ = ["EvaluateOptions", "run_evaluate"]

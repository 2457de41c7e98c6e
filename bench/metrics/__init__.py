"""Metric registry. A metric reads an :class:`EvalInput` (the model, the evaluation views,
memoised logits) and returns ``(split, metric, value)`` triples.

Each entry carries ``ideal`` (what value means "unlearned": ``match retrain``, ``0.5``, ``0``,
``1``) and ``cost`` (``cheap`` runs by default; ``expensive`` only when a suite names it).
"""

# the metrics register themselves on import
import bench.metrics.basic  # noqa: E402,F401
import bench.metrics.diagnostics  # noqa: E402,F401
import bench.metrics.mia  # noqa: E402,F401
import bench.metrics.pool  # noqa: E402,F401
from bench.metrics.core import METRICS, EvalInput, accuracy, evaluate, register_metric  # noqa: F401

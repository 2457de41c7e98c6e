"""unlearning-bench: a benchmark harness for machine unlearning on image classifiers.

The spine is one protocol (``bench.protocol.stages``): pretrain (cached) -> select a forget set ->
unlearn with a registered method -> evaluate -> write records. Importing this package does no
work: no downloads, no CUDA initialisation.
"""

__version__ = "0.1.0"

from bench import compat

compat.install()  # the former flat module paths, for plugins (bench.compat)

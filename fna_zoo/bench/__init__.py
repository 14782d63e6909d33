"""Latency benchmarks (`fna-bench`): a reusable timing core, backends, the machine record and the report.

Not imported by `import fna_zoo`. The timing core (`time_callable`, `time_interleaved`) has no dependency
beyond the standard library and numpy, so block-level latency tables can reuse it.
"""
from .timing import LatencyStats, cuda_sync, paired_ratio, stats_from_times, time_callable, time_interleaved

__all__ = ['LatencyStats', 'cuda_sync', 'paired_ratio', 'stats_from_times', 'time_callable', 'time_interleaved']

"""The timing core: warm-up, timed runs, percentiles; and interleaved timing of several callables.

`time_callable(fn, warmup, runs or min_time, sync)` times any zero-argument callable with
`time.perf_counter`; `sync` (e.g. `torch.cuda.synchronize`) is called before each clock read so
asynchronous devices are timed to completion. `time_interleaved` runs several callables in turn, one
iteration each, so background load hits all of them alike; `paired_ratio` turns two such series into a
ratio with its spread. `time_stages` passes one input through a pipeline (pre-processing, network,
post-processing), timing each stage, for end-to-end latency with its breakdown.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ['LatencyStats', 'stats_from_times', 'time_callable', 'time_interleaved', 'paired_ratio', 'time_stages',
           'cuda_sync']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyStats:
    """Latency statistics of one timed callable.

    Args:
        p50: Median latency (ms).
        p90: 90th percentile (ms).
        p99: 99th percentile (ms).
        mean: Mean latency (ms).
        std: Standard deviation (ms, population).
        throughput: Items per second at the median latency (`batch / p50`).
        n: Number of timed runs.
    """

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    throughput: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def stats_from_times(times_s: Sequence[float], batch: int = 1) -> LatencyStats:
    """Statistics of per-run wall times.

    Args:
        times_s: Durations in seconds (at least one).
        batch: Items per call, for the throughput.
    """
    if len(times_s) == 0:
        raise ValueError('no timed runs; expected at least one')
    ms = np.asarray(times_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return LatencyStats(p50=p50, p90=p90, p99=p99, mean=float(ms.mean()), std=float(ms.std()),
                        throughput=float(batch * 1000.0 / p50) if p50 > 0 else float('inf'), n=int(ms.size))


def _check_budget(warmup: int, runs: int | None, min_time: float | None) -> None:
    if warmup < 0:
        raise ValueError(f'warm-up is {warmup}; expected 0 or more iterations')
    if runs is None and min_time is None:
        raise ValueError('neither runs nor min_time given; expected a run count or a time budget')
    if runs is not None and runs < 1:
        raise ValueError(f'runs is {runs}; expected a positive integer')
    if min_time is not None and min_time <= 0:
        raise ValueError(f'min_time is {min_time}; expected a positive number of seconds')


def time_callable(fn: Callable[[], Any], warmup: int = 3, runs: int | None = None, min_time: float | None = None,
                  sync: Callable[[], Any] | None = None, batch: int = 1, max_runs: int = 100_000) -> LatencyStats:
    """Time `fn()` after a warm-up.

    Args:
        fn: Zero-argument callable (one inference).
        warmup: Untimed calls first.
        runs: Timed calls. With `min_time` too, at least `runs` calls and at least `min_time` seconds.
        min_time: Time budget in seconds (keep calling until it is spent).
        sync: Called before each clock read (e.g. `torch.cuda.synchronize`); None on CPU.
        batch: Items per call, for the throughput.
        max_runs: Cap on timed calls under a time budget.
    """
    _check_budget(warmup, runs, min_time)
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        tic = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - tic)
        enough_runs = runs is None or len(times) >= runs
        enough_time = min_time is None or time.perf_counter() - start >= min_time
        if (enough_runs and enough_time) or len(times) >= max_runs:
            break
    return stats_from_times(times, batch)


def time_interleaved(fns: Sequence[Callable[[], Any]], warmup: int = 3, runs: int = 10,
                     sync: Callable[[], Any] | None = None) -> list[list[float]]:
    """Time several callables in alternation (A, B, A, B, ...), so load changes hit all of them alike.

    Args:
        fns: The callables.
        warmup: Untimed rounds first.
        runs: Timed rounds.
        sync: Called before each clock read (e.g. `torch.cuda.synchronize`).

    Returns:
        Per callable, its durations in seconds (one per round).
    """
    _check_budget(warmup, runs, None)
    times: list[list[float]] = [[] for _ in fns]
    for i in range(warmup + runs):
        for j, fn in enumerate(fns):
            tic = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            if i >= warmup:
                times[j].append(time.perf_counter() - tic)
    return times


def time_stages(stages: Sequence[Callable[[Any], Any]], x: Any, sync: Callable[[], Any] | None = None
                ) -> tuple[Any, list[float]]:
    """Pass `x` through `stages` in order (each takes the previous one's output), timing every stage.

    Args:
        stages: One-argument callables, e.g. pre-processing, network, post-processing.
        x: The first stage's input.
        sync: Called at the end of each stage, before the clock is read (e.g. `torch.cuda.synchronize`).

    Returns:
        The last stage's output and each stage's duration in seconds (their sum is the end-to-end time).
    """
    times: list[float] = []
    for stage in stages:
        tic = time.perf_counter()
        x = stage(x)
        if sync is not None:
            sync()
        times.append(time.perf_counter() - tic)
    return x, times


def paired_ratio(a_s: Sequence[float], b_s: Sequence[float]) -> dict[str, float]:
    """Ratio A / B of two interleaved series: the median of the per-round ratios and their spread.

    Args:
        a_s: Durations of A (seconds), round by round.
        b_s: Durations of B, same rounds.

    Returns:
        `ratio` (median of a_i / b_i), `p10`, `p90` and `iqr` of those ratios, and `ratio_of_medians`.
    """
    a, b = np.asarray(a_s, dtype=np.float64), np.asarray(b_s, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape:
        raise ValueError(f'series of {a.size} and {b.size} runs; expected two non-empty series of equal length')
    r = a / b
    p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(r, [10, 25, 50, 75, 90]))
    return {'ratio': p50, 'p10': p10, 'p90': p90, 'iqr': p75 - p25,
            'ratio_of_medians': float(np.median(a) / np.median(b)), 'n': int(r.size)}


def cuda_sync(device: Any) -> Callable[[], Any] | None:
    """`torch.cuda.synchronize` bound to `device` when it is a CUDA device, else None.

    Args:
        device: A torch device or its name.
    """
    import torch

    device = torch.device(device)
    if device.type != 'cuda':
        return None
    return lambda: torch.cuda.synchronize(device)

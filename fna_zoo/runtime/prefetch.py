"""Pre-processing one image ahead on a second thread, so that decoding overlaps the network.

A detector's deployment loop (`fna-predict` over a folder or a video, `fna-bench --ap`'s stream column) spends its
time in three stages: decode and resize the input, run the network, post-process. Run one after the other, the
pre-processing of a PNG tile is a fifth to a quarter of the end-to-end time on this project's 2-core CPU
(`benchmarks/results/<machine>/deploy/`). `prefetch` moves it off the critical path: while the network runs on
image i, a worker thread already decodes and resizes image i + 1 (the pattern of torch's DataLoader prefetching and of
video readers that decode on their own thread). The decoders (pyspng, simplejpeg, PIL) and OpenCV's resize release
the GIL for their work, and onnxruntime, OpenVINO and torch release it while they compute.

NOTE: the outputs and their order do not change, only when the work happens; an exception of the work on an item is
raised where that item would have been yielded, and stopping the iteration early (break, an error downstream) stops
the worker after the item it is on.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ['prefetch', 'PrefetchClock']

T = TypeVar('T')
R = TypeVar('R')


class PrefetchClock:
    """What a `prefetch` loop waited: the seconds its consumer spent blocked on the next item (the part of the work
    that did not overlap anything), and how many items it took."""

    def __init__(self) -> None:
        self.wait_s = 0.0
        self.items = 0


def prefetch(fn: Callable[[T], R], items: Iterable[T], ahead: int = 1, clock: PrefetchClock | None = None
             ) -> Iterator[R]:
    """`fn(item)` for each item, in order, computed up to `ahead` items ahead on one worker thread.

    The worker also draws the items (`next(items)`), so a generator that decodes (a video reader's frames) runs
    off the consumer's thread too.

    Args:
        fn: The work on one item (e.g. resize an image).
        items: The items (drawn lazily, `ahead` items ahead of the consumer).
        ahead: How many items to compute ahead (0: no thread, everything runs in the consumer's loop).
        clock: Where to add the time the consumer waited for each item (None: not timed).

    Yields:
        `fn(item)` per item, in the items' order.
    """
    if ahead < 0:
        raise ValueError(f'prefetch ahead is {ahead}; expected 0 (off) or more items')
    source = iter(items)

    def pull() -> R | object:
        item = next(source, _END)
        return _END if item is _END else fn(item)  # type: ignore[arg-type]

    pending: list[Future[R | object]] = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='fna-prefetch') if ahead else None
    try:
        if pool is None:  # one after the other, in the consumer's loop
            while (out := _timed(pull, clock)) is not _END:
                yield out  # type: ignore[misc]
            return
        pending += [pool.submit(pull) for _ in range(ahead)]
        while True:
            head = pending.pop(0)
            pending.append(pool.submit(pull))  # queued behind `head`: started as soon as `head` is done
            out = _timed(head.result, clock)
            if out is _END:
                return
            yield out  # type: ignore[misc]
    finally:
        for f in pending:  # NOTE: an early stop cancels what has not started; the worker ends its current item
            f.cancel()
        if pool is not None:
            pool.shutdown(wait=True)
        close = getattr(source, 'close', None)
        if close is not None:  # a generator's finally (a video's release) runs now, not at garbage collection
            close()


def _timed(fn: Callable[[], R], clock: PrefetchClock | None) -> R:
    tic = time.perf_counter()
    out = fn()
    if clock is not None and out is not _END:
        clock.wait_s += time.perf_counter() - tic
        clock.items += 1
    return out


_END: object = object()

"""The benchmark grid (models x backends x batch sizes) and the comparison mode, with CSV / JSON output."""
from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .backends import Grid, ModelSource, arch_id, resolve_model
from .machine import machine_info
from .timing import paired_ratio, stats_from_times, time_callable, time_interleaved

__all__ = ['FIELDS', 'run_grid', 'compare', 'write_results', 'format_table']

_logger = logging.getLogger(__name__)

FIELDS = ['model', 'arch_id', 'what', 'backend', 'precision', 'device', 'batch', 'input_h', 'input_w',
          'p50_ms', 'p90_ms', 'p99_ms', 'mean_ms', 'std_ms', 'throughput_ips', 'n', 'warmup', 'status', 'note',
          'io_included', 'cpu_model', 'cores', 'threads', 'gpu', 'cuda', 'torch', 'onnxruntime', 'tensorrt',
          'python', 'loadavg_1m', 'timestamp']


def _row(src: ModelSource, what: str, backend: str, precision: str, device: str, batch: int,
         size: tuple[int, int], warmup: int, machine: dict[str, Any]) -> dict[str, Any]:
    row = {k: None for k in FIELDS}
    row.update(model=src.name, arch_id=arch_id(src), what=what, backend=backend, precision=precision,
               device=device, batch=batch, input_h=size[0], input_w=size[1], warmup=warmup, status='ok', note='',
               io_included='no (input already on the device)',
               timestamp=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
    row.update({k: v for k, v in machine.items() if k in FIELDS})
    return row


def _keeps_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Restore torch's intra-op thread count after `fn` (which may set it for its measurements)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


@_keeps_threads
def run_grid(models: Sequence[str], backends: Sequence[str], what: str = 'backbone', batches: Sequence[int] = (1,),
             sizes: Sequence[tuple[int, int]] = ((800, 1088),), warmup: int = 3, runs: int | None = 10,
             min_time: float | None = None, threads: int | None = None, device: str = 'cpu',
             detector: str = 'retinanet', progress: bool = True) -> list[dict[str, Any]]:
    """Time every (model, size, batch, backend) cell; a cell that cannot run is a 'skipped: reason' row.

    Args:
        models: Model arguments (see `resolve_model`).
        backends: Backend names (see `fna_zoo.bench.backends.BACKENDS`).
        what: 'backbone' or 'detector' (backbone + neck + head, no NMS).
        batches: Batch sizes.
        sizes: (H, W) input sizes.
        warmup: Untimed calls per cell.
        runs: Timed calls per cell.
        min_time: Or a time budget per cell (seconds).
        threads: Intra-op threads for torch and onnxruntime (default: torch's setting).
        device: 'cpu' or 'cuda'.
        detector: Detector built around a backbone for `what='detector'`.
        progress: Show a tqdm bar over the grid.
    """
    from tqdm import tqdm

    if what not in ('backbone', 'detector'):
        raise ValueError(f"--what {what!r} is unknown; expected 'backbone' or 'detector'")
    srcs = [resolve_model(m) for m in models]  # fail on a bad name before any heavy work
    if threads:
        torch.set_num_threads(threads)
    machine = machine_info(threads)
    cells = [(s, size, b, be) for s in srcs for size in sizes for b in batches for be in backends]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix='fna-bench-') as tmp:
        grid = Grid(tmp, threads, device, detector)
        bar = tqdm(cells, desc='fna-bench', unit='cell', disable=not progress or None, leave=False)
        for src, size, batch, backend in bar:
            bar.set_postfix_str(f'{src.name} {backend} b{batch} {size[0]}x{size[1]}', refresh=False)
            r = grid.build(src, backend, what, batch, tuple(size))
            real = r.extra.get('input_size', size)
            row = _row(src, what, backend, r.precision, device, batch, real, warmup, machine)
            row['note'] = r.note
            if 'io_included' in r.extra:
                row['io_included'] = r.extra['io_included']
            if r.skip:
                row['status'] = f'skipped: {r.skip}'
                _logger.info('%s %s: %s', src.name, backend, row['status'])
            else:
                st = time_callable(r.fn, warmup, runs, min_time, sync=r.sync, batch=batch)
                row.update(p50_ms=st.p50, p90_ms=st.p90, p99_ms=st.p99, mean_ms=st.mean, std_ms=st.std,
                           throughput_ips=st.throughput, n=st.n)
            rows.append(row)
        bar.close()
    return rows


@_keeps_threads
def compare(a: tuple[str, str], b: tuple[str, str], what: str = 'backbone', batch: int = 1,
            size: tuple[int, int] = (800, 1088), warmup: int = 3, runs: int = 10, threads: int | None = None,
            device: str = 'cpu', detector: str = 'retinanet') -> dict[str, Any]:
    """Time two (model, backend) pairs interleaved, round by round, and return their ratio A / B.

    Args:
        a: (model, backend) of A.
        b: (model, backend) of B.
        what: 'backbone' or 'detector'.
        batch: Batch size.
        size: (H, W).
        warmup: Untimed rounds.
        runs: Timed rounds.
        threads: Intra-op threads.
        device: 'cpu' or 'cuda'.
        detector: Detector around a backbone for `what='detector'`.

    Returns:
        `ratio`, `p10`, `p90`, `iqr`, `ratio_of_medians`, `n` (see `paired_ratio`), and `a` / `b` rows.
    """
    srcs = [resolve_model(a[0]), resolve_model(b[0])]
    if threads:
        torch.set_num_threads(threads)
    machine = machine_info(threads)
    with tempfile.TemporaryDirectory(prefix='fna-bench-') as tmp:
        grid = Grid(tmp, threads, device, detector)
        rs = [grid.build(s, be, what, batch, tuple(size)) for s, be in zip(srcs, (a[1], b[1]))]
        for (m, be), r in zip((a, b), rs):
            if r.skip:
                raise ValueError(f'{m} on {be} cannot run here ({r.skip}); expected a runnable model and backend')
        sync = rs[0].sync or rs[1].sync
        ta, tb = time_interleaved([rs[0].fn, rs[1].fn], warmup, runs, sync=sync)
    out = paired_ratio(ta, tb)
    for key, src, (m, be), r, t in (('a', srcs[0], a, rs[0], ta), ('b', srcs[1], b, rs[1], tb)):
        row = _row(src, what, be, r.precision, device, batch, tuple(size), warmup, machine)
        st = stats_from_times(t, batch)
        row.update(p50_ms=st.p50, p90_ms=st.p90, p99_ms=st.p99, mean_ms=st.mean, std_ms=st.std,
                   throughput_ips=st.throughput, n=st.n, note=r.note or 'interleaved')
        out[key] = row
    return out


def _atomic_write(path: Path, text: str) -> None:
    from ..fileio import atomic_write_text

    atomic_write_text(path, text)


def write_results(rows: Sequence[dict[str, Any]], outdir: str | os.PathLike, stem: str = 'results') -> list[Path]:
    """Write `<stem>.csv` and `<stem>.json` (atomically) in `outdir`.

    Args:
        rows: Result rows.
        outdir: Output folder (created).
        stem: File name stem.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise NotADirectoryError(f'--output {str(outdir)!r} is a file; expected a folder')
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction='ignore', lineterminator='\n')
    w.writeheader()
    for r in rows:
        w.writerow({k: ('' if r.get(k) is None else (f'{r[k]:.4f}' if isinstance(r[k], float) else r[k]))
                    for k in FIELDS})
    paths = [outdir / f'{stem}.csv', outdir / f'{stem}.json']
    _atomic_write(paths[0], buf.getvalue())
    _atomic_write(paths[1], json.dumps({'rows': list(rows)}, indent=1) + '\n')
    return paths


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width console table of result rows."""
    cols = [('model', 'model'), ('what', 'what'), ('backend', 'backend'), ('precision', 'prec'), ('batch', 'batch'),
            ('input', 'input'), ('p50_ms', 'p50 ms'), ('p90_ms', 'p90 ms'), ('p99_ms', 'p99 ms'),
            ('mean_ms', 'mean ms'), ('std_ms', 'std'), ('throughput_ips', 'img/s'), ('n', 'n'), ('status', 'status')]
    body = []
    for r in rows:
        cells = []
        for key, _ in cols:
            v = f"{r['input_h']}x{r['input_w']}" if key == 'input' else r.get(key)
            cells.append('-' if v is None else (f'{v:.1f}' if isinstance(v, float) else str(v)))
        body.append(cells)
    head = [h for _, h in cols]
    widths = [max(len(head[i]), *(len(c[i]) for c in body)) if body else len(head[i]) for i in range(len(cols))]
    line = lambda cells: '  '.join(c.ljust(w) if i in (0, 1, 2, 3, 5, 13) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return '\n'.join([line(head), '  '.join('-' * w for w in widths)] + [line(c) for c in body])

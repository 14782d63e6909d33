"""The benchmark grid (models x runtimes x batch sizes) and the comparison mode, with CSV / JSON output.

Every row records the runtime's canonical name (`fna_zoo.runtime.names`), its device and precision, the
settings of the runtime that change timings (`runtime_options`, its plugin's `options`: for onnxruntime the one
session recipe's `session_record`, for OpenVINO its compile properties; the same dict a latency table records)
and the machine (`fna_zoo.runtime.machine`, with the version of every registered runtime's package as a column).
"""
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

from ..fileio import atomic_write_text, portable_data, portable_path
from ..runtime.machine import machine_info
from ..runtime.names import canonical_runtime
from ..runtime.registry import runtime_packages
from ..runtime.runners import Runner, time_runner
from ..runtime.timing import paired_ratio, stats_from_times, time_interleaved
from ..specs import ModelSpec, arch_id, resolve_model
from .backends import Grid, canonical_what

__all__ = ['FIELDS', 'PATH_FIELDS', 'run_grid', 'compare', 'portable_row', 'write_results', 'format_table']

_logger = logging.getLogger(__name__)

# NOTE: results written before the runtime layer have a `backend` column holding the old names (`eager`,
# `ort`, ...) and no `runtime_options`; `fna_zoo.bench.report.row_runtime` reads both.
FIELDS = ['model', 'arch_id', 'what', 'runtime', 'precision', 'device', 'batch', 'input_h', 'input_w',
          'p50_ms', 'p90_ms', 'p99_ms', 'mean_ms', 'std_ms', 'throughput_ips', 'n', 'warmup', 'status', 'note',
          'io_included', 'runtime_options', 'cpu_model', 'cpu_isa', 'cores', 'threads', 'gpu', 'cuda',
          *runtime_packages(), 'python', 'loadavg_1m', 'timestamp']
# the row fields that name one file (a model argument may be a name instead: kept as it is), written portably
PATH_FIELDS = ('model', 'file')


def _row(src: ModelSpec, what: str, runtime: str, r: Runner, device: str, batch: int, size: tuple[int, int],
         warmup: int, machine: dict[str, Any]) -> dict[str, Any]:
    row = {k: None for k in FIELDS}
    row.update(model=src.name, arch_id=arch_id(src), what=what, runtime=canonical_runtime(runtime, device)[0],
               precision=r.precision, device=device, batch=batch, input_h=size[0], input_w=size[1], warmup=warmup,
               status='ok', note=r.note, io_included=r.extra.get('io_included', 'no (input already on the device)'),
               runtime_options=dict(r.options), timestamp=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
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
def run_grid(models: Sequence[str], runtimes: Sequence[str], what: str = 'backbone', batches: Sequence[int] = (1,),
             sizes: Sequence[tuple[int, int]] = ((800, 1088),), warmup: int = 3, runs: int | None = 10,
             min_time: float | None = None, threads: int | None = None, device: str = 'cpu',
             detector: str = 'retinanet', progress: bool = True) -> list[dict[str, Any]]:
    """Time every (model, size, batch, runtime) cell; a cell that cannot run is a 'skipped: reason' row.

    Args:
        models: Model arguments (see `resolve_model`).
        runtimes: Runtime names or aliases (see `fna_zoo.runtime.names`).
        what: 'backbone' or 'raw' (backbone + neck + head, no NMS; 'detector' is an alias).
        batches: Batch sizes.
        sizes: (H, W) input sizes.
        warmup: Untimed calls per cell.
        runs: Timed calls per cell.
        min_time: Or a time budget per cell (seconds).
        threads: Intra-op threads for torch and onnxruntime (default: torch's setting).
        device: 'cpu' or 'cuda'.
        detector: Detector built around a backbone for `what='raw'`.
        progress: Show a tqdm bar over the grid.
    """
    from tqdm import tqdm

    what = canonical_what(what)
    runtimes = [canonical_runtime(r, device)[0] for r in runtimes]  # fail on a bad name before any heavy work
    srcs = [resolve_model(m) for m in models]
    if threads:
        torch.set_num_threads(threads)
    machine = machine_info(threads)
    cells = [(s, size, b, rt) for s in srcs for size in sizes for b in batches for rt in runtimes]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix='fna-bench-') as tmp:
        grid = Grid(tmp, threads, device, detector)
        bar = tqdm(cells, desc='fna-bench', unit='cell', disable=not progress or None, leave=False)
        for src, size, batch, runtime in bar:
            bar.set_postfix_str(f'{src.name} {runtime} b{batch} {size[0]}x{size[1]}', refresh=False)
            r = grid.build(src, runtime, what, batch, tuple(size))
            real = r.extra.get('input_size', size)
            row = _row(src, what, runtime, r, device, batch, real, warmup, machine)
            if r.skip:
                row['status'] = f'skipped: {r.skip}'
                _logger.info('%s %s: %s', src.name, runtime, row['status'])
            else:
                st = time_runner(r, warmup, runs, min_time, batch)
                row.update(p50_ms=st.p50, p90_ms=st.p90, p99_ms=st.p99, mean_ms=st.mean, std_ms=st.std,
                           throughput_ips=st.throughput, n=st.n)
            rows.append(row)
        bar.close()
    return rows


@_keeps_threads
def compare(a: tuple[str, str], b: tuple[str, str], what: str = 'backbone', batch: int = 1,
            size: tuple[int, int] = (800, 1088), warmup: int = 3, runs: int = 10, threads: int | None = None,
            device: str = 'cpu', detector: str = 'retinanet') -> dict[str, Any]:
    """Time two (model, runtime) pairs interleaved, round by round, and return their ratio A / B.

    Args:
        a: (model, runtime) of A (a runtime name or alias).
        b: (model, runtime) of B.
        what: 'backbone' or 'raw' ('detector' is an alias).
        batch: Batch size.
        size: (H, W).
        warmup: Untimed rounds.
        runs: Timed rounds.
        threads: Intra-op threads.
        device: 'cpu' or 'cuda'.
        detector: Detector around a backbone for `what='raw'`.

    Returns:
        `ratio`, `p10`, `p90`, `iqr`, `ratio_of_medians`, `n` (see `paired_ratio`), and `a` / `b` rows.
    """
    what = canonical_what(what)
    a, b = (a[0], canonical_runtime(a[1], device)[0]), (b[0], canonical_runtime(b[1], device)[0])
    srcs = [resolve_model(a[0]), resolve_model(b[0])]
    if threads:
        torch.set_num_threads(threads)
    machine = machine_info(threads)
    with tempfile.TemporaryDirectory(prefix='fna-bench-') as tmp:
        grid = Grid(tmp, threads, device, detector)
        rs = [grid.build(s, rt, what, batch, tuple(size)) for s, rt in zip(srcs, (a[1], b[1]))]
        for (m, rt), r in zip((a, b), rs):
            if r.skip:
                raise ValueError(f'{m} on {rt} cannot run here ({r.skip}); expected a runnable model and runtime')
        sync = rs[0].sync or rs[1].sync
        ta, tb = time_interleaved([rs[0].fn, rs[1].fn], warmup, runs, sync=sync)
    out = paired_ratio(ta, tb)
    for key, src, (m, rt), r, t in (('a', srcs[0], a, rs[0], ta), ('b', srcs[1], b, rs[1], tb)):
        row = _row(src, what, rt, r, device, batch, tuple(r.extra.get('input_size', size)), warmup, machine)
        st = stats_from_times(t, batch)
        row.update(p50_ms=st.p50, p90_ms=st.p90, p99_ms=st.p99, mean_ms=st.mean, std_ms=st.std,
                   throughput_ips=st.throughput, n=st.n, note=r.note or 'interleaved')
        out[key] = row
    return out


def _csv_value(v: Any) -> Any:
    """A row value as a CSV cell: '' for None, 4 decimals for floats, `key=value` pairs for a dict (options)."""
    if v is None:
        return ''
    if isinstance(v, float):
        return f'{v:.4f}'
    if isinstance(v, dict):
        return ' '.join(f'{k}={_csv_value(x)}' for k, x in v.items())
    return v


def portable_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as result files record it: its `PATH_FIELDS` as `portable_path`s (relative to the working folder, or
    a placeholder such as `<tmp>/.../runs/s/arch.yaml`), every other string with its paths made portable.

    Args:
        row: A result row (of the grid, of `compare` or of the deployment table).
    """
    return {k: portable_path(v) if k in PATH_FIELDS and isinstance(v, str) else portable_data(v)
            for k, v in row.items()}


def write_results(rows: Sequence[dict[str, Any]], outdir: str | os.PathLike, stem: str = 'results',
                  fields: Sequence[str] = FIELDS) -> list[Path]:
    """Write `<stem>.csv` and `<stem>.json` (atomically) in `outdir` (in the CSV, `runtime_options` is
    `key=value` pairs separated by spaces); paths in the rows are written portably (`portable_row`).

    Args:
        rows: Result rows.
        outdir: Output folder (created).
        stem: File name stem.
        fields: The CSV columns (the grid's `FIELDS`; the deployment table's `fna_zoo.bench.deploy.FIELDS`).
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise NotADirectoryError(f'--output {str(outdir)!r} is a file; expected a folder')
    rows = [portable_row(r) for r in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction='ignore', lineterminator='\n')
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in fields})
    paths = [outdir / f'{stem}.csv', outdir / f'{stem}.json']
    atomic_write_text(paths[0], buf.getvalue())
    atomic_write_text(paths[1], json.dumps({'rows': list(rows)}, indent=1) + '\n')
    return paths


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width console table of result rows."""
    cols = [('model', 'model'), ('what', 'what'), ('runtime', 'runtime'), ('precision', 'prec'), ('batch', 'batch'),
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

"""`fna-bench --ap`: the deployment table of a detector: AP and end-to-end latency per runtime and precision.

The same retrained detector runs through every cell of `fna_zoo.bench.pipelines.CELLS` (PyTorch eager fp32 / fp16,
onnxruntime fp32 / INT8 / fp16, TensorRT, OpenVINO fp32 / INT8: the registry's cells) over a COCO-format validation
set, one image at a time, and each row gets the COCO AP of its detections (`fna_zoo.engine.evaluate.coco_evaluate`),
the size of what it runs and its end-to-end latency per image split into pre-processing, network and post-processing
(`fna_zoo.runtime.timing.time_stages`; percentiles by `stats_from_times`). The cells run image by image in turn, so
load changes on a shared machine hit every cell alike. `LEGEND` says what each column includes.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..fileio import atomic_write_text
from ..runtime.machine import cpu_label, machine_info
from ..runtime.names import canonical_runtime
from ..runtime.prefetch import PrefetchClock, prefetch
from ..runtime.preprocess import InputSpec, set_threads
from ..runtime.registry import runtime_packages
from ..runtime.timing import paired_ratio, stats_from_times, time_interleaved, time_stages
from .pipelines import CELLS, Exports, Pipeline, build_pipeline, nms_fp16, nms_fp32, nms_int8
from .grid import _keeps_threads, portable_row, write_results

__all__ = ['FIELDS', 'LEGEND', 'run_deploy', 'deploy_summary', 'format_deploy', 'deploy_markdown', 'write_deploy']

_logger = logging.getLogger(__name__)

STAGES = ('pre', 'net', 'post')
FIELDS = ['model', 'format', 'runtime', 'precision', 'device', 'status', 'size_mb', 'AP', 'AP50', 'AP75',
          'pre_p50_ms', 'net_p50_ms', 'post_p50_ms', 'e2e_p50_ms', 'e2e_p90_ms', 'pre_p90_ms', 'net_p90_ms',
          'post_p90_ms', 'throughput_ips', 'pre_pct', 'stream_ms', 'stream_wait_pct', 'unsplit_p50_ms',
          'split_ratio', 'n', 'warmup', 'images', 'data',
          'input_h', 'input_w', 'file', 'note', 'runtime_options', 'cpu_model', 'cpu_isa', 'cores', 'threads', 'gpu',
          *runtime_packages(), 'python', 'loadavg_1m', 'timestamp']
LEGEND = [
    'size MB: the ONNX file (TensorRT: the engine; OpenVINO IR: its network, .xml + .bin); PyTorch: its weights '
    '(state_dict tensors) at that precision.',
    'AP, AP50: COCO bbox AP in % (the project\'s coco_evaluate) of all the detections the model keeps (score '
    'above its threshold, at most its K per image), over every image of the set.',
    'pre: read the image file (from the OS cache), decode it (pyspng / simplejpeg where installed, else PIL: the '
    'same pixels), resize it to the network input (letterbox or stretch; bilinear as the training transform, '
    'OpenCV where installed, else numpy) and scale it to [0, 1] (fna_zoo.runtime.preprocess.load_input, as '
    'fna-predict does); the mean/std normalisation is in net.',
    'net: normalisation, backbone, FPN and head; PyTorch: the eager modules in inference mode; onnxruntime: the '
    'network sub-graph of the exported file, its own session (the one session recipe); OpenVINO: the same '
    'sub-graph compiled by OpenVINO (its one recipe), or for OpenVINO IR its NNCF INT8 quantization from the '
    'INT8 calibration images.',
    'post: box decoding, top-k candidates, per-class NMS and top-K, boxes back to image pixels; PyTorch: '
    'DetectionPostprocess in eager PyTorch (torchvision nms); onnxruntime and OpenVINO: the in-graph NMS sub-graph '
    'of the same file (fp32 for every precision), cut at the head outputs and run as a second session '
    '(fna_zoo.bench.pipelines.split_nms_graph).',
    'e2e: pre + net + post of one image, batch 1; p50 / p90 of those sums over the runs (not the sum of the stage '
    'p50s); img/s = 1000 / e2e p50; pre %: pre over e2e, of their means over the runs.',
    'stream: the images one after another as fna-predict runs a folder, each decoded and resized one image ahead on '
    'a second thread while the network runs on the one before (fna_zoo.runtime.prefetch; one thread beyond the '
    'table\'s threads); ms per image (wall time of a pass over the images / images, median of the passes); '
    'wait %: the share of that time the network waited for its input (the pre-processing left on the critical '
    'path).',
]


def _data_name(data_path: str | os.PathLike | None, cfg: dict[str, Any], dataset: Any) -> str:
    data = cfg.get('data') or {}
    source = data_path or data.get('path') or 'the built-in synthetic set'
    return f'{source} ({dataset.ann_file.name}, {len(dataset)} images)'


def _given_files(onnx_files: Sequence[str | os.PathLike], target: Any) -> dict[Any, Path]:
    """User-given exports by the writer they replace: checked to be detector-with-NMS files of the right size."""
    from ..export.onnx_export import metadata_of
    from ..onnxgraph.precision import onnx_precision

    given: dict[Any, Path] = {}
    for f in onnx_files:
        meta = metadata_of(f)
        if meta.get('fna_zoo.what') != 'nms':
            raise ValueError(f"ONNX file {str(f)!r} is a {meta.get('fna_zoo.what', 'foreign')!r} export; expected "
                             'the detector exported with NMS (fna-export --checkpoint, --what nms)')
        size = tuple(target.input_size)
        if meta.get('input_size') != f'{size[0]},{size[1]}':
            raise ValueError(f"ONNX file {str(f)!r} takes {meta.get('input_size')} inputs; the checkpoint's detector "
                             f'runs at {size[0]},{size[1]} (expected a file exported from it, or --input-size)')
        if meta.get('num_classes') != target.metadata.get('num_classes'):
            raise ValueError(f"ONNX file {str(f)!r} has {meta.get('num_classes')} classes; expected the "
                             f"checkpoint's {target.metadata.get('num_classes')}")
        precision = onnx_precision(f)
        writer = {'int8': nms_int8, 'fp16': nms_fp16}.get(precision, nms_fp32)
        if writer in given:
            raise ValueError(f'ONNX files {str(given[writer])!r} and {str(f)!r} are both {precision}; expected at '
                             'most one of each')
        given[writer] = Path(f)
    return given


def _unsplit(p: Pipeline, x: np.ndarray, warmup: int, runs: int) -> tuple[float, float]:
    """(p50 ms of the ONNX file in one session, median ratio split / unsplit), timed interleaved on `x`."""
    net, post = p.stages[1], p.stages[2]
    split = lambda: post(net((x, (1.0, 1.0))))  # noqa: E731
    whole = lambda: p.unsplit(x)  # noqa: E731
    ta, tb = time_interleaved([split, whole], warmup, runs)
    return 1000.0 * float(np.median(tb)), paired_ratio(ta, tb)['ratio']


@_keeps_threads
def run_deploy(checkpoint: str | os.PathLike, data_path: str | os.PathLike | None = None,
               onnx_files: Sequence[str | os.PathLike] = (), runtimes: Sequence[str] | None = None,
               input_size: tuple[int, int] | None = None, warmup: int = 3, runs: int = 10, threads: int | None = None,
               device: str = 'cpu', workdir: str | os.PathLike | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """The deployment table of a retrained detector: one row per cell (`pipelines.CELLS`).

    Args:
        checkpoint: A retrain checkpoint (RetinaNet or SSDLite).
        data_path: A COCO tree (or asset:NAME) to evaluate on (default: the checkpoint's own data).
        onnx_files: fna-export files of the checkpoint (with NMS; fp32 and / or INT8) to use instead of exporting.
        runtimes: Only the cells of these runtimes (names or aliases; default: every cell).
        input_size: Network input (H, W) (default: the detector's export size).
        warmup: Untimed runs of every cell on the first image.
        runs: Timed runs per cell: every image once, then again from the first until there are this many.
        threads: Intra-op threads, torch and onnxruntime (default: torch's setting).
        device: 'cpu' or 'cuda[:N]'.
        workdir: Where the ONNX files are written (default: a temporary folder).
        progress: Show a progress bar.

    Returns:
        One row (dict of `FIELDS`) per cell, in `CELLS` order.
    """
    from ..checkpoint import read_checkpoint
    from ..engine.evaluate import coco_evaluate
    from ..export.onnx_export import detector_target
    from ..export.quantize import eval_dataset

    wanted = None if runtimes is None else {canonical_runtime(r, device)[0] for r in runtimes}
    cells = [c for c in CELLS if wanted is None or c.runtime in wanted]
    if not cells:
        names = ', '.join(dict.fromkeys(c.runtime for c in CELLS))
        raise ValueError(f'--runtimes {" ".join(runtimes or [])}: no cell of the table runs on them; expected some '
                         f'of {names}')
    ckpt = read_checkpoint(checkpoint)
    cfg = ckpt.config
    dataset = eval_dataset(cfg, data_path)  # NOTE: bad data fails before the detector is built
    if ckpt.num_classes and dataset.num_classes != int(ckpt.num_classes):
        raise ValueError(f'data {str(dataset.ann_file)!r} has {dataset.num_classes} categories; the detector has '
                         f'{ckpt.num_classes} classes (expected the data it was trained for)')
    target = detector_target(checkpoint, 'nms', input_size)
    given = _given_files(onnx_files, target)
    if threads:
        torch.set_num_threads(threads)
    set_threads(threads)  # the pre-processing's OpenCV resize, where installed
    machine = machine_info(threads)
    spec = InputSpec(tuple(target.input_size), target.metadata['resize'], tuple(json.loads(target.metadata['mean'])))
    images = [dataset.img_dir / dataset.images[i]['file_name'] for i in dataset.ids]
    for path in images:  # NOTE: into the OS file cache, so no cell pays for the first read from disk
        path.read_bytes()
    with tempfile.TemporaryDirectory(prefix='fna-bench-ap-') as tmp:
        exports = Exports(target, checkpoint, cfg, workdir or tmp, data_path, given)
        pipes = [build_pipeline(c, exports, spec, threads, device) for c in cells]
        live = [p for p in pipes if p.status == 'ok']
        times, found = _measure(live, dataset, images, warmup, max(runs, len(images)), progress)
        streams = _streams(live, images, -(-max(runs, len(images)) // len(images)))
        base = dict(model=str(checkpoint), device=device, warmup=warmup, images=len(images),
                    data=_data_name(data_path, cfg, dataset), input_h=spec.size[0], input_w=spec.size[1],
                    timestamp=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                    **{k: v for k, v in machine.items() if k in FIELDS})
        first = live[0].stages[0](images[0])[0] if live else None
        rows = []
        for p in pipes:
            row = {**{k: None for k in FIELDS}, **base, 'format': p.format, 'runtime': p.cell.runtime,
                   'precision': p.cell.precision, 'status': p.status, 'size_mb': p.size_mb, 'file': p.file,
                   'note': p.note}
            if p.status == 'ok':
                row.update(_latency(times[id(p)]))
                row.update(streams[id(p)])
                ap = coco_evaluate(dataset.ann_file, found[id(p)])
                row.update(AP=ap['AP'], AP50=ap['AP50'], AP75=ap['AP75'])
                row['runtime_options'] = dict(p.options) or None
                if p.unsplit is not None:
                    row['unsplit_p50_ms'], row['split_ratio'] = _unsplit(p, first, warmup, runs)
            rows.append(row)
    return rows


def _measure(live: Sequence[Pipeline], dataset: Any, images: Sequence[Path], warmup: int, n: int, progress: bool
             ) -> tuple[dict[int, list[list[float]]], dict[int, list[dict[str, Any]]]]:
    """Run every pipeline over the images (`n` runs each, after `warmup` on the first image), the cells taking
    turns image by image; returns per pipeline (by id) its stage times and the COCO results of the first pass."""
    from tqdm import tqdm

    from ..engine.evaluate import coco_results

    if not live:  # every cell skipped or failed: the table is their reasons
        return {}, {}
    for p in live:
        for _ in range(warmup):
            time_stages(p.stages, images[0], p.sync)
    times: dict[int, list[list[float]]] = {id(p): [] for p in live}
    found: dict[int, list[dict[str, Any]]] = {id(p): [] for p in live}
    for k in tqdm(range(n), desc='fna-bench --ap', unit='image', disable=not progress or None, leave=False):
        # NOTE: the cells take turns, starting one further each image: what runs before a cell (and what it leaves
        # in the caches) is the same for every cell over the runs
        for p in live[k % len(live):] + live[:k % len(live)]:
            (boxes, scores, labels), t = time_stages(p.stages, images[k % len(images)], p.sync)
            times[id(p)].append(t)
            if k < len(images):
                found[id(p)] += coco_results(dataset.ids[k], boxes, scores, labels, dataset.label_to_cat)
    return times, found


def _streams(live: Sequence[Pipeline], images: Sequence[Path], passes: int) -> dict[int, dict[str, float]]:
    """Per pipeline (by id): `stream_ms` and `stream_wait_pct` of `passes` passes over the images with the
    pre-processing one image ahead on a second thread (`fna_zoo.runtime.prefetch`), the cells taking turns pass by
    pass."""
    walls: dict[int, list[float]] = {id(p): [] for p in live}
    waits: dict[int, list[float]] = {id(p): [] for p in live}
    for k in range(max(passes, 3) if live else 0):
        for p in live[k % len(live):] + live[:k % len(live)]:
            pre, net, post = p.stages
            clock = PrefetchClock()
            tic = time.perf_counter()
            for x in prefetch(pre, images, 1, clock):
                post(net(x))
                if p.sync is not None:
                    p.sync()
            wall = time.perf_counter() - tic
            walls[id(p)].append(wall / len(images))
            waits[id(p)].append(clock.wait_s / wall)
    return {i: {'stream_ms': 1000.0 * float(np.median(walls[i])),
                'stream_wait_pct': 100.0 * float(np.median(waits[i]))} for i in walls}


def _latency(times: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Row fields of per-run stage times (seconds): p50 / p90 of each stage and of their per-run sums."""
    per = np.asarray(times, dtype=np.float64)  # [runs, stages]
    total = stats_from_times(per.sum(axis=1))
    out: dict[str, Any] = {'e2e_p50_ms': total.p50, 'e2e_p90_ms': total.p90, 'throughput_ips': total.throughput,
                           'n': total.n, 'pre_pct': 100.0 * float(per[:, 0].sum() / per.sum())}
    for i, stage in enumerate(STAGES):
        st = stats_from_times(per[:, i])
        out[f'{stage}_p50_ms'], out[f'{stage}_p90_ms'] = st.p50, st.p90
    return out


def _cells(row: dict[str, Any]) -> list[str]:
    def num(key: str, scale: float = 1.0, nd: int = 1) -> str:
        v = row.get(key)
        return '-' if v is None else f'{scale * v:.{nd}f}'

    return [row['format'], row['runtime'], row['precision'], num('size_mb', nd=2), num('AP', 100), num('AP50', 100),
            num('pre_p50_ms'), num('net_p50_ms'), num('post_p50_ms'), num('e2e_p50_ms'), num('e2e_p90_ms'),
            num('throughput_ips'), num('pre_pct', nd=0), num('stream_ms'), num('stream_wait_pct', nd=0),
            str(row['status'])]


HEAD = ['format', 'runtime', 'precision', 'size MB', 'AP', 'AP50', 'pre ms', 'net ms', 'post ms', 'e2e p50 ms',
        'e2e p90 ms', 'img/s', 'pre %', 'stream ms', 'wait %', 'status']


def _caption(rows: Sequence[dict[str, Any]]) -> str:
    r = rows[0]
    n = next((x['n'] for x in rows if x.get('n')), 0)
    return (f"{r['model']} on {r['data']}, input {r['input_h']}x{r['input_w']}, batch 1; {cpu_label(r)} "
            f"({r['cores']} cores, {r['threads']} threads, load {r['loadavg_1m']}), gpu {r['gpu']}; "
            f"{', '.join(f'{k} {r.get(k)}' for k in runtime_packages())}; latency (ms, p50 unless named) over {n} runs "
            f"per cell after {r['warmup']} warm-up runs, the cells run image by image in turn.")


def _label(row: dict[str, Any]) -> str:
    return f"{row['runtime']} {row['precision']} ({row['format']})"


def _split_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{_label(r)}: the unsplit file in one session p50 "
            f"{r['unsplit_p50_ms']:.1f} ms; "
            f"net + post as two sessions / one session = {r['split_ratio']:.3f} (median of interleaved runs on the "
            'first image)' for r in rows if r.get('unsplit_p50_ms') is not None] + \
        [f"{_label(r)}: {r['note']}" for r in rows if r.get('note')]


def _fp32(ok: Sequence[dict[str, Any]], runtime: str) -> dict[str, Any] | None:
    """The fp32 row of `runtime` among `ok` (None where it was skipped or not asked for)."""
    return next((r for r in ok if r['runtime'] == runtime and r['precision'] == 'fp32'), None)


def deploy_summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What a reader of the deployment table looks for first, from its rows: the fastest row and the fastest INT8
    row against eager PyTorch fp32 (end to end) and onnxruntime fp32 (network), the pre-processing's share of the
    fastest row image by image and streaming, and each INT8 row's AP against fp32.

    NOTE: the speed-ups are ratios of p50s. The cells of one table take turns image by image, so load changes hit
    them alike; two tables made at different times are not comparable this way.

    Args:
        rows: `run_deploy` rows (or those of a deploy.json).

    Returns:
        One sentence per line; none for what the table lacks (a row skipped or not asked for).
    """
    ok = [r for r in rows if r.get('status') == 'ok' and r.get('e2e_p50_ms')]
    if not ok:
        return []
    eager, ort = _fp32(ok, 'torch'), _fp32(ok, 'onnxruntime')

    def vs_eager(r: dict[str, Any]) -> str:
        return '' if eager is None or r is eager else \
            f", {eager['e2e_p50_ms'] / r['e2e_p50_ms']:.2f}x eager PyTorch fp32 ({eager['e2e_p50_ms']:.1f} ms)"

    best = min(ok, key=lambda r: r['e2e_p50_ms'])
    first = f"fastest end to end: {_label(best)} {best['e2e_p50_ms']:.1f} ms{vs_eager(best)}"
    if best.get('pre_pct') is not None:  # NOTE: tables before the column lack it
        first += f"; pre-processing {best['pre_pct']:.0f} % of it image by image ({best['pre_p50_ms']:.1f} ms)"
    if best.get('stream_wait_pct') is not None:
        first += (f", the network waiting {best['stream_wait_pct']:.0f} % of the time streaming "
                  f"({best['stream_ms']:.1f} ms per image)")
    out = [first]
    int8 = [r for r in ok if r['precision'] == 'int8']
    if int8:
        fast = min(int8, key=lambda r: r['e2e_p50_ms'])
        net = '' if ort is None else (f"; its network {fast['net_p50_ms']:.1f} ms, "
                                      f"{ort['net_p50_ms'] / fast['net_p50_ms']:.2f}x onnxruntime fp32's "
                                      f"({ort['net_p50_ms']:.1f} ms)")
        out.append(f"fastest INT8: {_label(fast)} {fast['e2e_p50_ms']:.1f} ms{vs_eager(fast)}{net}")
    # an INT8 row against its own runtime's fp32 row, else eager PyTorch's
    pairs = [(r, ref) for r in int8 if (ref := _fp32(ok, r['runtime']) or eager) is not None
             and r.get('AP') is not None and ref.get('AP') is not None]
    if pairs:
        out.append('INT8 AP against fp32: ' + '; '.join(
            f"{_label(r)} {100 * r['AP']:.2f} vs {100 * ref['AP']:.2f} ({ref['runtime']}; "
            f"{100 * (r['AP'] - ref['AP']):+.2f} points)" for r, ref in pairs))
    return out


def format_deploy(rows: Sequence[dict[str, Any]]) -> str:
    """The deployment table for a console: caption, fixed-width rows, its summary and what each column includes."""
    body = [_cells(r) for r in rows]
    widths = [max(len(HEAD[i]), *(len(c[i]) for c in body)) for i in range(len(HEAD))]
    left = (0, 1, 2, len(HEAD) - 1)
    line = lambda cells: '  '.join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [_caption(rows), line(HEAD), '  '.join('-' * w for w in widths)] + [line(c) for c in body]
    summary = deploy_summary(rows)
    out += [''] + summary if summary else []
    return '\n'.join(out + [''] + [f'* {s}' for s in LEGEND + _split_notes(rows)])


def deploy_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The deployment table in markdown, with its caption, summary and legend."""
    lines = ['# Deployment: AP and end-to-end latency per runtime and precision', '', _caption(rows), '',
             '| ' + ' | '.join(HEAD) + ' |', '|' + '---|' * len(HEAD)]
    lines += ['| ' + ' | '.join(_cells(r)) + ' |' for r in rows]
    summary = deploy_summary(rows)
    lines += ['', '## Summary', ''] + [f'- {s}' for s in summary] + ['', '## Columns and notes'] if summary else []
    return '\n'.join(lines + [''] + [f'- {s}' for s in LEGEND + _split_notes(rows)]) + '\n'


def write_deploy(rows: Sequence[dict[str, Any]], outdir: str | os.PathLike) -> list[Path]:
    """Write `deploy.md` (table, caption, summary, legend), `deploy.csv` and `deploy.json` (atomically) in
    `outdir`, their paths portable (`fna_zoo.bench.grid.portable_row`).

    Args:
        rows: `run_deploy` rows.
        outdir: Output folder (created).
    """
    md = Path(outdir) / 'deploy.md'
    paths = write_results(rows, outdir, 'deploy', FIELDS)
    atomic_write_text(md, deploy_markdown([portable_row(r) for r in rows]))
    return [md] + paths

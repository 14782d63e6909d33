"""The prepared GPU check: one run on a machine with one NVIDIA GPU, every result in one folder.

    bash benchmarks/gpu_check.sh                      # pip install --no-deps -e ., then this script (8 minutes max)
    python benchmarks/gpu_check.py [--out DIR] [--budget-s 420]
    python benchmarks/gpu_check.py --smoke            # tiny sizes, CPU or GPU, seconds (tests/test_gpu_check.py)

Needs PyTorch, torchvision and timm (onnx, onnxruntime and tensorrt only for the rows that use them), no
network and none of the fetched assets: every model is random-init, every input random (latency and step
time do not depend on the weights). In order, each row recorded as it finishes:

1. **eager**: latency of the four zoo backbones (at FNA's RetinaNet size 800x1088 and SSDLite size 320x320) and
   of the whole RetinaNet (800x1088) and SSDLite (320x320) detectors (normalisation, backbone, neck, head; no
   NMS, as `fna-bench --what raw`), batch 1 and 16, in fp32, fp16 and bf16, channels_last;
2. **search**: FNA's search steps at its RetinaNet settings (configs/fna_retinanet_search.yaml: 800x1088, one
   image per GPU, 80 classes; `benchmarks/search_step.py`): a weight step (one sampled path) and an
   architecture step (DARTS relaxation, every op), and the GPU-hours FNA's COCO search schedule (method.md 3.3:
   14 epochs over half of train2017, 8 GPUs x 1 image, architecture steps from epoch 8) would take at those
   step times, against the paper's 144 (6 GPU-days on TITAN Xp); then the same two steps under every precision
   setting (`train.amp` fp32 / bf16 / fp16 x `train.channels_last` off / on, interleaved;
   `search_step.compare_search_steps`): steps per second, the speed-up over fp32 and the COCO GPU-hours of each;
3. **table**: a `torch-cuda-fp16` latency table of that search space at 800x1088 (`fna_zoo.nas.latency`) and
   its MAPE on 10 random archs of the space (`benchmarks/latency_table_accuracy.py`);
4. **compile**: `torch.compile` (fp16, channels_last, static shapes) of the same models and batches;
5. **tensorrt**: strongly typed engines (fp16 from the fp16 ONNX export, fp32) where `tensorrt` imports;
6. **compile-fp32**: `torch.compile` in fp32, if time is left.

A row that fails is recorded with its error and the next one runs; a row that would not fit the time left
(`--budget-s`) is recorded as skipped, and a running row is stopped at the budget. After every row the folder
is rewritten atomically: `results.json` (rows, sections, machine and versions), `rows.csv`, `summary.md`,
and the latency table; `gpu_check.log` is everything the run prints (its warnings too), line by line.

Nothing written holds the machine's own paths (`fna_zoo.fileio.portable_text`): the results folder is `<out>`,
the interpreter `<python>`, the run's temp folder `<work>`, this checkout's files are relative to it, any other
absolute path is a placeholder and its last names.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import gc
import importlib
import io
import json
import math
import os
import platform
import signal
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

START = time.perf_counter()  # the budget counts from the interpreter's start (torch's import and CUDA's too)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not
sys.path.insert(0, str(HERE))  # search_step.py, latency_table_accuracy.py

import torch  # noqa: E402

BACKBONES = ['fna_retinanet_backbone', 'fna_ssdlite_backbone', 'mobilenetv2_100', 'efficientnet_b0']
# (detector, its backbone, FNA's input size)
DETECTORS = {'retinanet': ('fna_retinanet_backbone', (800, 1088)), 'ssdlite': ('fna_ssdlite_backbone', (320, 320))}
SEARCH_CONFIG = ROOT / 'configs' / 'fna_retinanet_search.yaml'
# FNA's COCO search (method.md 3.3 and 4.3): train2017 images, GPUs, the paper's search cost
COCO_TRAIN2017_IMAGES = 118287
FNA_SEARCH_GPUS = 8
FNA_PAPER_SEARCH_GPU_HOURS = 144.0  # 6 GPU-days (TITAN Xp), RetinaNet search
# the tiny search space of the smoke mode (tests/test_latency.py's)
SMOKE_SPACE = ['search.space.fixed_stages=5', 'search.space.layers=[3, 1]', 'search.space.first_ops=[k3_e3, k5_e6]',
               'search.space.ops=[k3_e3, k5_e6, skip]', 'search.space.width_mults=[0.5, 1.0]',
               'model.kwargs={min_size: 64, max_size: 64, head_width: 16}', 'search.objective.input_size=[32, 32]']
SECTIONS = ('eager', 'search', 'table', 'compile', 'tensorrt', 'compile-fp32')
LOG = 'gpu_check.log'
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
FIELDS = ['section', 'name', 'model', 'what', 'input', 'batch', 'dtype', 'memory_format', 'status', 'p50_ms', 'p90_ms',
          'mean_ms', 'std_ms', 'throughput_ips', 'n', 'compile_s', 'wall_s', 'note', 'error']


class RowTimeout(BaseException):  # NOTE: not Exception: broad handlers on a row's path must not swallow it
    """A row ran into the budget."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise `RowTimeout` in the main thread after `seconds` (SIGALRM; no-op where unavailable)."""
    if seconds <= 0 or not hasattr(signal, 'setitimer'):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise RowTimeout(f'stopped at the budget after {seconds:.0f} s')

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = ' '.join(str(e).split()) or type(e).__name__
    return f'{type(e).__name__}: {text}'[:limit]


def machine_record(device: str) -> dict[str, Any]:
    """The machine and every version a result depends on."""
    from fna_zoo.runtime.machine import machine_info, package_version

    info = machine_info()
    info.update({k: package_version(k) for k in ('torchvision', 'timm', 'onnx', 'numpy')})
    info['fna_zoo'] = str(Path(importlib.import_module('fna_zoo').__file__).parent)
    info['install'] = os.environ.get('GPU_CHECK_INSTALL', 'not through gpu_check.sh')
    info['device'] = device
    if device.startswith('cuda') and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), gpu_capability=f'{p.major}.{p.minor}',
                    gpu_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version(),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
        try:
            smi = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,clocks.max.sm',
                                  '--format=csv,noheader'], capture_output=True, text=True, timeout=20)
            info['nvidia_smi'] = smi.stdout.strip() or smi.stderr.strip()[:200]
        except (OSError, subprocess.SubprocessError) as e:
            info['nvidia_smi'] = _one_line(e)
    return info


def device_names(out: str | os.PathLike, work: str | os.PathLike | None = None) -> dict[str, str]:
    """The placeholders of this machine's own paths in what the check writes (`fna_zoo.fileio.portable_text`).

    Args:
        out: The results folder (`<out>`).
        work: The run's temp folder (`<work>`), if made yet.
    """
    names = {'<out>': os.path.abspath(out), '<python>': sys.executable}
    if work is not None:
        names['<work>'] = os.path.abspath(work)
    return names


# NOTE: the copy of the log runs in its own process, which ignores SIGINT (`timeout --signal=INT` signals the whole
# process group) and ends when every writer is gone: the check, and any process it started (inductor's workers)
_TEE = r"""
import importlib.util, json, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
spec = importlib.util.spec_from_file_location('_fna_zoo_fileio', sys.argv[1])
fileio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fileio)
root, names = sys.argv[3], json.loads(sys.argv[4])
with open(sys.argv[2], 'w', encoding='utf-8') as log:
    for raw in sys.stdin.buffer:
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        log.write(fileio.portable_text(raw.decode('utf-8', 'replace'), root, names))
        log.flush()
"""


@contextlib.contextmanager
def logged(path: Path, names: dict[str, str]) -> Iterator[None]:
    """Copy all this process (and what it starts) writes to stdout and stderr to the console as it is and, its
    paths made portable, to `path`.

    NOTE: the file descriptors 1 and 2 are copied, not `sys.stdout`: torch's warnings (dynamo's recompile limit),
    C code and child processes write there too. A child process still holding them when the block ends is left to
    finish its copy.

    Args:
        path: The log file (its folder is made).
        names: Placeholder -> path (`device_names`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tee = subprocess.Popen([sys.executable, '-c', _TEE, str(ROOT / 'fna_zoo' / 'fileio.py'), str(path), str(ROOT),
                            json.dumps(names)], stdin=subprocess.PIPE)
    assert tee.stdin is not None
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(tee.stdin.fileno(), 1)
    os.dup2(tee.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        tee.stdin.close()
        try:
            tee.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Check:
    """The run: rows, sections, the budget, and the results folder (rewritten after every row)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.t0 = START
        self.rows: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}
        self.device = args.device
        self.smoke = args.smoke
        self.work = Path(tempfile.mkdtemp(prefix='fna_gpu_check_'))
        self.names = device_names(self.out, self.work)
        self.started = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        self.machine = machine_record(self.device)
        self._modules: dict[tuple, Any] = {}
        self._onnx: dict[tuple, Any] = {}
        self.compile_estimate = 5.0 if self.smoke else 60.0

    # ------------------------------------------------------------------------------------------- bookkeeping
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.args.budget_s - self.elapsed()

    def log(self, text: str) -> None:
        print(f'[{self.elapsed():6.1f}s] {text}', flush=True)

    def row(self, section: str, name: str, fn: Callable[[], dict[str, Any]], estimate_s: float,
            **fields: Any) -> dict[str, Any]:
        """Run one row under the budget; its failure is recorded, never raised."""
        row = {k: None for k in FIELDS}
        row.update(section=section, name=name, **fields)
        tic = time.perf_counter()
        if self.left() < estimate_s:
            row['status'] = f'skipped: budget ({self.left():.0f} s left, about {estimate_s:.0f} s needed)'
        else:
            try:
                with _deadline(self.left()):
                    row.update(fn())
                row['status'] = row.get('status') or 'ok'
            except RowTimeout as e:
                row['status'], row['error'] = 'failed: budget', str(e)
            except Exception as e:  # noqa: BLE001  (one failing row must not lose the others)
                row['status'] = 'failed'
                row['error'] = _one_line(e)
                row['traceback'] = traceback.format_exc(limit=-4)[-1500:]
            finally:
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        row['wall_s'] = round(time.perf_counter() - tic, 2)
        self.rows.append(row)
        p50 = f"{row['p50_ms']:.3f} ms" if isinstance(row.get('p50_ms'), float) else ''
        self.log(f"{section:<12} {name:<58} {row['status'][:60]:<8} {p50} {row.get('error') or ''}"[:220])
        self.write()
        return row

    def write(self) -> None:
        """results.json, rows.csv and summary.md, atomically, with no path of this machine in them."""
        from fna_zoo.fileio import atomic_write_text, portable_data

        data = {'check': 'gpu_check', 'smoke': self.smoke, 'started': self.started, 'device': self.device,
                'budget_s': self.args.budget_s, 'wall_s': round(self.elapsed(), 1),
                'argv': sys.argv[1:], 'machine': self.machine, 'sections': self.sections, 'rows': self.rows}
        data = portable_data(data, ROOT, self.names)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction='ignore', lineterminator='\n')
        w.writeheader()
        for r in data['rows']:
            w.writerow({k: ('' if r.get(k) is None else (f'{r[k]:.4f}' if isinstance(r[k], float) else r[k]))
                        for k in FIELDS})
        atomic_write_text(self.out / 'results.json', json.dumps(data, indent=1, default=str) + '\n')
        atomic_write_text(self.out / 'rows.csv', buf.getvalue())
        atomic_write_text(self.out / 'summary.md', summary_markdown(data))

    # ------------------------------------------------------------------------------------------- the models
    def sizes(self) -> list[tuple[int, int]]:
        return [(32, 32)] if self.smoke else [(800, 1088), (320, 320)]

    def batches(self) -> list[int]:
        return ([1, 2] if self.device.startswith('cuda') else [1]) if self.smoke else [1, 16]

    def models(self) -> list[tuple[str, str, str, tuple[int, int]]]:
        """(label, model, what, size) of every latency model, in order of priority."""
        out = []
        sizes = self.sizes()
        for b in self.args.models:
            out.append((b, b, 'backbone', sizes[0]))
        for d in self.args.detectors:
            backbone, size = DETECTORS.get(d, ('fna_retinanet_backbone', (800, 1088)))
            out.append((f'{d}({backbone})', d, 'raw', (64, 64) if self.smoke else size))
        for b in self.args.models:
            out += [(b, b, 'backbone', s) for s in sizes[1:]]
        return out

    def module(self, model: str, what: str, size: tuple[int, int]) -> Any:
        """The eval-mode fp32 module (CPU) of a backbone or a detector without NMS (`fna_zoo.bench.backends.Grid`)."""
        key = (model, what, size)
        if key not in self._modules:
            from fna_zoo.bench.backends import Grid
            from fna_zoo.specs import resolve_model

            torch.manual_seed(0)
            if what == 'raw':
                if model not in DETECTORS:
                    raise ValueError(f'detector {model!r} is unknown; expected one of {", ".join(DETECTORS)}')
                grid = Grid(self.work, device='cpu', detector=model)
                self._modules[key] = grid.target(resolve_model(DETECTORS[model][0]), 'raw', size)
            else:
                self._modules[key] = Grid(self.work, device='cpu').target(resolve_model(model), 'backbone', size)
        return self._modules[key]

    def _timing(self, fn: Callable[[], Any], batch: int) -> dict[str, Any]:
        from fna_zoo.runtime.timing import cuda_sync, time_callable

        runs, min_time, warmup = (2, None, 1) if self.smoke else (20, 0.3, 10)
        st = time_callable(fn, warmup=warmup, runs=runs, min_time=min_time, sync=cuda_sync(self.device), batch=batch)
        return {'p50_ms': st.p50, 'p90_ms': st.p90, 'mean_ms': st.mean, 'std_ms': st.std,
                'throughput_ips': st.throughput, 'n': st.n}

    def _prepared(self, model: str, what: str, size: tuple[int, int], batch: int, dtype: str
                  ) -> tuple[torch.nn.Module, torch.Tensor]:
        target = self.module(model, what, size)
        m = copy.deepcopy(target.module).to(device=self.device, dtype=DTYPES[dtype]).eval()
        m = m.to(memory_format=torch.channels_last)
        x = torch.rand(batch, 3, *size, device=self.device, dtype=DTYPES[dtype])
        return m, x.contiguous(memory_format=torch.channels_last)

    def eager(self, model: str, what: str, size: tuple[int, int], batch: int, dtype: str) -> dict[str, Any]:
        if dtype == 'fp16' and not self.device.startswith('cuda'):
            return {'status': 'skipped: fp16 on the CPU (emulated: seconds per call, not a GPU measurement)'}
        m, x = self._prepared(model, what, size, batch, dtype)

        def run() -> Any:
            with torch.inference_mode():
                return m(x)

        return self._timing(run, batch)

    def compiled(self, model: str, what: str, size: tuple[int, int], batch: int, dtype: str) -> dict[str, Any]:
        """torch.compile (static shapes) of the channels_last module; the first call's time is `compile_s`."""
        from torch._dynamo.utils import counters

        m, x = self._prepared(model, what, size, batch, dtype)
        backend = 'eager' if self.smoke and self.device == 'cpu' else 'inductor'
        # NOTE: every wrapper shares one forward code object, and dynamo allows 8 graphs per code object before it
        # runs the rest eager with only a warning (the first H200 run timed eager as "compile" from its 9th row):
        # a fresh dynamo per row, and a row that compiled no graph fails instead of timing eager
        torch._dynamo.reset()
        fn = torch.compile(m, dynamic=False, backend=backend)
        graphs = counters['stats']['unique_graphs']
        tic = time.perf_counter()
        with torch.inference_mode():
            fn(x)
        if self.device.startswith('cuda'):
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - tic
        if counters['stats']['unique_graphs'] == graphs:
            raise RuntimeError('torch.compile compiled no graph (dynamo fell back to eager); not a compile timing')
        self.compile_estimate = max(self.compile_estimate * 0.5, compile_s)

        def run() -> Any:
            with torch.inference_mode():
                return fn(x)

        return {**self._timing(run, batch), 'compile_s': round(compile_s, 2),
                'note': f'torch.compile(dynamic=False, backend={backend!r})'}

    def tensorrt(self, model: str, what: str, size: tuple[int, int], batch: int, precision: str) -> dict[str, Any]:
        """A strongly typed engine (`fna_zoo.runtime.runners.tensorrt_runner`) of the parity-gated ONNX export
        (fp16: the fp16 export of `fna_zoo.export.fp16.export_fp16`, gated against PyTorch too)."""
        from fna_zoo.export.fp16 import export_fp16
        from fna_zoo.export.onnx_export import export_with_gate
        from fna_zoo.runtime.runners import tensorrt_runner, time_runner

        target = self.module(model, what, size)
        key = (model, what, size, precision)
        stem = f"{model}_{what}_{size[0]}x{size[1]}"
        if key not in self._onnx:
            fp32 = self._onnx.get((model, what, size, 'fp32'))
            if fp32 is None:
                fp32, reports = export_with_gate(target, self.work / f'{stem}.onnx', check_batches=[1])
                if fp32 is None:
                    raise RuntimeError(f'ONNX export failed its parity gate: {reports[0][1].summary()}')
                self._onnx[(model, what, size, 'fp32')] = fp32
            if precision == 'fp16':
                res = export_fp16(target, fp32, check_batches=[1])
                if not res.passed:
                    raise RuntimeError(f'fp16 export failed its gate: {res.reports[0][1].summary()}')
                self._onnx[key] = res.path
        path = self._onnx[key]
        x = torch.rand(batch, 3, *size, device=self.device)
        runner = tensorrt_runner(path, [x], self.work / f'{stem}_{precision}_b{batch}.engine', precision,
                                 timing_cache=self.work / 'trt.timing.cache')
        runs, min_time, warmup = (2, None, 1) if self.smoke else (20, 0.3, 10)
        st = time_runner(runner, warmup, runs, min_time, batch)
        import tensorrt

        return {'p50_ms': st.p50, 'p90_ms': st.p90, 'mean_ms': st.mean, 'std_ms': st.std,
                'throughput_ips': st.throughput, 'n': st.n,
                'note': f'TensorRT {tensorrt.__version__} strongly typed, {precision} ONNX file; {runner.note}'.strip('; ')}

    # ------------------------------------------------------------------------------------------- sections
    def latency_rows(self, section: str) -> None:
        for label, model, what, size in self.models():
            for batch in self.batches():
                common = dict(model=model, what=what, input=f'{size[0]}x{size[1]}', batch=batch)
                if section == 'eager':
                    for dtype in DTYPES:
                        self.row('eager', f'{label} {size[0]}x{size[1]} b{batch} {dtype}',
                                 lambda m=model, w=what, s=size, b=batch, d=dtype: self.eager(m, w, s, b, d),
                                 2.0 if self.smoke else 4.0, dtype=dtype, memory_format='channels_last', **common)
                elif section in ('compile', 'compile-fp32'):
                    # NOTE: fp16 on a CPU is emulated (seconds per call): the smoke compiles bf16 there
                    dtype = 'fp32' if section == 'compile-fp32' else ('fp16' if self.device.startswith('cuda')
                                                                      else 'bf16')
                    if self.smoke and (label, size) != (self.models()[0][0], self.models()[0][3]):
                        continue  # smoke: the code path once
                    self.row(section, f'{label} {size[0]}x{size[1]} b{batch} {dtype}',
                             lambda m=model, w=what, s=size, b=batch, d=dtype: self.compiled(m, w, s, b, d),
                             self.compile_estimate, dtype=dtype, memory_format='channels_last', **common)
                elif section == 'tensorrt':
                    for precision in ('fp16', 'fp32'):
                        self.row('tensorrt', f'{label} {size[0]}x{size[1]} b{batch} {precision}',
                                 lambda m=model, w=what, s=size, b=batch, p=precision: self.tensorrt(m, w, s, b, p),
                                 10.0 if self.smoke else 45.0, dtype=precision, **common)

    def search_config(self) -> dict[str, Any]:
        from fna_zoo.engine.config import load_config
        from fna_zoo.nas.config import SEARCH_DEFAULTS

        return load_config(str(SEARCH_CONFIG), SMOKE_SPACE if self.smoke else [], defaults=SEARCH_DEFAULTS)

    def search(self) -> None:
        """FNA's weight and architecture steps at its RetinaNet settings, and the projected COCO search cost."""
        import search_step

        def run() -> dict[str, Any]:
            cfg = self.search_config()
            size = tuple(cfg['search']['objective']['input_size'])
            res = search_step.measure_steps(cfg, size, batch=int(cfg['train']['batch_size']),
                                            num_classes=3 if self.smoke else 80, repeats=1 if self.smoke else 3,
                                            paths=1 if self.smoke else 2, device=self.device,
                                            kinds=(cfg['search']['relaxation'],), arch_repeats=1 if self.smoke else 3)
            res['projection'] = project_search(cfg, res['weight_median_ms'], res['arch_median_ms'])
            self.sections['search'] = res
            p = res['projection']
            return {'p50_ms': res['weight_median_ms'],
                    'note': f"weight step {res['weight_median_ms']:.1f} ms, arch step "
                            f"{res['arch_median_ms']:.1f} ms, derived net step {res['derived_median_ms']:.1f} ms; "
                            f"FNA COCO search {p['gpu_hours']:.1f} GPU-hours (paper {p['paper_gpu_hours']:.0f})"}

        self.row('search', 'FNA RetinaNet search steps', run, 8.0 if self.smoke else 45.0, model='supernet',
                 what='search', batch=1)
        self.search_precision()

    def search_precision(self) -> None:
        """The weight and architecture steps under every precision setting the device runs (interleaved, one copy
        of the super network each), with the projected COCO search cost of each; one row per setting."""
        import search_step

        def run() -> dict[str, Any]:
            cfg = self.search_config()
            size = tuple(cfg['search']['objective']['input_size'])
            res = search_step.compare_search_steps(cfg, size, batch=int(cfg['train']['batch_size']),
                                                   num_classes=3 if self.smoke else 80, rounds=1 if self.smoke else 3,
                                                   device=self.device, kind=cfg['search']['relaxation'])
            for r in res['rows']:
                r['projection'] = project_search(cfg, r['weight_ms'], r['arch_ms'])
            self.sections['search_precision'] = res
            best = max(res['rows'], key=lambda r: r['weight_speedup'] + r['arch_speedup'])
            return {'note': f"{len(res['rows'])} settings, {res['rounds']} rounds; fastest {best['label']}: weight "
                            f"step {best['weight_speedup']:.2f}x, arch step {best['arch_speedup']:.2f}x fp32"}

        row = self.row('search', 'FNA RetinaNet search steps by precision (interleaved)', run,
                       10.0 if self.smoke else 60.0, model='supernet', what='search', batch=1)
        if row['status'] != 'ok':
            return
        for r in self.sections['search_precision']['rows']:
            note = (f"weight step {r['weight_ms']:.1f} ms ({r['weight_speedup']:.2f}x fp32), arch step "
                    f"{r['arch_ms']:.1f} ms ({r['arch_speedup']:.2f}x); FNA COCO search "
                    f"{r['projection']['gpu_hours']:.1f} GPU-hours")
            self.row('search', f"search steps {r['label']}",
                     lambda r=r, note=note: {'p50_ms': r['weight_ms'], 'note': note}, -math.inf,  # measured: kept
                     model='supernet',
                     what='search', batch=1, dtype='fp32' if r['amp'] == 'off' else r['amp'],
                     memory_format='channels_last' if r['channels_last'] else 'contiguous')

    def table(self) -> None:
        """A torch-cuda-fp16 latency table of the search space (torch on CPU in the smoke mode) and its MAPE."""
        cfg = self.search_config()
        size = tuple(cfg['search']['objective']['input_size'])
        cuda = self.device.startswith('cuda')
        runtime_name = 'torch-cuda-fp16' if cuda else 'torch-cpu'
        path = self.out / f"latency_table_{runtime_name}_{size[0]}x{size[1]}.json"

        def build() -> dict[str, Any]:
            from fna_zoo.nas.latency import build_latency_table
            from fna_zoo.nas.latency_runtime import get_runtime
            from fna_zoo.nas.space import SearchSpace

            space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
            runtime = get_runtime(runtime_name, None if cuda else 2)
            if path.exists():
                path.unlink()  # a fresh table every run (a resumed one would mix runs)
            # NOTE: one pass and no calibration, as the check's time budget was sized for (a dedicated GPU
            # machine does not drift like the shared CPU the passes are for)
            data = build_latency_table(space, size, runtime, path, warmup=1 if self.smoke else 2,
                                       repeats=2 if self.smoke else 10, progress=False, passes=1, calibrate=False)
            self.sections['table'] = {'path': path.name, 'runtime': data['runtime'], 'parts': len(data['entries']),
                                      'build_time_s': data['build_time_s'], 'complete': data['complete'],
                                      'input_size': list(size)}
            return {'note': f"{len(data['entries'])} parts in {data['build_time_s']:.0f} s ({data['runtime']['name']} "
                            f"on {data['runtime']['device']})", 'p50_ms': None}

        row = self.row('table', f'latency table {runtime_name} {size[0]}x{size[1]}', build,
                       6.0 if self.smoke else 100.0, model='search space', what='table', input=f'{size[0]}x{size[1]}')
        if row['status'] != 'ok':
            return

        def mape() -> dict[str, Any]:
            import latency_table_accuracy

            n = 3 if self.smoke else 10
            argv = ['--table', str(path), '--config', str(SEARCH_CONFIG), '--random', str(n),
                    '--rounds', '2' if self.smoke else '10', '--warmup', '1' if self.smoke else '2']
            if self.smoke:
                argv += ['--set', *SMOKE_SPACE]
            summary = latency_table_accuracy.main(argv)
            self.sections['table_accuracy'] = summary
            return {'note': f"MAPE {summary['mape']:.1f}% on {n} random archs (mean signed {summary['mean_error']:+.1f}%, "
                            f"Spearman {summary['spearman']:.3f})"}

        self.row('table', f'table MAPE {runtime_name} (random archs)', mape, 5.0 if self.smoke else 30.0,
                 model='search space', what='mape', input=f'{size[0]}x{size[1]}')

    def run(self) -> None:
        self.log(f"gpu_check{' (smoke)' if self.smoke else ''} on {self.device} "
                 f"({self.machine.get('gpu') or self.machine.get('cpu_model')}), torch {torch.__version__}, "
                 f'budget {self.args.budget_s:.0f} s, results in {self.out}')
        self.write()
        for section in self.args.sections:
            if section == 'eager':
                self.latency_rows('eager')
            elif section == 'search':
                self.search()
            elif section == 'table':
                self.table()
            elif section in ('compile', 'compile-fp32'):
                self.latency_rows(section)
            elif section == 'tensorrt':
                try:
                    import tensorrt  # noqa: F401
                except ImportError as e:
                    self.sections['tensorrt'] = f'not run: tensorrt does not import ({_one_line(e)})'
                    self.log(self.sections['tensorrt'])
                    continue
                if not self.device.startswith('cuda'):
                    self.sections['tensorrt'] = 'not run: TensorRT needs a CUDA device'
                    continue
                self.latency_rows('tensorrt')
        self.write()
        ok = sum(r['status'] == 'ok' for r in self.rows)
        self.log(f'done: {ok} of {len(self.rows)} rows ok in {self.elapsed():.0f} s; {self.out / "summary.md"}')


def project_search(cfg: dict[str, Any], weight_ms: float, arch_ms: float) -> dict[str, Any]:
    """GPU-hours of FNA's COCO search schedule (method.md 3.3) at the given per-GPU step times.

    Every GPU does one weight step per iteration (one image each), and one architecture step per `weight_steps`
    weight steps from `arch_update_epoch` on; an epoch is half of train2017 over 8 GPUs x `train.batch_size`
    images. Data loading, the all-reduce and evaluation are not included.
    """
    s, t = cfg['search'], cfg['train']
    images = round(COCO_TRAIN2017_IMAGES * s['weight_ratio'])
    iters = math.ceil(images / (FNA_SEARCH_GPUS * int(t['batch_size'])))
    epochs, arch_from = int(t['epochs']), int(s['arch_update_epoch'])
    weight_steps = epochs * iters
    arch_steps = (epochs - arch_from) * iters * s['arch_steps'] / s['weight_steps']
    gpu_s = FNA_SEARCH_GPUS * (weight_steps * weight_ms + arch_steps * arch_ms) / 1000.0
    return {'gpu_hours': gpu_s / 3600.0, 'wall_hours_8_gpus': gpu_s / 3600.0 / FNA_SEARCH_GPUS,
            'paper_gpu_hours': FNA_PAPER_SEARCH_GPU_HOURS, 'iterations_per_epoch': iters,
            'weight_steps_per_gpu': weight_steps, 'arch_steps_per_gpu': arch_steps, 'gpus': FNA_SEARCH_GPUS,
            'images_per_gpu': int(t['batch_size']), 'epochs': epochs, 'arch_update_epoch': arch_from,
            'coco_train2017_images': COCO_TRAIN2017_IMAGES, 'weight_ratio': s['weight_ratio'],
            'excluded': 'data loading, all-reduce, evaluation'}


def _fmt(v: Any) -> str:
    return '-' if v is None else (f'{v:.2f}' if isinstance(v, float) else str(v))


def summary_markdown(data: dict[str, Any]) -> str:
    """The short summary: machine and versions, the latency table, search steps, the latency table's MAPE."""
    m, rows = data['machine'], data['rows']
    ok = [r for r in rows if r['status'] == 'ok']
    head = [f"# GPU check{' (smoke)' if data['smoke'] else ''}: {m.get('gpu') or m.get('cpu_model')}",
            '',
            f"{data['started']}; device {data['device']}; {len(ok)} of {len(rows)} rows ok in {data['wall_s']:.0f} s "
            f"(budget {data['budget_s']:.0f} s).",
            f"torch {m.get('torch')} (CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}), torchvision {m.get('torchvision')}, "
            f"timm {m.get('timm')}, onnx {m.get('onnx')}, onnxruntime {m.get('onnxruntime')}, tensorrt {m.get('tensorrt')}, "
            f"python {m.get('python')}; {m.get('nvidia_smi') or ''}", '']
    cols = [('eager', 'fp32'), ('eager', 'fp16'), ('eager', 'bf16'), ('compile', 'fp16'), ('compile-fp32', 'fp32'),
            ('tensorrt', 'fp32'), ('tensorrt', 'fp16')]
    keys: list[tuple] = []
    cell: dict[tuple, str] = {}
    for r in rows:
        if r['section'] not in ('eager', 'compile', 'compile-fp32', 'tensorrt'):
            continue
        k = (r['name'].split(' ')[0], r['input'], r['batch'])
        if k not in keys:
            keys.append(k)
        v = _fmt(r['p50_ms']) if r['status'] == 'ok' else ('skip' if r['status'].startswith('skipped') else 'FAIL')
        cell[k + (r['section'], r['dtype'])] = v
    lines = head + ['## Latency (p50 ms, channels_last; detectors without NMS)', '',
                    '| model | input | batch | ' + ' | '.join(f'{s} {d}' for s, d in cols) + ' |',
                    '|---|---|---|' + '---|' * len(cols)]
    for k in keys:
        lines.append(f'| {k[0]} | {k[1]} | {k[2]} | ' + ' | '.join(cell.get(k + c, '-') for c in cols) + ' |')
    s = data['sections'].get('search')
    lines += ['', '## Search steps (FNA RetinaNet settings)', '']
    if s:
        p = s['projection']
        lines += [f"{s['detector']} {s['size'][0]}x{s['size'][1]}, {s['batch']} image per GPU, {s['num_classes']} classes, "
                  f"{s['device']}: weight step {s['weight_median_ms']:.1f} ms, architecture step "
                  f"({', '.join(s['arch_ms'])}) {s['arch_median_ms']:.1f} ms, the derived net's training step "
                  f"{s['derived_median_ms']:.1f} ms (weight / derived {s['weight_median_ms'] / s['derived_median_ms']:.2f}).",
                  '',
                  f"FNA's COCO search schedule at these step times: **{p['gpu_hours']:.1f} GPU-hours** "
                  f"({p['wall_hours_8_gpus']:.1f} h on {p['gpus']} GPUs; paper: {p['paper_gpu_hours']:.0f} GPU-hours on "
                  f"TITAN Xp): {p['epochs']} epochs x {p['iterations_per_epoch']} iterations "
                  f"({p['weight_ratio']:.0%} of {p['coco_train2017_images']} train2017 images over {p['gpus']} GPUs x "
                  f"{p['images_per_gpu']}), architecture steps from epoch {p['arch_update_epoch']}; without "
                  f"{p['excluded']}."]
    else:
        lines.append('not measured (see the rows below)')
    sp = data['sections'].get('search_precision')
    if sp:
        lines += ['', f"By precision setting (`train.amp` x `train.channels_last`; {sp['rounds']} timed round(s), settings "
                      f"interleaved, median step; architecture step {sp['arch_kind']}):", '',
                  '| setting | weight step ms | steps/s | vs fp32 | arch step ms | steps/s | vs fp32 | COCO search '
                  'GPU-hours |', '|---|---|---|---|---|---|---|---|']
        lines += [f"| {r['label']} | {r['weight_ms']:.1f} | {r['weight_steps_per_s']:.2f} | {r['weight_speedup']:.2f}x "
                  f"| {r['arch_ms']:.1f} | {r['arch_steps_per_s']:.2f} | {r['arch_speedup']:.2f}x | "
                  f"{r['projection']['gpu_hours']:.1f} |" for r in sp['rows']]
    t, a = data['sections'].get('table'), data['sections'].get('table_accuracy')
    lines += ['', '## Latency table of the search space', '']
    if t:
        lines.append(f"{t['runtime']['name']} on {t['runtime']['device']} at {t['input_size'][0]}x{t['input_size'][1]}: "
                     f"{t['parts']} parts in {t['build_time_s']:.0f} s ({t['path']}"
                     f"{'' if t['complete'] else ', incomplete'}).")
        if a:
            lines.append(f"Predicted vs measured whole backbones, {len([r for r in a['rows'] if r['name'].startswith('random')])} "
                         f"random archs: MAPE {a['mape']:.1f}% (mean signed {a['mean_error']:+.1f}%, max "
                         f"{a['max_abs_error']:.1f}%), Spearman {_fmt(a.get('spearman'))}.")
    else:
        lines.append('not measured (see the rows below)')
    if 'tensorrt' in data['sections']:
        lines += ['', f"TensorRT: {data['sections']['tensorrt']}"]
    bad = [r for r in rows if r['status'] != 'ok']
    lines += ['', f'## Rows not ok ({len(bad)})', '']
    lines += [f"- {r['section']} {r['name']}: {r['status']}{': ' + r['error'] if r.get('error') else ''}" for r in bad[:60]]
    if len(bad) > 60:
        lines.append(f'- ... {len(bad) - 60} more in rows.csv')
    return '\n'.join(lines) + '\n'


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--smoke', action='store_true', help='tiny sizes and a tiny search space, a few runs: seconds, '
                   'on the CPU when there is no GPU (the code path, not a measurement)')
    p.add_argument('--out', help='results folder (default: benchmarks/results/<machine>/gpu_check; smoke: '
                   'runs/gpu_check_smoke)')
    p.add_argument('--budget-s', type=float, help='stop starting rows after this many seconds (default 420; smoke 300)')
    p.add_argument('--device', help='cuda (default where a GPU is) or cpu (smoke only)')
    p.add_argument('--models', nargs='+', default=BACKBONES, help='backbones (default: the four zoo backbones)')
    p.add_argument('--detectors', nargs='*', default=list(DETECTORS), help='detectors (default: retinanet ssdlite)')
    p.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS, help='what to run, in order')
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.device = args.device or ('cuda' if cuda else 'cpu')
    if args.device.startswith('cuda') and not cuda:
        p.error('--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); run with --smoke on '
                'a CPU machine')
    if not args.smoke and not args.device.startswith('cuda'):
        p.error('the GPU check needs a CUDA GPU; expected one, or --smoke for the code path on the CPU')
    if args.budget_s is None:
        args.budget_s = 300.0 if args.smoke else 420.0
    if not args.budget_s > 0:
        p.error(f'--budget-s is {args.budget_s}; expected a positive number of seconds')
    if args.out is None:
        from fna_zoo.runtime.machine import machine_slug

        args.out = str(ROOT / 'runs' / 'gpu_check_smoke') if args.smoke else \
            str(ROOT / 'benchmarks' / 'results' / machine_slug() / 'gpu_check')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')  # random init only: never the hub
    if args.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True  # the deployment setting for fixed shapes (recorded)
    with logged(Path(args.out) / LOG, device_names(args.out)):
        check = Check(args)
        try:
            check.run()
        finally:
            shutil.rmtree(check.work, ignore_errors=True)  # its ONNX files and engines
    return 0


if __name__ == '__main__':
    sys.exit(main())

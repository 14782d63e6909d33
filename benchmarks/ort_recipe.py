"""One onnxruntime session recipe, measured: fna-bench's path against the latency-table path on one model.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/ort_recipe.py [--model fna_ssdlite_backbone]
        [--stages 0] [--size 320 320] [--threads 1] [--runs 100] [--warmup 5] [--json out.json]

The model (default): the whole `fna_ssdlite_backbone` at 320x320, batch 1, random init, the backbone that
fna-bench's committed results time; `--stages N` keeps the stem and the first N stages only (no head conv;
N must cover the backbone's feature taps, e.g. 6 of the 7 stages of fna_ssdlite_backbone). Both paths time
the same module, fna-bench's backbone target (normalisation + features):

* (a) fna-bench: `fna_zoo.bench.backends.Grid.build(model, 'onnxruntime', 'backbone', 1, size)`: the export
  of `fna_zoo.export` (dynamic batch and size, parity-checked file) in a session of `fna_zoo.runtime.ort`;
* (b) latency table: `fna_zoo.nas.latency_runtime.get_runtime('onnxruntime', threads).prepare(module, [x])`,
  as `measure_module` does for every table part: an in-memory static-shape export (`onnx_bytes`) in a session
  of the same recipe.

Both run with inputs and outputs bound once and are timed in alternation, round by round
(`fna_zoo.runtime.timing.time_interleaved`), so load changes hit both alike. Prints both p50s, the median of
the per-round ratios (a) / (b) with its spread (`paired_ratio`), and the session options each path records
(a fna-bench row's `runtime_options`, a table's `runtime.options`): they must be identical.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fna_zoo.arch import load_arch  # noqa: E402
from fna_zoo.bench.backends import Grid  # noqa: E402
from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402
from fna_zoo.fileio import atomic_write_text, portable_path  # noqa: E402
from fna_zoo.nas.latency_runtime import get_runtime  # noqa: E402
from fna_zoo.runtime.machine import machine_info  # noqa: E402
from fna_zoo.runtime.timing import paired_ratio, stats_from_times, time_interleaved  # noqa: E402
from fna_zoo.specs import resolve_model  # noqa: E402


def main(argv=None) -> dict:
    p = CliParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='fna_ssdlite_backbone', help='a zoo arch name or arch file')
    p.add_argument('--stages', type=int, default=0, help='keep the stem and the first N stages, no head conv '
                   '(default 0: the whole backbone)')
    p.add_argument('--size', nargs=2, type=int, default=[320, 320], metavar=('H', 'W'))
    p.add_argument('--threads', type=int, default=1, help='torch and onnxruntime intra-op threads (default 1)')
    p.add_argument('--runs', type=int, default=100, help='timed rounds (default 100)')
    p.add_argument('--warmup', type=int, default=5, help='untimed rounds (default 5)')
    p.add_argument('--json', help='write the result here')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    arch = load_arch(args.model)
    if args.stages:
        arch = arch.replace(stages=arch.stages[:args.stages], head_chs=None)
    with tempfile.TemporaryDirectory(prefix='ort_recipe_') as tmp:
        arch_file = arch.save(os.path.join(tmp, 'model.yaml'))
        src = resolve_model(str(arch_file))
        grid = Grid(tmp, threads=args.threads, device='cpu')
        a = grid.build(src, 'onnxruntime', 'backbone', 1, size)  # (a) fna-bench's Grid path
        if a.skip:
            raise ValueError(f'fna-bench cannot time the model: {a.skip}')
        module = grid.target(src, 'backbone', size).module
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
        runtime = get_runtime('onnxruntime', args.threads)
        with runtime.active():
            b = runtime.prepare(module.eval(), [x])  # (b) the latency-table path (measure_module's runner)
            ta, tb = time_interleaved([a.fn, b.fn], warmup=args.warmup, runs=args.runs)
    sa, sb, ratio = stats_from_times(ta), stats_from_times(tb), paired_ratio(ta, tb)
    table_options = runtime.describe()['options']
    same = a.options == table_options
    m = machine_info(args.threads)
    what = f'stem + first {args.stages} stages' if args.stages else 'whole backbone'
    print(f"model: {args.model} ({what}; {sum(s.depth for s in arch.stages)} blocks), {size[0]}x{size[1]}, batch 1; "
          f"{m['cpu_model']} ({m['cores']} cores), {args.threads} thread(s), onnxruntime {m['onnxruntime']}, "
          f"load {m['loadavg_1m']}; {args.runs} interleaved rounds after {args.warmup} warm-up")
    print(f'(a) fna-bench Grid path     : p50 {sa.p50:.3f} ms (p90 {sa.p90:.3f}, mean {sa.mean:.3f} +- {sa.std:.3f})')
    print(f'(b) latency-table path      : p50 {sb.p50:.3f} ms (p90 {sb.p90:.3f}, mean {sb.mean:.3f} +- {sb.std:.3f})')
    print(f"ratio (a)/(b) = {ratio['ratio']:.3f} (median of per-round ratios; p10 {ratio['p10']:.3f}, "
          f"p90 {ratio['p90']:.3f}; ratio of medians {ratio['ratio_of_medians']:.3f})")
    print(f'(a) fna-bench row runtime_options : {json.dumps(a.options, sort_keys=True)}')
    print(f'(b) latency table runtime.options : {json.dumps(table_options, sort_keys=True)}')
    print(f"session options identical: {'yes' if same else 'NO'}")
    out = {'model': portable_path(args.model), 'stages': args.stages, 'input_size': list(size), 'threads': args.threads,
           'bench_p50_ms': sa.p50, 'table_p50_ms': sb.p50, 'ratio': ratio, 'bench_options': a.options,
           'table_options': table_options, 'identical_options': same, 'machine': m,
           'rounds_ms': {'bench': list(1000 * np.asarray(ta)), 'table': list(1000 * np.asarray(tb))}}
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=1))
    if not same:
        raise ValueError('the two paths record different onnxruntime session options; expected one recipe')
    return out


if __name__ == '__main__':
    sys.exit(run_cli(main))

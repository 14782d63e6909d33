"""onnxruntime vs PyTorch eager CPU latency of backbones (features_only), as a ratio.

    HF_HUB_OFFLINE=1 python benchmarks/ort_vs_eager.py [--models fna_retinanet_backbone mobilenetv2_100]
                                                      [--size 800 1088] [--runs 15] [--warmup 3] [--threads 2]

Each backbone is exported with `fna_zoo.export` (random init; weights do not change the timing), then
PyTorch (eval, inference_mode) and onnxruntime (all graph optimisations) run the same 1x3xHxW input in
alternation, so background load hits both alike; the medians after warm-up are reported, with their ratio.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fna_zoo.cli_errors import CliParser, run_cli  # noqa: E402


def bench(name: str, size: tuple[int, int], runs: int, warmup: int, threads: int, workdir: Path) -> dict[str, float]:
    """Median eager and ORT latency (ms) of one backbone, timed in alternation."""
    from fna_zoo.export.onnx_export import backbone_target, export_with_gate
    from fna_zoo.export.parity import ort_session

    target = backbone_target(name, input_size=size)
    path, reports = export_with_gate(target, workdir / f'{name}.onnx', check_batches=[1])
    if path is None:
        raise ValueError(f'{name}: ONNX export failed its parity check ({reports[0][1].summary()})')
    sess = ort_session(path, threads)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    feed = {'images': x.numpy()}
    model = target.module.eval()
    eager, onnx = [], []
    with torch.inference_mode():
        for i in range(warmup + runs):
            tic = time.perf_counter()
            model(x)
            t_eager = time.perf_counter() - tic
            tic = time.perf_counter()
            sess.run(None, feed)
            t_ort = time.perf_counter() - tic
            if i >= warmup:
                eager.append(t_eager)
                onnx.append(t_ort)
    return {'eager_ms': 1000 * statistics.median(eager), 'ort_ms': 1000 * statistics.median(onnx),
            'max_abs_diff': reports[0][1].max_abs_diff}


def main(argv=None) -> None:
    p = CliParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['fna_retinanet_backbone', 'timm:mobilenetv2_100'],
                   help="zoo archs / timm names (timm:NAME: timm's own model)")
    p.add_argument('--size', nargs=2, type=int, default=[800, 1088], metavar=('H', 'W'))
    p.add_argument('--runs', type=int, default=15)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=2, help='torch and onnxruntime intra-op threads')
    args = p.parse_args(argv)
    from fna_zoo.export.onnx_export import check_input_size

    size = check_input_size(args.size, 'benchmark')
    torch.set_num_threads(args.threads)
    print(f'{size[0]}x{size[1]}, batch 1, {args.threads} threads, median of {args.runs} after {args.warmup} warm-up, '
          f'torch {torch.__version__}, onnxruntime {__import__("onnxruntime").__version__}')
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench(name, size, args.runs, args.warmup, args.threads, Path(tmp))
            print(f'{name:>24s}: eager {r["eager_ms"]:8.1f} ms | onnxruntime {r["ort_ms"]:8.1f} ms | '
                  f'ORT {r["eager_ms"] / r["ort_ms"]:.2f}x faster (max abs diff {r["max_abs_diff"]:.2g})')


if __name__ == '__main__':
    np.set_printoptions(precision=3)
    sys.exit(run_cli(main))

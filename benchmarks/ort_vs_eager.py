"""onnxruntime vs PyTorch eager CPU latency of backbones (features_only), as a ratio: `fna-bench compare`.

    HF_HUB_OFFLINE=1 python benchmarks/ort_vs_eager.py [--models fna_retinanet_backbone timm:mobilenetv2_100]
                                                      [--size 800 1088] [--runs 15] [--warmup 3] [--threads 2]

A thin wrapper kept for old commands: for each model it runs
`fna-bench compare MODEL@torch MODEL@onnxruntime --input-size H W --runs R --warmup W --threads T` (one
timing implementation, `fna_zoo.runtime.timing`): the backbone is exported with `fna_zoo.export` (random init; weights
do not change the timing), then both runtimes run the same input in alternation and the ratio of the
per-round timings is printed with its spread.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from fna_zoo.cli.bench import bench_main  # noqa: E402
from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402


def main(argv=None) -> None:
    p = CliParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['fna_retinanet_backbone', 'timm:mobilenetv2_100'],
                   help="zoo archs / timm names (timm:NAME: timm's own model)")
    p.add_argument('--size', nargs=2, type=int, default=[800, 1088], metavar=('H', 'W'))
    p.add_argument('--runs', type=int, default=15)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=2, help='torch and onnxruntime intra-op threads')
    args = p.parse_args(argv)
    for name in args.models:
        bench_main(['compare', f'{name}@torch', f'{name}@onnxruntime', '--input-size', *map(str, args.size),
                    '--runs', str(args.runs), '--warmup', str(args.warmup), '--threads', str(args.threads)])


if __name__ == '__main__':
    sys.exit(run_cli(main))

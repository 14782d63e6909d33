"""`fna-bench` (also `python benchmarks/run.py`): latency across runtimes, comparisons, the latency-vs-AP report,
and the deployment table of a detector (AP and end-to-end latency per runtime and precision).

    fna-bench fna_retinanet_backbone mobilenetv2_100 --runtimes torch onnxruntime --input-size 800 1088 -o out/
    fna-bench --ap runs/demo_retinanet/final.pth [retinanet.onnx retinanet.int8.onnx] [--data_path DIR] -o out/
    fna-bench compare fna_retinanet_backbone@torch fna_retinanet_backbone@onnxruntime --runs 20
    fna-bench report --results out/results.json [more.json ...] --runs-dirs runs/export_demo --output out/

Runtimes are the canonical names of `fna_zoo.runtime.names` (`torch`, `torch-fp16`, `torch-compile`,
`onnxruntime`, `tensorrt`, `tensorrt-fp16`, `openvino`: the registry, `fna_zoo.runtime.registry`) with
`--device cpu|cuda`; the old backend names (`eager`, `ort`,
`compile`, `trt`, ...) are aliases, as are `--backends` for `--runtimes` and `--what detector` for `--what raw`.

Exit codes: 0 done; 2 user error (one `error: ...` line).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from .common import CliParser, add_output_arg, add_verbosity, entry_point, setup_logging

__all__ = ['main', 'bench_main']

_logger = logging.getLogger(__name__)

_COMMANDS = ('run', 'compare', 'report')
# NOTE: what every results row has, the oldest files (a `backend` column instead of `runtime`) included
_ROW_KEYS = ('model', 'batch', 'input_h', 'input_w', 'p50_ms')


def _common(p: CliParser) -> None:
    from ..detection import DEFAULT_DETECTOR, DETECTORS

    p.add_argument('--what', choices=['backbone', 'raw', 'detector'],
                   help='backbone features, or raw: the detector without NMS (backbone + neck + head); detector '
                        'is an alias of raw (default backbone)')
    p.add_argument('--detector', choices=list(DETECTORS),
                   help='detector built around a backbone for --what raw (random init, 80 classes; default '
                        f'{DEFAULT_DETECTOR})')
    p.add_argument('--warmup', type=int, default=3, help='untimed runs first (default 3)')
    p.add_argument('--runs', type=int, default=10, help='timed runs (default 10)')
    p.add_argument('--threads', type=int, help="intra-op threads, torch and onnxruntime (default: torch's)")
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda' (or 'cuda:N')")
    add_verbosity(p)


def _parser() -> CliParser:
    from ..runtime.names import runtime_help

    p = CliParser(prog='fna-bench', description='Latency of FNA / timm backbones and detectors across runtimes '
                  '(PyTorch eager, torch.compile, onnxruntime, TensorRT, OpenVINO), comparisons and the latency-vs-AP '
                  'report.')
    sub = p.add_subparsers(dest='command', parser_class=CliParser)
    r = sub.add_parser('run', help='time a grid of models x runtimes x batch sizes (the default command)')
    r.add_argument('models', nargs='+', help='zoo arch names, arch files, timm names (timm:NAME forces timm), '
                   'retrain checkpoints (.pth; --what raw) or .onnx files (e.g. an INT8 file; onnxruntime); '
                   "--ap: one retrain checkpoint, and optionally fna-export's files of it (with NMS)")
    r.add_argument('--runtimes', '--backends', dest='runtimes', nargs='+', metavar='RUNTIME',
                   help=f'runtimes, some of {runtime_help()}: torch-fp16 and tensorrt* run on CUDA; onnxruntime '
                        'times the fp32 export, or the .onnx given; tensorrt builds an engine from that ONNX file '
                        '(default: torch onnxruntime; --ap: every cell of its table; --backends is an alias)')
    r.add_argument('--ap', action='store_true',
                   help='the deployment table of a detector checkpoint: per runtime and precision (PyTorch fp32 / '
                        'fp16, onnxruntime fp32 / INT8 / fp16, TensorRT, OpenVINO fp32 / INT8) the COCO AP on a '
                        'validation set, the size, '
                        'and the end-to-end latency per image (pre-processing, network, NMS); see docs/benchmarks.md')
    r.add_argument('--data-path', '--data_path', dest='data_path',
                   help="--ap: COCO tree (or asset:NAME) to evaluate on (default: the checkpoint's own data; for "
                        'the demo detector the real tree set, asset:neon_trees)')
    r.add_argument('--batch', nargs='+', type=int, default=[1], help='batch sizes, e.g. 1 8 (default 1)')
    r.add_argument('--input-size', nargs='+', type=int, metavar='H W',
                   help='one or more H W pairs (multiples of 32; default 800 1088 for --what backbone, and '
                        '800 1088 for RetinaNet / 320 320 for SSDLite)')
    r.add_argument('--min-time', type=float, help='or: time each cell for at least this many seconds')
    add_output_arg(r, 'folder for results.csv and results.json')
    _common(r)
    c = sub.add_parser('compare', help='two models or two runtimes, interleaved, as a ratio A / B')
    c.add_argument('a', help='A: MODEL[@RUNTIME] (a runtime name or alias; default: --runtime)')
    c.add_argument('b', help='B: MODEL[@RUNTIME]')
    c.add_argument('--runtime', '--backend', dest='runtime', default='torch',
                   help='runtime for A / B without @RUNTIME (default torch; --backend is an alias)')
    c.add_argument('--batch', type=int, default=1)
    c.add_argument('--input-size', nargs=2, type=int, default=[800, 1088], metavar=('H', 'W'))
    add_output_arg(c, 'folder for compare.json')
    _common(c)
    rep = sub.add_parser('report', help='markdown table + PNG of latency vs AP')
    rep.add_argument('--results', nargs='+', required=True, help='results.json of one or more fna-bench runs '
                     '(older files, whose backend column holds the old runtime names, too)')
    rep.add_argument('--runs-dirs', nargs='*', default=[], help='retrained run folders (config.yaml + metrics.json)')
    add_output_arg(rep, 'folder for latency_vs_ap.md / .png', required=True)
    add_verbosity(rep)
    return p


def _check_counts(args: Any) -> None:
    if args.warmup < 0:
        raise ValueError(f'--warmup is {args.warmup}; expected 0 or more')
    if args.runs < 1:
        raise ValueError(f'--runs is {args.runs}; expected a positive integer')
    if args.threads is not None and args.threads < 1:
        raise ValueError(f'--threads is {args.threads}; expected a positive integer')
    from ..runtime.names import device_kind

    if device_kind(args.device) == 'cuda':
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f'--device {args.device} but no CUDA GPU is visible; expected --device cpu here')


def _sizes(values: Sequence[int] | None, what: str, detector: str) -> list[tuple[int, int]]:
    from ..checks import check_input_size
    from ..detection import get_detector

    if not values:  # the detector's own input size for it, FNA's 800x1088 for a backbone
        return [get_detector(detector).input_size] if what in ('raw', 'detector') else [(800, 1088)]
    if len(values) % 2:
        raise ValueError(f'--input-size has {len(values)} numbers; expected H W pairs')
    return [check_input_size([values[i], values[i + 1]], what) for i in range(0, len(values), 2)]


def _split(item: str, default: str, device: str) -> tuple[str, str]:
    """(model, canonical runtime name) of `MODEL[@RUNTIME]`."""
    from ..runtime.names import canonical_runtime

    model, _, runtime = item.rpartition('@') if '@' in item else (item, '', default)
    try:
        return model, canonical_runtime(runtime, device)[0]
    except ValueError as e:
        raise ValueError(f'{e} (in {item!r})') from None


def _run(args: Any) -> None:
    from ..bench.grid import format_table, run_grid, write_results
    from ..runtime.machine import cpu_label
    from ..runtime.names import canonical_runtime

    if args.ap:
        return _deploy(args)
    if args.data_path is not None:
        raise ValueError('--data_path applies to --ap (the deployment table); expected --ap with it')
    args.what = args.what or 'backbone'
    _check_counts(args)
    runtimes = [canonical_runtime(r, args.device)[0] for r in args.runtimes or ['torch', 'onnxruntime']]
    if any(b < 1 for b in args.batch):
        raise ValueError(f'--batch {args.batch}; expected positive integers')
    sizes = _sizes(args.input_size, args.what, args.detector)
    rows = run_grid(args.models, runtimes, args.what, args.batch, sizes, args.warmup, args.runs,
                    args.min_time, args.threads, args.device, args.detector, progress=not args.quiet)
    m = rows[0] if rows else {}
    print(f"{cpu_label(m)} ({m.get('cores')} cores, {m.get('threads')} threads, load {m.get('loadavg_1m')}), "
          f"gpu {m.get('gpu')}; torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, "
          f"tensorrt {m.get('tensorrt')}; {args.warmup} warm-up + {args.runs} timed runs per cell")
    print(format_table(rows))
    if args.output:
        for p in write_results(rows, args.output):
            print(f'wrote {p}')


def _deploy(args: Any) -> None:
    """`--ap`: the deployment table of one detector checkpoint (and the ONNX files of it given)."""
    from ..assets.store import resolve_asset
    from ..bench.deploy import format_deploy, run_deploy, write_deploy
    from ..checks import check_input_folder, check_input_size
    from ..specs import resolve_model

    _check_counts(args)
    if args.what is not None:
        raise ValueError(f'--what {args.what} does not apply to --ap, which runs the whole detector (NMS included); '
                         'expected no --what')
    if args.batch != [1]:
        raise ValueError(f'--batch {" ".join(map(str, args.batch))} with --ap; it runs one image at a time '
                         '(expected no --batch)')
    if args.detector is not None:
        raise ValueError(f'--detector {args.detector} does not apply to --ap, which runs the checkpoint\'s own '
                         'detector; expected no --detector')
    if args.min_time is not None:
        raise ValueError('--min-time does not apply to --ap (every image runs once, then again up to --runs runs); '
                         'expected --runs')
    if args.input_size and len(args.input_size) != 2:
        raise ValueError(f'--input-size has {len(args.input_size)} numbers with --ap; expected one H W pair')
    size = tuple(check_input_size(args.input_size, 'detector')) if args.input_size else None
    srcs = [resolve_model(m) for m in args.models]
    ckpts = [s.spec for s in srcs if s.kind == 'checkpoint']
    others = [s for s in srcs if s.kind != 'checkpoint']
    if len(ckpts) != 1:
        got = f'{len(ckpts)} checkpoints ({", ".join(ckpts)})' if ckpts else 'no checkpoint'
        raise ValueError(f'--ap got {got}; expected one detector checkpoint (final.pth of fna-retrain)')
    for s in others:
        if s.kind != 'onnx':
            what = 'a zoo arch' if s.kind == 'arch' else 'a timm model'
            raise ValueError(f"--ap got {s.name!r}, {what}; expected the detector checkpoint and, optionally, "
                             "fna-export's ONNX files of it")
    if args.data_path is not None:
        check_input_folder(resolve_asset(args.data_path), '--data_path',
                           'a COCO tree (annotations/instances_<split>.json, <split>/)')
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not out.is_dir():
        raise NotADirectoryError(f'--output {str(out)!r} is a file; expected a folder')
    rows = run_deploy(ckpts[0], args.data_path, [s.spec for s in others], args.runtimes, size, args.warmup, args.runs,
                      args.threads, args.device, workdir=out / 'onnx' if out else None, progress=not args.quiet)
    print(format_deploy(rows))
    if out is not None:
        for p in write_deploy(rows, out):
            print(f'wrote {p}')


def _compare(args: Any) -> None:
    from ..fileio import atomic_write_text
    from ..bench.grid import compare, portable_row
    from ..runtime.machine import cpu_label

    _check_counts(args)
    if args.batch < 1:
        raise ValueError(f'--batch is {args.batch}; expected a positive integer')
    size = _sizes(args.input_size, args.what, args.detector)[0]
    a, b = _split(args.a, args.runtime, args.device), _split(args.b, args.runtime, args.device)
    if a == b:
        raise ValueError(f'A and B are both {a[0]}@{a[1]}; expected two different models or runtimes')
    r = compare(a, b, args.what, args.batch, size, args.warmup, args.runs, args.threads, args.device, args.detector)
    ra, rb = r['a'], r['b']
    print(f"{cpu_label(ra)} ({ra['cores']} cores, {ra['threads']} threads, load {ra['loadavg_1m']}); "
          f"{args.what} {size[0]}x{size[1]}, batch {args.batch}, {r['n']} interleaved rounds after {args.warmup} warm-up")
    for tag, row in (('A', ra), ('B', rb)):
        print(f"  {tag}: {row['model']} @ {row['runtime']} ({row['precision']}): p50 {row['p50_ms']:.1f} ms, "
              f"p90 {row['p90_ms']:.1f} ms, mean {row['mean_ms']:.1f} ± {row['std_ms']:.1f} ms")
    print(f"ratio A/B = {r['ratio']:.2f} (median of per-round ratios; p10 {r['p10']:.2f}, p90 {r['p90']:.2f}, "
          f"IQR {r['iqr']:.2f}; ratio of medians {r['ratio_of_medians']:.2f})")
    if args.output:
        path = Path(args.output) / 'compare.json'
        record = {k: portable_row(v) if k in ('a', 'b') else v for k, v in r.items()}  # NOTE: no absolute paths
        atomic_write_text(path, json.dumps(record, indent=1) + '\n')
        print(f'wrote {path}')


def _report(args: Any) -> None:
    from ..bench.report import build_report, published_entries, run_entry, write_report
    from ..checks import check_input_file

    rows: list[dict[str, Any]] = []
    for name in args.results:
        path = check_input_file(name, '--results', 'the results.json of a fna-bench run')
        try:
            found = list(json.loads(path.read_text())['rows'])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ValueError(f'--results {str(path)!r} is not a fna-bench results.json; expected {{"rows": [...]}}'
                             ) from None
        for i, row in enumerate(found):
            if not isinstance(row, dict) or any(k not in row for k in _ROW_KEYS):
                raise ValueError(f'--results {str(path)!r}: rows[{i}] is {str(row)[:80]}; expected a fna-bench row '
                                 f'with {", ".join(_ROW_KEYS)}')
        rows += found
    entries = published_entries() + [run_entry(d) for d in args.runs_dirs]
    joined = build_report(rows, entries)
    md, png = write_report(joined, args.output, machine=rows[0] if rows else None)
    print(md.read_text(), end='')
    print(f'wrote {md}\nwrote {png}')


def bench_main(argv: Sequence[str] | None = None) -> None:
    """Parse `argv` and run the command (raises on user errors; see `main`).

    Args:
        argv: Arguments (default `sys.argv[1:]`); a first argument that is not a command means `run`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in _COMMANDS and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'run')
    p = _parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.error('no command or model given; expected e.g. fna-bench fna_retinanet_backbone')
    if getattr(args, 'what', None) == 'detector':
        args.what = 'raw'  # the old name of --what raw
    if args.command == 'compare':
        args.what = args.what or 'backbone'
    if args.command in ('run', 'compare') and not getattr(args, 'ap', False):
        from ..detection import DEFAULT_DETECTOR

        args.detector = args.detector or DEFAULT_DETECTOR
    setup_logging(args, default=logging.WARNING)  # the printed table is the output
    {'run': _run, 'compare': _compare, 'report': _report}[args.command](args)


main = entry_point(bench_main)


if __name__ == '__main__':
    sys.exit(main())

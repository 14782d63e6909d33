"""Where the INT8 network's time goes, and which quantization choices move it (issue 30's network target).

The deployment table's network target is onnxruntime INT8 at 2.5x onnxruntime fp32 (the network sub-graph of the
detector with in-graph NMS: normalisation, backbone, FPN, head). This script takes one retrained detector, exports
it to fp32 ONNX through `fna_zoo.export.export` and quantizes that file as fna-export does and in variants
(`fna_zoo.export.quantize.quantize_int8`, the same calibration images; no AP gate, no fallback):

* `int8`: the exporter's file (per-channel int8 weights, uint8 activations, MinMax calibration);
* `int8_stem_float`: the stem convolution (3 input channels: a poor fit for an int8 GEMM) kept float;
* `int8_per_tensor`: one weight scale per tensor instead of per output channel;
* `int8_dw_float`: every depthwise convolution kept float (int8 depthwise kernels are memory-bound);
* `int8_u8_weights`: asymmetric uint8 weights (onnxruntime's u8 x u8 kernels) and `int8_reduce_range`: 7-bit
  weights, onnxruntime's two remedies where a CPU without VNNI adds u8 x s8 products in 16 bits and may saturate
  (`--variants` adds them; they tell a saturation loss from the quantization's own error).

Each network sub-graph (`fna_zoo.bench.pipelines.split_nms_graph`) runs in a session of the one onnxruntime recipe
(`fna_zoo.runtime.ort.ort_session`) at each `--threads`, all files timed in alternation round by round
(`time_interleaved`); the ratio to fp32 is the median of the per-round ratios (`paired_ratio`). AP/AP50 of each
file on the run's validation set (`onnx_ap`). Then onnxruntime's profiler splits one fp32 and one INT8 run into
backbone, FPN and head (by node scope), and the INT8 backbone into its convolution kinds (stem, depthwise,
expansion, projection) and the INT8 network into op types. Writes `benchmarks/results/<machine>/int8_network.{md,json}`.
Run it alone on the machine:

    HF_HUB_OFFLINE=1 python benchmarks/int8_network.py --checkpoint runs/demo_search/verify/winner.pth
"""
from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402
from fna_zoo.fileio import atomic_write_text, portable_path  # noqa: E402

VARIANTS = ('int8_stem_float', 'int8_per_tensor', 'int8_dw_float')
MORE_VARIANTS = ('int8_u8_weights', 'int8_reduce_range')
CONV_KINDS = (('conv_stem', 'stem'), ('conv_dw', 'depthwise'), ('conv_pwl', 'projection 1x1'),
              ('conv_pw', 'expansion 1x1'))


def _variant_args(name: str, model: Any) -> dict[str, Any]:
    """quantize_int8 keyword arguments of a variant."""
    convs = [n for n in model.graph.node if n.op_type == 'Conv']
    if name == 'int8_per_tensor':
        return {'per_channel': False}
    if name == 'int8_u8_weights':
        return {'weights': 'uint8'}
    if name == 'int8_reduce_range':
        return {'reduce_range': True}
    if name == 'int8_stem_float':
        kept = [n.name for n in convs if '/conv_stem/' in n.name]
    elif name == 'int8_dw_float':
        kept = [n.name for n in convs if any(a.name == 'group' and a.i > 1 for a in n.attribute)]
    else:
        raise ValueError(f'unknown variant {name!r}')
    if not kept:  # NOTE: an empty list would make the variant the plain INT8 file under another name
        raise ValueError(f'variant {name!r} keeps no convolution float in this model; expected a timm backbone '
                         'with a conv_stem and depthwise convolutions')
    return {'exclude': kept}


def _part(node: str) -> str:
    return 'backbone' if '/backbone/body' in node else 'fpn' if '/fpn' in node else 'head' if '/head/' in node \
        else 'other'


def profile(net: bytes, x: np.ndarray, threads: int, runs: int) -> dict[str, dict[str, float]]:
    """ms per run by part, by op type, and (backbone convolutions) by kind, from onnxruntime's profiler."""
    import onnxruntime as ort

    from fna_zoo.runtime.ort import session_options

    with tempfile.TemporaryDirectory(prefix='int8_network_') as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / 'profile')
        sess = ort.InferenceSession(net, opts, providers=['CPUExecutionProvider'])
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    # NOTE: the first run is a warm-up (one-time allocations and kernel preparation): its node events are dropped
    first_end = min(e['ts'] + e['dur'] for e in events if e.get('name') == 'model_run')
    out: dict[str, collections.Counter] = {k: collections.Counter() for k in ('part', 'op', 'backbone conv')}
    for e in events:
        if e.get('cat') != 'Node' or not e['name'].endswith('_kernel_time') or e['ts'] < first_end:
            continue
        name, op, ms = e['name'], e['args']['op_name'], e['dur'] / 1000 / runs
        part = _part(name)
        out['part'][part] += ms
        out['op'][op] += ms
        if part == 'backbone' and 'Conv' in op:
            # NOTE: names of the INT8 graph keep their module scope; the fp32 graph's NCHWc fusion renames its
            # convolutions after their activation, so this split is the INT8 file's only
            out['backbone conv'][next((k for s, k in CONV_KINDS if f'/{s}/' in name), 'other')] += ms
    return {k: dict(v.most_common()) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    from fna_zoo.bench.pipelines import split_nms_graph
    from fna_zoo.checkpoint import read_checkpoint
    from fna_zoo.export import export
    from fna_zoo.export import quantize
    from fna_zoo.runtime.machine import machine_info, machine_slug
    from fna_zoo.runtime.ort import ort_session
    from fna_zoo.runtime.preprocess import input_spec
    from fna_zoo.runtime.timing import paired_ratio, time_interleaved

    import onnx

    p = CliParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', required=True, help='a retrained detector (final.pth)')
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='onnxruntime threads (default 1 2)')
    p.add_argument('--runs', type=int, default=60, help='timed rounds per thread count (default 60)')
    p.add_argument('--calib-images', type=int, default=32, help='INT8 calibration images (default 32)')
    p.add_argument('--variants', nargs='+', choices=VARIANTS + MORE_VARIANTS, default=list(VARIANTS),
                   help=f"quantization variants beside int8 (default {' '.join(VARIANTS)})")
    p.add_argument('--out', help='results folder (default benchmarks/results/<machine>)')
    args = p.parse_args(argv)
    if min(args.threads) < 1 or args.runs < 1 or args.calib_images < 1:
        p.error(f'--threads {args.threads}, --runs {args.runs}, --calib-images {args.calib_images}; expected '
                'integers >= 1')
    ckpt = read_checkpoint(args.checkpoint)
    files: dict[str, Path] = {}
    aps: dict[str, dict[str, float]] = {}
    times: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix='int8_network_') as tmp:
        fp32 = export(args.checkpoint, 'onnx', output=Path(tmp) / 'det.onnx', gate=False, report=print)['onnx'].path
        model = onnx.load(str(fp32))
        spec = input_spec({m.key: m.value for m in model.metadata_props})
        size, resize, mean = spec.size, spec.resize, list(spec.mean)
        batches = quantize.calibration_batches(quantize.calibration_images(ckpt.config, args.calib_images), size,
                                               resize, mean)
        # NOTE: `int8` is what fna-export writes (`write_onnx_int8`: quantize_int8's defaults, these batches)
        files = {'fp32': fp32, 'int8': quantize.quantize_int8(fp32, Path(tmp) / 'int8.onnx', batches)}
        for name in args.variants:
            files[name] = quantize.quantize_int8(fp32, Path(tmp) / f'{name}.onnx', batches,
                                                 **_variant_args(name, model))
        dataset = quantize.eval_dataset(ckpt.config)
        for name, path in files.items():
            ap = quantize.onnx_ap(path, dataset, size, resize, mean)
            aps[name] = {'AP': 100 * ap['AP'], 'AP50': 100 * ap['AP50']}
            print(f"{name}: AP {aps[name]['AP']:.2f}, AP50 {aps[name]['AP50']:.2f}")
        nets = {name: split_nms_graph(path)[0] for name, path in files.items()}
        x = batches[0]
        for threads in args.threads:
            sessions = {name: ort_session(net, threads=threads) for name, net in nets.items()}
            feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
            fns = [lambda s=s, f=feeds[name]: s.run(None, f) for name, s in sessions.items()]
            series = dict(zip(sessions, time_interleaved(fns, warmup=5, runs=args.runs)))
            times[str(threads)] = {name: {'p50_ms': 1000 * float(np.median(t)),
                                          'x_fp32': 1 / paired_ratio(t, series['fp32'])['ratio']}
                                   for name, t in series.items()}
            for name, row in times[str(threads)].items():
                print(f"{threads} thread(s) {name}: network {row['p50_ms']:.2f} ms, {row['x_fp32']:.2f}x fp32")
        prof = {name: profile(nets[name], x, 1, 30) for name in ('fp32', 'int8')}
    out = Path(args.out) if args.out else ROOT / 'benchmarks' / 'results' / machine_slug()
    record = {'checkpoint': portable_path(args.checkpoint), 'input_size': list(size), 'machine': machine_info(),
              'calibration_images': args.calib_images, 'variants': args.variants, 'ap': aps, 'network': times,
              'profile_1_thread': prof}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / 'int8_network.json', json.dumps(record, indent=1) + '\n')
    atomic_write_text(out / 'int8_network.md', report(record))
    print(f"wrote {out / 'int8_network.md'}")
    return 0


def report(r: dict[str, Any]) -> str:
    """The markdown report of a record of `main`."""
    from fna_zoo.runtime.machine import cpu_label

    m = r['machine']
    threads = list(r['network'])
    lines = ['# INT8 network: where the time goes, and quantization variants', '',
             f"HF_HUB_OFFLINE=1 python benchmarks/int8_network.py --checkpoint {r['checkpoint']}"
             + (f" --variants {' '.join(r['variants'])}" if r.get('variants', list(VARIANTS)) != list(VARIANTS)
                else ''), '',
             f"{cpu_label(m)} ({m['cores']} cores, load {m.get('loadavg_1m')}); onnxruntime {m.get('onnxruntime')}; "
             f"input {r['input_size'][0]}x{r['input_size'][1]}, batch 1; {r['calibration_images']} calibration images. "
             'The network sub-graph of the detector (normalisation, backbone, FPN, head; not the NMS), every file '
             'timed in alternation; x fp32: median of the per-round ratios. AP on the run\'s validation set.', '',
             '| file | AP | AP50 | ' + ' | '.join(f'{t} thread(s) ms | x fp32' for t in threads) + ' |',
             '|---|---|---|' + '---|---|' * len(threads)]
    for name, ap in r['ap'].items():
        cells = ' | '.join(f"{r['network'][t][name]['p50_ms']:.2f} | {r['network'][t][name]['x_fp32']:.2f}"
                           for t in threads)
        lines.append(f"| {name} | {ap['AP']:.2f} | {ap['AP50']:.2f} | {cells} |")
    prof = r['profile_1_thread']
    lines += ['', 'onnxruntime profiler, 1 thread, ms per run (node kernel time):', '',
              '| part | fp32 | int8 | x |', '|---|---|---|---|']
    for part in ('backbone', 'fpn', 'head', 'other'):
        a, b = prof['fp32']['part'].get(part, 0.0), prof['int8']['part'].get(part, 0.0)
        lines.append(f"| {part} | {a:.2f} | {b:.2f} | {a / b if b else float('nan'):.2f} |")
    total = sum(prof['int8']['op'].values())
    lines += ['', 'INT8 backbone convolutions by kind (ms per run): ' + ', '.join(
        f'{k} {v:.2f}' for k, v in prof['int8']['backbone conv'].items()) + '.', '',
        'INT8 network by op type (share of node time): ' + ', '.join(
            f'{k} {100 * v / total:.0f} %' for k, v in list(prof['int8']['op'].items())[:6]) + '.', '']
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(run_cli(main))

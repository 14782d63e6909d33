"""`fna-export` (also `python -m fna_zoo.export`): ONNX export with a parity gate, fp16, INT8 and TensorRT.

    fna-export --model fna_retinanet_backbone --output out/backbone.onnx [--input-size 800 1088] [--fp16]
    fna-export --arch runs/search/arch.yaml --output out/searched.onnx
    fna-export --checkpoint runs/demo_retinanet/final.pth --output out/retinanet.onnx [--what raw|nms]
               [--fp16 [--fp16-tol 0.01]] [--int8 --calib-images 32 --data_path /data/coco --ap-drop-max 0.02]
               [--format engine]

`--fp16` and `--int8` each write one more file beside the float32 one (`<stem>.fp16.onnx`, `<stem>.int8.onnx`),
gated on their own; `--format engine` builds a strongly typed TensorRT engine from each of them (from the float32
file when neither is asked): TensorRT 11 has no precision flags, the ONNX file sets the precision.

Exit codes: 0 written; 1 parity (fp16 parity, or INT8 AP) gate failed, nothing written at that gate's output path
(INT8: also when the fp32 model finds nothing on the gate data, so the AP gate could not check INT8); 2 user error
(one `error: ...` line).
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from ..assets.store import resolve_asset
from .common import CliParser, GateFailed, add_output_arg, add_verbosity, entry_point, setup_logging

__all__ = ['export_main', 'main']

_logger = logging.getLogger(__name__)

# NOTE: the stage ends of a backbone with output stride 32 (every FNA arch, `fna_zoo.arch.check_arch`, and timm's
# EfficientNet / MobileNet family): strides 2, 4, 8, 16, 32
FEATURE_LEVELS = 5


def _parser() -> CliParser:
    p = CliParser(prog='fna-export', description='Export an FNA / timm backbone or a retrained detector to ONNX '
                  '(parity-checked against PyTorch), optionally fp16, INT8 (onnxruntime) and TensorRT engines.')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--model', help='zoo arch name (e.g. fna_retinanet_backbone) or any timm model name (timm:NAME forces '
                     "timm's own model): backbone export")
    src.add_argument('--arch', help='arch file (.yaml/.json/.txt, as search writes): backbone export')
    src.add_argument('--checkpoint', help='retrain checkpoint (final.pth) of a RetinaNet or SSDLite: detector export')
    p.add_argument('--what', choices=['backbone', 'raw', 'nms'],
                   help='backbone features; raw head outputs (+ anchors); detections with in-graph NMS '
                        '(default: nms for --checkpoint, backbone otherwise)')
    add_output_arg(p, 'ONNX file to write (.onnx)', required=True)
    p.add_argument('--input-size', nargs=2, type=int, metavar=('H', 'W'),
                   help='input size (multiples of 32); default: 224 224 for backbones (any size works at run '
                        "time), the detector's own size for checkpoints")
    p.add_argument('--batch', type=int, default=1, help='export batch size (default 1)')
    p.add_argument('--static', action='store_true', help='fixed batch size (default: dynamic batch)')
    p.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18, range 11..20)')
    p.add_argument('--out-indices', nargs='+', type=int, help='backbone: timm feature indices (default 1 2 3 4)')
    p.add_argument('--seed-weights', help="backbone: seed weights ('timm' or a file; default random init)")
    p.add_argument('--score-thresh', type=float, help="nms: score threshold (default: the detector's)")
    p.add_argument('--iou-thresh', type=float, help="nms: NMS IoU threshold (default: the detector's)")
    p.add_argument('--max-dets', type=int, help="nms: detections per image (default: the detector's)")
    p.add_argument('--simplify', action='store_true', help='simplify with onnxslim (pip install onnxslim)')
    p.add_argument('--atol', type=float, default=1e-3, help='parity tolerance, ORT vs PyTorch (default 1e-3)')
    p.add_argument('--fp16', action='store_true', help='also write <output stem>.fp16.onnx: mixed precision (the '
                   'network in fp16; normalisation, anchors, box decoding, NMS, inputs and outputs float32), gated '
                   'against PyTorch (--fp16-tol); with --format engine the fp16 engine is built from it')
    p.add_argument('--fp16-output', help='fp16 file (default: <output stem>.fp16.onnx)')
    p.add_argument('--fp16-tol', type=float, default=None,
                   help='fp16 gate: largest difference as a fraction of each output\'s range (detections: score '
                        'tolerance; default 0.01)')
    p.add_argument('--int8', action='store_true', help='also write <output>.int8.onnx: onnxruntime static QDQ '
                   'quantization, gated by the AP drop against fp32 (nms exports); with --format engine in '
                   "TensorRT's form (symmetric int8, float biases)")
    p.add_argument('--int8-output', help='INT8 file (default: <output stem>.int8.onnx)')
    p.add_argument('--calib-images', type=int, default=32, help='INT8 calibration images (default 32)')
    p.add_argument('--data_path', '--data-path', help="COCO tree for calibration and AP (default: the checkpoint's "
                   'data, i.e. the built-in synthetic set)')
    p.add_argument('--ap-drop-max', type=float, default=0.02,
                   help='largest accepted INT8 AP drop, in AP units [0, 1] (default 0.02 = 2 points)')
    p.add_argument('--format', choices=['onnx', 'engine'], default='onnx',
                   help='engine: also build strongly typed TensorRT engines (<file stem>.engine) from the fp16 / '
                        'INT8 files of --fp16 / --int8, else from the float32 file (needs tensorrt; without it, '
                        'prints the trtexec commands)')
    p.add_argument('--max-batch', type=int, default=32, help='engine: largest batch of the optimisation profile')
    p.add_argument('--timing-cache', help='engine: TensorRT timing cache file (default: beside the engine)')
    add_verbosity(p)
    return p


def _validate(p: CliParser, args: Any) -> None:
    """All checks that need no model, so a bad argument fails before any heavy work."""
    from ..checks import check_input_file, check_input_folder, check_input_size, check_output_path
    from ..export.onnx_export import MAX_OPSET, MIN_OPSET

    what = args.what or ('nms' if args.checkpoint else 'backbone')
    args.what = what
    if args.checkpoint and what == 'backbone':
        raise ValueError("--what backbone exports a --model or --arch; for a --checkpoint expected 'raw' or 'nms'")
    if not args.checkpoint and what != 'backbone':
        raise ValueError(f'--what {what} needs a detector --checkpoint; --model / --arch export the backbone')
    check_input_size(args.input_size, 'detector' if args.checkpoint else 'backbone')
    if args.batch < 1:
        raise ValueError(f'--batch is {args.batch}; expected a positive integer')
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise ValueError(f'--opset is {args.opset}; expected {MIN_OPSET}..{MAX_OPSET}')
    if args.score_thresh is not None and not 0 <= args.score_thresh < 1:
        raise ValueError(f'--score-thresh is {args.score_thresh}; expected a value in [0, 1)')
    if args.iou_thresh is not None and not 0 < args.iou_thresh <= 1:
        raise ValueError(f'--iou-thresh is {args.iou_thresh}; expected a value in (0, 1]')
    if args.max_dets is not None and args.max_dets < 1:
        raise ValueError(f'--max-dets is {args.max_dets}; expected a positive integer')
    if not 0 < args.atol < math.inf:  # NOTE: written so, as nan fails every comparison
        raise ValueError(f'--atol is {args.atol}; expected a positive tolerance')
    if args.out_indices is not None and (len(set(args.out_indices)) != len(args.out_indices)
                                         or not all(0 <= i < FEATURE_LEVELS for i in args.out_indices)):
        raise ValueError(f'--out-indices {" ".join(map(str, args.out_indices))} is invalid; expected distinct feature '
                         f'levels 0..{FEATURE_LEVELS - 1} (strides 2, 4, 8, 16, 32)')
    if (args.score_thresh is not None or args.iou_thresh is not None or args.max_dets is not None) and what != 'nms':
        raise ValueError('--score-thresh / --iou-thresh / --max-dets apply to --what nms; expected no NMS options here')
    args.output = check_output_path(args.output, '.onnx')
    if args.int8:
        if what != 'nms':
            raise ValueError(f'--int8 is gated by detection AP, so it needs --what nms; got --what {what}')
        if args.calib_images < 1:
            raise ValueError(f'--calib-images is {args.calib_images}; expected at least 1')
        if not 0 <= args.ap_drop_max <= 1:
            raise ValueError(f'--ap-drop-max is {args.ap_drop_max}; expected AP units in [0, 1] (0.02 = 2 points)')
        args.int8_output = check_output_path(args.int8_output or args.output.with_suffix('.int8.onnx'), '.onnx')
        if args.int8_output.resolve() == args.output.resolve():
            raise ValueError(f'--int8-output {str(args.int8_output)!r} is the fp32 output; expected another file')
    elif args.int8_output:
        raise ValueError('--int8-output needs --int8')
    if args.fp16:
        from ..export.fp16 import DEFAULT_FP16_TOL, fp16_output_path

        args.fp16_tol = DEFAULT_FP16_TOL if args.fp16_tol is None else args.fp16_tol
        if not 0 < args.fp16_tol < 1:  # NOTE: written so, as nan fails every comparison
            raise ValueError(f'--fp16-tol is {args.fp16_tol}; expected a fraction in (0, 1) of the output range')
        args.fp16_output = check_output_path(args.fp16_output or fp16_output_path(args.output), '.onnx')
        others = [args.output] + ([args.int8_output] if args.int8 else [])
        if any(args.fp16_output.resolve() == o.resolve() for o in others):
            raise ValueError(f'--fp16-output {str(args.fp16_output)!r} is the float32 or INT8 output; expected another '
                             'file')
    elif args.fp16_output or args.fp16_tol is not None:
        raise ValueError(f"{'--fp16-output' if args.fp16_output else '--fp16-tol'} needs --fp16")
    if args.arch:
        check_input_file(args.arch, 'arch file', 'a .yaml/.json/.txt arch file')
    if args.checkpoint:
        check_input_file(args.checkpoint, 'checkpoint', 'a final.pth of fna-retrain')
    if args.data_path is not None:
        check_input_folder(resolve_asset(args.data_path), 'data folder',
                           'a COCO tree (annotations/instances_<split>.json, <split>/)')
    if args.format == 'engine' and args.max_batch < args.batch:
        raise ValueError(f'--max-batch {args.max_batch} is below --batch {args.batch}; expected max-batch >= batch')
    if args.simplify:
        try:
            import onnxslim  # noqa: F401
        except ImportError:
            raise ValueError("--simplify needs onnxslim; install it with pip install 'fna-zoo[slim]' "
                             '(or pip install onnxslim)') from None
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ValueError(f"fna-export needs onnx and onnxruntime ({e}); install pip install 'fna-zoo[export]'") from None


def _backbone_spec(args: Any) -> Any:
    from .. import fna  # noqa: F401  (registers the fna* models)
    from ..arch import load_arch
    from ..specs import resolve_model

    if args.arch:
        return load_arch(args.arch)
    if resolve_model(args.model).is_file:
        raise ValueError(f'--model {args.model!r} is a file; expected a zoo arch or a timm model name '
                         '(a retrain checkpoint goes to --checkpoint)')
    return args.model


def export_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run `fna-export`; returns what was written (paths, parity reports, INT8 numbers)."""
    p = _parser()
    args = p.parse_args(argv)
    setup_logging(args, default=logging.WARNING)
    _validate(p, args)

    from ..export.onnx_export import backbone_target, detector_target, export_with_gate

    if args.checkpoint:
        target = detector_target(args.checkpoint, args.what, tuple(args.input_size) if args.input_size else None,
                                 args.score_thresh, args.iou_thresh, args.max_dets)
    else:
        target = backbone_target(_backbone_spec(args), args.seed_weights, args.out_indices,
                                 tuple(args.input_size) if args.input_size else (224, 224),
                                 name=args.arch or args.model)
    # NOTE: the INT8 inputs (gate data, calibration images) are read, every image decoded, before the fp32 export,
    # so bad data fails with nothing written
    int8_inputs = _int8_inputs(args, target) if args.int8 else None
    dynamic = not args.static
    written, reports = export_with_gate(target, args.output, args.batch, dynamic, args.opset, args.simplify, args.atol)
    h, w = target.input_size
    for batch, report in reports:
        print(f'batch {batch}: {report.summary()}')
    if written is None:
        raise GateFailed(f'onnxruntime differs from PyTorch beyond the tolerance {args.atol:g}; nothing written to '
                         f'{str(args.output)!r} (raise --atol if the difference is acceptable)')
    size_mb = written.stat().st_size / 2 ** 20
    print(f'wrote {written} ({target.what}, {size_mb:.1f} MB, opset {args.opset}, input {h}x{w}'
          f'{"" if not target.dynamic_size or not dynamic else " (H, W dynamic)"}, '
          f'batch {"dynamic" if dynamic else args.batch}; outputs {", ".join(target.output_names)})')
    result: dict[str, Any] = {'output': written, 'parity': reports, 'target': target}
    engine_sources: list[tuple[str, Path]] = []
    if args.fp16:
        result['fp16'] = _fp16(args, target, written)
        engine_sources.append(('fp16', result['fp16'].path))
    if args.int8:
        result['int8'] = _int8(args, target, written, *int8_inputs)
        engine_sources.append(('int8', result['int8']['path']))
    if args.format == 'engine':
        result['engines'] = _engines(args, target, engine_sources or [('fp32', written)], dynamic)
        result['engine'] = result['engines'][-1]
    return result


def _fp16(args: Any, target: Any, fp32_path: Path) -> Any:
    """The fp16 file of `fna_zoo.export.fp16.export_fp16`, its gate printed (GateFailed: nothing written)."""
    from ..export.fp16 import export_fp16

    res = export_fp16(target, fp32_path, args.fp16_output, args.fp16_tol)
    for batch, report in res.reports:
        print(f'fp16 batch {batch}: {report.summary()}')
    print(f'fp16: {res.info.summary()}')
    print(f'fp16: {res.coverage_line()}')
    if not res.passed:
        raise GateFailed(f'the fp16 file differs from PyTorch beyond --fp16-tol {args.fp16_tol:g}; nothing written to '
                         f'{str(args.fp16_output)!r} (raise --fp16-tol if the difference is acceptable)')
    print(f'wrote {res.path} (fp16, {res.mb_fp16:.1f} MB; fp32 {res.mb_fp32:.1f} MB)')
    return res


def _engines(args: Any, target: Any, sources: list[tuple[str, Path]], dynamic: bool) -> list[Path]:
    """One strongly typed TensorRT engine per (precision, ONNX file), `<file stem>.engine`; without tensorrt,
    a ValueError (exit 2) naming the trtexec command of each (the ONNX files are written)."""
    from ..runtime.tensorrt import TensorRTUnavailable, engine_plan, import_tensorrt, tensorrt_missing, trtexec_command

    jobs = [(precision, src, Path(src).with_suffix('.engine')) for precision, src in sources]
    for precision, src, _ in jobs:
        engine_plan(src, precision)  # the file gives the precision (a refusal is a user error, exit 2)
    try:
        import_tensorrt('--format engine')
    except TensorRTUnavailable:
        cmds = [trtexec_command(src, engine, target.input_size, args.batch, args.max_batch, dynamic)
                for _, src, engine in jobs]
        raise ValueError(str(tensorrt_missing('--format engine', cmds, written=True))) from None
    from ..export.tensorrt import build_engine

    engines = []
    for precision, src, engine in jobs:
        engines.append(build_engine(src, engine, target.input_size, precision, args.batch, args.max_batch, dynamic,
                                    args.timing_cache))
        print(f'wrote {engine} (TensorRT {precision}, strongly typed, from {src}; versions in {engine}.json)')
    return engines


def _int8_inputs(args: Any, target: Any) -> tuple[Any, list[Any]]:
    """(the gate dataset, the preprocessed calibration batches) of an INT8 export."""
    import json

    from ..checkpoint import read_checkpoint
    from ..export.quantize import calibration_batches, calibration_images, eval_dataset

    cfg = read_checkpoint(args.checkpoint).config
    mean, resize = json.loads(target.metadata['mean']), target.metadata['resize']
    dataset = eval_dataset(cfg, args.data_path)
    calib = calibration_images(cfg, args.calib_images, args.data_path)
    # NOTE: the gate decodes its images only after the float32 export; reading them once here makes an undecodable
    # one fail before any output is opened (one more pass over the gate data, against two inferences over it later)
    dataset.check_images()
    return dataset, calibration_batches(calib, target.input_size, resize, mean)


def _int8(args: Any, target: Any, fp32_path: Path, dataset: Any, batches: list[Any]) -> dict[str, Any]:
    """Quantize with the calibration `batches`, then compare INT8 with fp32 on `dataset` (AP, size, latency);
    nothing written on a failed gate."""
    import json

    from ..engine.evaluate import format_stats
    from ..export.quantize import onnx_ap, ort_latencies_ms, quantize_int8
    from ..fileio import atomic_path

    meta = target.metadata
    mean, resize = json.loads(meta['mean']), meta['resize']
    int8_path = Path(args.int8_output)
    ap32 = onnx_ap(fp32_path, dataset, target.input_size, resize, mean)
    _check_gate_can_see(ap32, dataset, int8_path)
    # NOTE: the INT8 file is built under a temp name and renamed into place only when the AP gate passes
    with atomic_path(int8_path, suffix='.gate.onnx') as tmp:
        quantize_int8(fp32_path, tmp, batches, flavor='tensorrt' if args.format == 'engine' else 'onnxruntime')
        ap8 = onnx_ap(tmp, dataset, target.input_size, resize, mean)
        lat32, lat8 = ort_latencies_ms([fp32_path, tmp], batches[0])  # interleaved: same load on both
        drop = ap32['AP'] - ap8['AP']
        size32, size8 = fp32_path.stat().st_size / 2 ** 20, tmp.stat().st_size / 2 ** 20
        print(f'fp32: {format_stats(ap32)} | {size32:.2f} MB | ORT {lat32:.1f} ms (batch 1)')
        print(f'int8: {format_stats(ap8)} | {size8:.2f} MB | ORT {lat8:.1f} ms (batch 1)')
        print(f'int8 AP drop {100 * drop:.2f} points (max {100 * args.ap_drop_max:.2f}; {len(dataset)} images, '
              f'{len(batches)} calibration images)')
        if drop > args.ap_drop_max:
            raise GateFailed(f'INT8 AP drop {100 * drop:.2f} points exceeds --ap-drop-max '
                             f'{100 * args.ap_drop_max:.2f}; nothing written to {str(int8_path)!r}')
    print(f'wrote {int8_path}')
    return {'path': int8_path, 'ap_fp32': ap32, 'ap_int8': ap8, 'ms_fp32': lat32, 'ms_int8': lat8,
            'mb_fp32': size32, 'mb_int8': size8}


def _check_gate_can_see(ap32: dict[str, float], dataset: Any, int8_path: Path) -> None:
    """Refuse to gate INT8 with a fp32 model that detects nothing on the gate data (GateFailed otherwise).

    NOTE: an AP drop from 0 to 0 is no drop, so the gate would pass whatever the INT8 file does; a model that
    finds nothing there (untrained, or the wrong data) cannot vouch for its INT8 copy, so nothing is written.

    Args:
        ap32: COCO metrics of the fp32 export on the gate data.
        dataset: The gate data (its annotation file is named in the error).
        int8_path: The INT8 output, named in the error.
    """
    if ap32['AP'] > 0 or ap32.get('AP50', 0) > 0:
        return
    # NOTE: COCO metrics are -1 when the data has no ground-truth boxes at all
    found = 'no ground-truth boxes' if ap32['AP'] < 0 else f"AP {100 * ap32['AP']:.1f}, AP50 {100 * ap32.get('AP50', 0):.1f}"
    raise GateFailed(f'the fp32 model finds nothing on the gate data ({found} on {len(dataset)} images of '
                     f"{str(getattr(dataset, 'ann_file', 'the data'))!r}), so the AP gate cannot check INT8; nothing "
                     f'written to {str(int8_path)!r} (train the detector longer, or pass --data_path with images it '
                     'detects objects in)')


main = entry_point(export_main)


if __name__ == '__main__':
    sys.exit(main())

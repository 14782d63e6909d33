"""`fna-export` (also `python -m fna_zoo.export`): ONNX export with a parity gate, fp16, INT8 and TensorRT.

    fna-export --model fna_retinanet_backbone --output out/backbone.onnx [--input-size 800 1088] [--fp16]
    fna-export --arch runs/search/arch.yaml --output out/searched.onnx
    fna-export --checkpoint runs/demo_retinanet/final.pth --output out/retinanet.onnx [--what raw|nms]
               [--fp16 [--fp16-tol 0.01]] [--int8 --calib-images 32 --data_path /data/coco --ap-drop-max 0.02]
               [--format engine]

`--fp16` and `--int8` each write one more file beside the float32 one (`<stem>.fp16.onnx`, `<stem>.int8.onnx`),
gated on their own; `--format engine` builds a strongly typed TensorRT engine from each of them (from the float32
file when neither is asked): TensorRT 11 has no precision flags, the ONNX file sets the precision.

The work is `fna_zoo.export.export` (the Python API, one format table): this command maps its flags onto that
call and prints the lines it reports. INT8: when the AP gate fails, the fallback is on by default
(`--no-int8-fallback` turns it off): the quantized layers are ranked by a measured sensitivity and the most
sensitive kept in float, 1, 2, 4, ... of them, until the drop is within `--ap-drop-max`, then as few as pass
between the last two counts (halving; `fna_zoo.export.int8_fallback`);
the layers kept float are printed and recorded in the file's metadata (`int8_kept_float`). OpenVINO's NNCF INT8
(`--format openvino --int8`) falls back to NNCF's quantization with accuracy control instead; the quantizers it
reverted to float are printed and recorded in the IR's metadata (`int8_kept_float`).

Exit codes: 0 written; 1 parity (fp16 parity, or INT8 AP) gate failed, nothing written at that gate's output path
(INT8: also when the fp32 model finds nothing on the gate data, so the AP gate could not check INT8); 2 user error
(one `error: ...` line).
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Sequence

from .common import CliParser, GateFailed, add_output_arg, add_verbosity, entry_point, setup_logging

__all__ = ['export_main', 'main']

_logger = logging.getLogger(__name__)


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
    p.add_argument('--no-int8-fallback', dest='int8_fallback', action='store_false',
                   help='INT8: fail at once when the AP gate fails (default: keep the most sensitive layers in float, '
                        'ranked by a measured sensitivity, until the AP drop is within --ap-drop-max; OpenVINO: '
                        'NNCF\'s quantization with accuracy control)')
    p.add_argument('--format', choices=['onnx', 'engine', 'openvino'], default='onnx',
                   help='engine: also build strongly typed TensorRT engines (<file stem>.engine) from the fp16 / '
                        'INT8 files of --fp16 / --int8, else from the float32 file (needs tensorrt; without it, '
                        'prints the trtexec commands); openvino: also write the OpenVINO IR <file stem>.xml (+ .bin), '
                        "parity-gated, and with --int8 its NNCF INT8 <file stem>.int8.xml, AP-gated (pip install "
                        "'fna-zoo[openvino]')")
    p.add_argument('--max-batch', type=int, default=32, help='engine: largest batch of the optimisation profile')
    p.add_argument('--timing-cache', help='engine: TensorRT timing cache file (default: beside the engine)')
    add_verbosity(p)
    return p


def _validate(p: CliParser, args: Any) -> None:
    """The checks of how the flags go together (the settings themselves are checked by the library,
    `ExportSettings.check`), so a bad argument fails before any heavy work."""
    from ..checks import check_input_file, check_output_path

    what = args.what or ('nms' if args.checkpoint else 'backbone')
    args.what = what
    if args.checkpoint and what == 'backbone':
        raise ValueError("--what backbone exports a --model or --arch; for a --checkpoint expected 'raw' or 'nms'")
    if not args.checkpoint and what != 'backbone':
        raise ValueError(f'--what {what} needs a detector --checkpoint; --model / --arch export the backbone')
    if args.input_size is not None:
        from ..checks import check_input_size

        check_input_size(args.input_size, 'detector' if args.checkpoint else 'backbone')
    _settings(args).check()  # NOTE: before the output checks, as before the move into the library
    if (args.score_thresh is not None or args.iou_thresh is not None or args.max_dets is not None) and what != 'nms':
        raise ValueError('--score-thresh / --iou-thresh / --max-dets apply to --what nms; expected no NMS options here')
    args.output = check_output_path(args.output, '.onnx')
    if args.int8:
        if what != 'nms':
            raise ValueError(f'--int8 is gated by detection AP, so it needs --what nms; got --what {what}')
        args.int8_output = check_output_path(args.int8_output or args.output.with_suffix('.int8.onnx'), '.onnx')
        if args.int8_output.resolve() == args.output.resolve():
            raise ValueError(f'--int8-output {str(args.int8_output)!r} is the fp32 output; expected another file')
    elif args.int8_output:
        raise ValueError('--int8-output needs --int8')
    if args.fp16:
        from ..export.fp16 import fp16_output_path

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
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ValueError(f"fna-export needs onnx and onnxruntime ({e}); install pip install 'fna-zoo[export]'") from None


def _settings(args: Any) -> Any:
    """The library's `ExportSettings` of the flags."""
    from ..export.exporter import ExportSettings

    return ExportSettings(
        what=args.what, input_size=tuple(args.input_size) if args.input_size else None, batch=args.batch,
        dynamic=not args.static, opset=args.opset, simplify=args.simplify, atol=args.atol,
        out_indices=args.out_indices, seed_weights=args.seed_weights, score_thresh=args.score_thresh,
        iou_thresh=args.iou_thresh, max_dets=args.max_dets, fp16_tol=args.fp16_tol, calib_images=args.calib_images,
        data_path=args.data_path, ap_drop_max=args.ap_drop_max, int8_fallback=args.int8_fallback,
        max_batch=args.max_batch if args.format == 'engine' else max(args.max_batch, args.batch),
        timing_cache=args.timing_cache)


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


def _formats(args: Any) -> list[str]:
    """The formats of the flags: onnx, + onnx-fp16 / onnx-int8; engines from those (else from the float32 file), or
    the OpenVINO IR (+ its INT8 with --int8)."""
    formats = ['onnx'] + (['onnx-fp16'] if args.fp16 else []) + (['onnx-int8'] if args.int8 else [])
    if args.format == 'engine':
        formats += [f.replace('onnx', 'tensorrt') for f in formats[1:]] or ['tensorrt']
    elif args.format == 'openvino':
        formats += ['openvino'] + (['openvino-int8'] if args.int8 else [])
    return formats


def export_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run `fna-export`; returns what was written (paths, parity reports, INT8 numbers; `export`: the library's
    `ExportResult`)."""
    p = _parser()
    args = p.parse_args(argv)
    setup_logging(args, default=logging.WARNING)
    _validate(p, args)

    from ..export.exporter import export
    from ..export.results import ExportGateError, FormatUnavailable

    model = args.checkpoint if args.checkpoint else _backbone_spec(args)
    outputs = {k: v for k, v in (('onnx-fp16', args.fp16_output), ('onnx-int8', args.int8_output)) if v}
    try:
        res = export(model, _formats(args), output=args.output, outputs=outputs, report=print,
                     settings=_settings(args), name=args.arch or args.model)
    except ExportGateError as e:
        raise GateFailed(str(e)) from None
    except FormatUnavailable as e:
        if e.format.startswith('tensorrt'):
            from ..runtime.tensorrt import tensorrt_missing

            raise ValueError(str(tensorrt_missing('--format engine', e.commands, written=True))) from None
        raise
    return _legacy(res)


def _legacy(res: Any) -> dict[str, Any]:
    """The dict `export_main` has always returned, beside the library's result (`export`)."""
    onnx = res['onnx']
    result: dict[str, Any] = {'output': onnx.path, 'parity': onnx.gates[0].details.get('reports', []),
                              'target': res.target, 'export': res}
    if 'onnx-fp16' in res:
        result['fp16'] = res['onnx-fp16'].info.get('export')
    if 'onnx-int8' in res:
        f = res['onnx-int8']
        gate = f.gate('ap')
        result['int8'] = {'path': f.path, 'ap_fp32': gate.ap_before, 'ap_int8': gate.ap_after,
                          'kept_float': f.kept_float, **{k: f.info.get(k) for k in ('ms_fp32', 'ms_int8', 'mb_fp32',
                                                                                    'mb_int8')}}
    engines = [f.path for f in res.files if f.format.startswith('tensorrt')]
    if engines:
        result['engines'], result['engine'] = engines, engines[-1]
    return result


main = entry_point(export_main)


if __name__ == '__main__':
    sys.exit(main())

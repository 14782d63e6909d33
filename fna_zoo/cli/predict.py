"""`fna-predict` (also `python -m fna_zoo.cli.predict`): detect objects in images, folders and videos.

    fna-predict MODEL INPUT [INPUT ...] [-o predictions] [--score-thr 0.3] [--device cpu] [--threads N]
                [--no-draw] [-q]

MODEL is a retrain checkpoint (final.pth, or its run folder; the detector as fna-export wraps it, in PyTorch) or
an ONNX file of `fna-export` (onnxruntime). INPUT: image files, folders of images (recursively: .png .jpg .jpeg
.bmp .tif .tiff .webp) and videos (.mp4 .avi .mov .mkv .webm .m4v, with OpenCV; every frame). Writes into the
output folder one PNG per image with its boxes and scores (a video: `<video>/<frame>.png`), `detections.json`
(COCO results: image_id, category_id, bbox xywh in image pixels, score; `pycocotools`' `loadRes` reads it) and
`images.json` (file name -> image_id, image sizes, categories). The library is `fna_zoo.predict`;
`examples/predict_onnx.py` is the one-image version with no torch.

Exit codes: 0 written; 2 user error (one `error: ...` line: a missing model or input, an unknown file type, no
images found); the results files are written last, so a failed run leaves none.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from .common import CliParser, add_output_arg, add_verbosity, entry_point, setup_logging

__all__ = ['predict_main', 'main']

DEFAULT_OUTPUT = 'predictions'


def _parser() -> CliParser:
    p = CliParser(prog='fna-predict', description='Detect objects in images, folders and videos with a retrained '
                  'FNA detector (checkpoint) or an exported one (ONNX); drawn PNGs and COCO results.')
    p.add_argument('model', help='retrain checkpoint (final.pth, or its run folder), an ONNX file of fna-export, or '
                   'its OpenVINO IR (.xml, fna-export --format openvino)')
    p.add_argument('inputs', nargs='+', metavar='input', help='image files, folders of images (recursively), videos')
    add_output_arg(p, f'output folder (default: {DEFAULT_OUTPUT}; made when missing)')
    p.add_argument('--score-thr', '--score-thresh', dest='score_thr', type=float, default=0.3,
                   help='keep detections scoring at least this, drawn and in the results (default 0.3; 0 keeps '
                        'every detection the model returns, as for COCO AP)')
    p.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda' or 'cuda:N'")
    p.add_argument('--threads', type=int, default=None, help='intra-op threads of the runtime and of OpenCV '
                   '(default: the runtime\'s own)')
    p.add_argument('--no-draw', action='store_true', help='write the results files only, no PNGs')
    p.add_argument('--prefetch', type=int, default=1, metavar='N',
                   help='decode and resize N images (or frames) ahead on a second thread while the network runs '
                        '(default 1; 0: one after the other)')
    add_verbosity(p)
    return p


def predict_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv`, run the model over the inputs, print where the results went.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    p = _parser()
    args = p.parse_args(argv)
    setup_logging(args)
    if not 0 <= args.score_thr <= 1:
        raise ValueError(f'--score-thr is {args.score_thr}; expected a value in [0, 1]')
    if args.threads is not None and args.threads < 1:
        raise ValueError(f'--threads is {args.threads}; expected a positive integer')
    if args.prefetch < 0:
        raise ValueError(f'--prefetch is {args.prefetch}; expected 0 (off) or a positive number of images')
    if args.device != 'cpu' and not str(args.device).startswith('cuda'):
        raise ValueError(f"--device is {args.device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    from ..predict import check_output_folder, find_inputs, load_model, model_loader, predict_files
    from ..runtime.preprocess import fast_backends

    output = args.output or DEFAULT_OUTPUT
    model_loader(args.model)  # NOTE: a bad model path or inputs fail before the model is loaded (seconds)
    find_inputs(args.inputs, exclude=output)
    check_output_folder(output)
    if args.threads and fast_backends()['opencv']:
        import cv2

        cv2.setNumThreads(int(args.threads))
    model = load_model(args.model, device=args.device, threads=args.threads)
    summary = predict_files(model, args.inputs, output, score_thresh=args.score_thr, draw_boxes=not args.no_draw,
                            progress=not args.quiet, prefetch_images=args.prefetch)
    drawn = f", {len(summary['drawings'])} drawings" if summary['drawings'] else ''
    print(f"{summary['images']} images, {summary['detections']} detections (score >= {args.score_thr}) "
          f"-> {summary['results']}{drawn}")
    return summary


main = entry_point(predict_main)


if __name__ == '__main__':
    sys.exit(main())

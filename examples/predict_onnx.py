"""Run an exported FNA detector (`fna-export --what nms`) on an image with onnxruntime, numpy and PIL only.

    python examples/predict_onnx.py model.onnx image.jpg [--output image_det.png] [--score-thresh 0.3]
                                  [--classes red_disc,green_square,...] [--draw-scale 3]
                                  [--truth instances_val2017.json]

Prints one line per detection (label, score, box x1 y1 x2 y2 in the image's pixels) and draws the boxes
into a PNG; with `--truth` (the COCO annotation file the image is in) the ground truth is drawn beside them.
The preprocessing is read from the file's metadata: the network input size, the resize mode ('letterbox'
for RetinaNet: keep the aspect ratio and pad right/bottom with the mean colour; 'stretch' for SSD) and the
mean (`fna_zoo/runtime/preprocess.py`, the pre-processing fna-export's INT8 gate and `fna-bench --ap` use too,
loaded as a file); the graph itself normalises and runs NMS. No torch needed. The detections and their drawing
are `fna-predict`'s (`fna_zoo/predict/core.py`, loaded as a file; `fna-predict` runs folders, videos and
checkpoints too, and writes COCO results). The input and output checks, the atomic write of the PNG (its folder
made when missing, as fna-export makes its output's) and the one-line errors are the project's own
(`fna_zoo/checks.py`, `fna_zoo/fileio.py`, loaded as files too).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn, Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw


def load_session(path: str) -> tuple[ort.InferenceSession, dict[str, str]]:
    """An onnxruntime CPU session and the file's metadata; checks that it is a detector with NMS."""
    checks().check_input_file(path, 'model', 'an ONNX file from fna-export')
    try:
        sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001  (onnxruntime raises its own types for unreadable files)
        raise ValueError(f'model {path!r} is not a readable ONNX file ({type(e).__name__}); expected an ONNX file '
                         'from fna-export') from None
    meta = sess.get_modelmeta().custom_metadata_map
    if meta.get('fna_zoo.what') != 'nms':
        raise ValueError(f"model {path!r} is a {meta.get('fna_zoo.what', 'foreign')!r} export; expected a detector "
                         'exported with --what nms')
    return sess, meta


@functools.lru_cache(maxsize=None)
def _fna_file(rel: str) -> ModuleType:
    """A module of `fna_zoo` that imports nothing of the package (e.g. 'runtime/preprocess.py'), loaded as a file.

    NOTE: loaded by path, not imported: importing `fna_zoo` would import torch and timm. The checkout this
    script is in comes first, else the installed `fna_zoo` (found without importing it).

    Args:
        rel: Its path under `fna_zoo/`.
    """
    path = Path(__file__).resolve().parents[1] / 'fna_zoo' / rel
    if not path.is_file():
        found = importlib.util.find_spec('fna_zoo')
        path = Path(next(iter(found.submodule_search_locations or []), '')) / rel if found else path
    if not path.is_file():
        raise ValueError(f'predict_onnx.py needs fna_zoo/{rel} (a checkout, or fna-zoo installed)')
    spec = importlib.util.spec_from_file_location('_fna_zoo_' + Path(rel).stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NOTE: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pre() -> ModuleType:
    """`fna_zoo/runtime/preprocess.py`, the one deployment pre-processing of the project."""
    return _fna_file('runtime/preprocess.py')


def checks() -> ModuleType:
    """`fna_zoo/checks.py`: the project's checks of input and output paths, and its error lines."""
    return _fna_file('checks.py')


def fileio() -> ModuleType:
    """`fna_zoo/fileio.py`: the project's atomic writes."""
    return _fna_file('fileio.py')


def core() -> ModuleType:
    """`fna_zoo/predict/core.py`: fna-predict's detections of the NMS outputs and their drawing."""
    return _fna_file('predict/core.py')


def predict(sess: ort.InferenceSession, meta: dict[str, str], image: Image.Image, score_thresh: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [N, 4] xyxy in image pixels, scores [N], labels [N]) with score >= `score_thresh`."""
    x, scale = pre().resize_image(image, pre().input_spec(meta))
    outputs = sess.run(['boxes', 'scores', 'labels', 'num_detections'], {sess.get_inputs()[0].name: x[None]})
    boxes, scores, labels = core().image_detections(outputs, 0, score_thresh)
    return pre().to_image_pixels(boxes, scale), scores, labels


def draw(image: Image.Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: Sequence[str],
         scale: int = 1) -> Image.Image:
    """The image (enlarged `scale` times) with boxes and 'name score' tags (`fna_zoo.predict.core.draw`)."""
    return core().draw(image, boxes, scores, labels, names, scale)


def truth_boxes(ann_file: str, image_name: str) -> np.ndarray:
    """Ground-truth boxes [N, 4] xyxy of the image named `image_name` in a COCO annotation file.

    Args:
        ann_file: The COCO annotation file (e.g. instances_val2017.json).
        image_name: The image's `file_name` there.
    """
    try:
        data = json.loads(Path(ann_file).read_text())
        image_id = next((im['id'] for im in data['images'] if im['file_name'] == image_name), None)
        boxes = [a['bbox'] for a in data['annotations'] if a['image_id'] == image_id and not a.get('iscrowd', 0)]
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ValueError(f'--truth {ann_file!r} is not a readable COCO annotation file ({type(e).__name__})') from None
    if image_id is None:
        raise ValueError(f'--truth {ann_file!r} has no image {image_name!r}; expected the annotation file of its split')
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def side_by_side(image: Image.Image, truth: np.ndarray, detected: Image.Image, threshold: float,
                 num: int, scale: int = 1) -> Image.Image:
    """[ground truth | detections] panels with a caption line above each.

    Args:
        image: The image.
        truth: Ground-truth boxes [N, 4] xyxy in image pixels.
        detected: The detections drawing (`draw`), `scale` times the image.
        threshold: The score threshold of the drawn detections (for the caption).
        num: How many detections are drawn (for the caption).
        scale: Enlargement of both panels.
    """
    gt = image.convert('RGB')
    if scale > 1:
        gt = gt.resize((gt.width * scale, gt.height * scale), Image.NEAREST)
    gt_draw = ImageDraw.Draw(gt)
    for box in truth:
        gt_draw.rectangle([float(v) * scale for v in box], outline=(60, 220, 60), width=2)
    out = Image.new('RGB', (gt.width * 2 + 8, gt.height + 16), (255, 255, 255))
    out.paste(gt, (0, 16))
    out.paste(detected, (gt.width + 8, 16))
    d = ImageDraw.Draw(out)
    d.text((2, 2), f'ground truth: {len(truth)} boxes', fill=(0, 0, 0))
    caption = f'exported detector (onnxruntime): {num} detections, score >= {threshold}'
    d.text((gt.width + 10, 2), caption, fill=(0, 0, 0))
    return out


class _Parser(argparse.ArgumentParser):
    """Usage errors as one `error: ...` line and exit code 2, as every command of the project."""

    def error(self, message: str) -> NoReturn:
        print(f'error: {checks().error_line(message)} (see {self.prog} --help)', file=sys.stderr)
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(description='Detect objects in an image with an exported FNA detector (ONNX).')
    p.add_argument('model', help='ONNX file from fna-export --what nms')
    p.add_argument('image', help='image file')
    p.add_argument('--output', '-o', help='PNG with the boxes (default: <image>_det.png beside the image)')
    p.add_argument('--score-thresh', type=float, default=0.3, help='only report and draw scores >= this (default 0.3)')
    p.add_argument('--classes', help="comma-separated class names in label order (default: the file's "
                   'class_names metadata, else label numbers)')
    p.add_argument('--draw-scale', type=int, default=1, help='enlarge the drawing (small images), e.g. 3')
    p.add_argument('--truth', help='COCO annotation file holding the image: draw its ground truth beside the '
                   'detections')
    args = p.parse_args(argv)
    if not 0 <= args.score_thresh < 1:
        raise ValueError(f'--score-thresh is {args.score_thresh}; expected a value in [0, 1)')
    if not 1 <= args.draw_scale <= core().MAX_DRAW_SCALE:
        raise ValueError(f'--draw-scale is {args.draw_scale}; expected an integer from 1 to {core().MAX_DRAW_SCALE}')
    # every check before anything is written: inputs there and files, the output a .png path in a writable place
    checks().check_input_file(args.image, 'image', 'a PNG/JPEG file')
    out = Path(args.output) if args.output else Path(args.image).with_name(Path(args.image).stem + '_det.png')
    checks().check_output_path(out, '.png')
    sess, meta = load_session(args.model)
    if args.truth:
        checks().check_input_file(args.truth, '--truth', "the COCO annotation file of the image's split")
    truth = truth_boxes(args.truth, Path(args.image).name) if args.truth else None
    image = pre().load_image(args.image)
    boxes, scores, labels = predict(sess, meta, image, args.score_thresh)
    names = args.classes.split(',') if args.classes else json.loads(meta.get('class_names', '[]'))
    picture = draw(image, boxes, scores, labels, names, args.draw_scale)
    if truth is not None:
        picture = side_by_side(image, truth, picture, args.score_thresh, len(boxes), args.draw_scale)
    # NOTE: a temp file beside `out` renamed into place (its folder made when missing); an OS error names `out`
    with fileio().atomic_path(out, suffix='.png') as tmp:
        picture.save(tmp, format='PNG', optimize=True)
    # printed once the file is there, so no line announces a file that was not written
    for box, score, label in zip(boxes, scores, labels):
        name = names[int(label)] if int(label) < len(names) else str(int(label))
        print(f'{name:>14s}  {score:.3f}  [{box[0]:.1f}, {box[1]:.1f}, {box[2]:.1f}, {box[3]:.1f}]')
    print(f'{len(boxes)} detections (score >= {args.score_thresh}) -> {out}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (ValueError, OSError) as e:  # the project's CLI convention: one line, exit 2
        print(f'error: {checks().error_line(str(e) or type(e).__name__)}', file=sys.stderr)
        sys.exit(2)

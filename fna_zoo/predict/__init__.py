"""`fna-predict`'s library: images, folders and videos through a retrained detector or an exported file.

    from fna_zoo.predict import load_model, predict_files
    model = load_model('runs/retrain/final.pth')            # or 'model.onnx' from fna-export
    summary = predict_files(model, ['photos/', 'clip.mp4'], 'out/', score_thresh=0.3)

A model is a `Detector`: the detector with in-graph NMS that fna-export writes, and what it expects in front of it
(`fna_zoo.runtime.preprocess.InputSpec`). Which loader reads a model is decided by its file type (`LOADERS`):

* a retrain checkpoint (`.pth`, `.pt`, `.ckpt`, or the run folder holding `final.pth` / `last.pth`): the detector
  rebuilt from the checkpoint alone (as fna-test reads it) and wrapped as fna-export wraps it
  (`fna_zoo.export.onnx_export.detector_target(..., 'nms')`: normalisation, network and `DetectionPostprocess`),
  run in eager PyTorch at fna-export's input size;
* an ONNX file of `fna-export --what nms`: onnxruntime by the one session recipe (`fna_zoo.runtime.ort`);
* OpenVINO IR (`.xml`) of `fna-export --format openvino` (fp32 or NNCF INT8): the OpenVINO runtime's one recipe
  (`fna_zoo.runtime.openvino`), the export's metadata read from the IR's rt_info.

All take the same input (`load_input`'s fast path of `fna_zoo.runtime.preprocess`: the training transform's
bilinear resize, letterbox or stretch) and give the same padded NMS outputs, so their boxes agree to the export's
parity tolerance. Outputs (`predict_files`): one drawn PNG per image or video frame (boxes and 'name score' tags,
`fna_zoo.predict.core.draw`) and a COCO results file `detections.json` (image_id, category_id, bbox xywh in image
pixels, score) with `images.json` beside it (file name -> image_id, sizes, categories), each written atomically.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..checks import check_output_path
from ..fileio import atomic_path, atomic_write_text
from ..runtime.prefetch import prefetch
from ..runtime.preprocess import InputSpec, decode_image, fast_backends, input_spec, resize_image, to_image_pixels
from .core import draw, image_detections, label_name

__all__ = ['IMAGE_SUFFIXES', 'VIDEO_SUFFIXES', 'CHECKPOINT_SUFFIXES', 'LOADERS', 'Detector', 'onnx_detector',
           'openvino_detector', 'torch_detector', 'model_loader', 'load_model', 'Item', 'find_inputs',
           'check_output_folder', 'predict_files']

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt')


@dataclass
class Detector:
    """A detector with NMS and what it expects in front of it.

    Args:
        source: The file it was read from.
        spec: Its network input (`InputSpec`).
        names: Class names in label order (may be empty).
        cat_ids: COCO category id per label (None: label + 1).
        runtime: What runs it ('torch', 'onnxruntime', 'openvino').
        run: One batch [B, 3, H, W] float32 in [0, 1] -> padded (boxes, scores, labels, num_detections), numpy.
    """

    source: Path
    spec: InputSpec
    names: list[str]
    cat_ids: list[int] | None
    runtime: str
    run: Callable[[np.ndarray], list[np.ndarray]] = field(repr=False)

    def category_id(self, label: int) -> int:
        """The COCO category id of a label."""
        if self.cat_ids is not None and 0 <= label < len(self.cat_ids):
            return int(self.cat_ids[label])
        return int(label) + 1

    def categories(self) -> list[dict[str, Any]]:
        """The COCO `categories` entries of the labels it knows."""
        n = len(self.cat_ids) if self.cat_ids is not None else len(self.names)
        return [{'id': self.category_id(i), 'name': label_name(i, self.names)} for i in range(n)]


def _json_list(meta: dict[str, str], key: str) -> list[Any] | None:
    try:
        value = json.loads(meta[key])
    except (KeyError, ValueError, TypeError):
        return None
    return value if isinstance(value, list) else None


def onnx_detector(path: str | os.PathLike, device: str = 'cpu', threads: int | None = None) -> Detector:
    """An ONNX file of `fna-export --what nms` in an onnxruntime session (`fna_zoo.runtime.ort.ort_session`).

    Args:
        path: The ONNX file.
        device: 'cpu', 'cuda' or 'cuda:N'.
        threads: Intra-op threads (None: onnxruntime's default).
    """
    from ..runtime.ort import ort_session

    try:
        sess = ort_session(path, threads, device)
    except RuntimeError as e:
        if 'CUDAExecutionProvider' in str(e):
            raise ValueError(str(e)) from None
        raise ValueError(f'model {str(path)!r} is not a readable ONNX file ({type(e).__name__}); expected an ONNX '
                         'file from fna-export') from None
    except Exception as e:  # noqa: BLE001  (onnxruntime raises its own types for unreadable files)
        raise ValueError(f'model {str(path)!r} is not a readable ONNX file ({type(e).__name__}); expected an ONNX '
                         'file from fna-export') from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if meta.get('fna_zoo.what') != 'nms':
        raise ValueError(f"model {str(path)!r} is a {meta.get('fna_zoo.what', 'foreign')!r} export; expected a "
                         'detector exported with --what nms')
    name = sess.get_inputs()[0].name
    outputs = ['boxes', 'scores', 'labels', 'num_detections']

    def run(x: np.ndarray) -> list[np.ndarray]:
        return sess.run(outputs, {name: x})

    return Detector(Path(path), input_spec(meta), [str(n) for n in _json_list(meta, 'class_names') or []],
                    _json_list(meta, 'cat_ids'), 'onnxruntime', run)


def _checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or the `final.pth` (else `last.pth`) of a run folder."""
    if path.is_dir():
        for name in ('final.pth', 'last.pth'):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f'model folder {str(path)!r} holds no final.pth or last.pth; expected a retrain run '
                                'folder')
    return path


def torch_detector(path: str | os.PathLike, device: str = 'cpu', threads: int | None = None) -> Detector:
    """A retrain checkpoint as fna-export wraps it (normalisation, network, in-graph NMS), in eager PyTorch.

    Args:
        path: A retrain checkpoint, or its run folder.
        device: A torch device ('cpu', 'cuda', ...).
        threads: torch intra-op threads (None: unchanged).
    """
    import torch

    from ..checkpoint import read_checkpoint
    from ..export.onnx_export import detector_target

    file = _checkpoint_file(Path(path))
    if threads:
        torch.set_num_threads(int(threads))
    target = detector_target(file, 'nms')
    meta = target.metadata
    module = target.module.to(device)
    spec = InputSpec(tuple(int(v) for v in target.input_size), meta['resize'],  # type: ignore[arg-type]
                     tuple(float(v) for v in json.loads(meta['mean'])))
    cat_ids = read_checkpoint(file).state.get('cat_ids')

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(device))
        return [t.detach().cpu().numpy() for t in out]

    return Detector(file, spec, [str(n) for n in _json_list(meta, 'class_names') or []],
                    [int(c) for c in cat_ids] if cat_ids is not None else None, 'torch', run)


def openvino_detector(path: str | os.PathLike, device: str = 'cpu', threads: int | None = None) -> Detector:
    """An OpenVINO IR of fna-export's detector (`fna-export --format openvino`, fp32 or NNCF INT8), compiled by the
    OpenVINO runtime's one recipe (`OpenVINORuntime.session`, as the deployment table runs it).

    Args:
        path: The .xml (its .bin beside it).
        device: 'cpu' (OpenVINO's CPU plugin; fna-predict does not run its GPU plugin).
        threads: Inference threads (None: OpenVINO's default).
    """
    from ..runtime.openvino import MISSING, OpenVINORuntime, metadata, read_model
    from ..runtime.plugin import import_package

    if import_package('openvino') is None:
        raise ValueError(f'model {str(path)!r} is OpenVINO IR and {MISSING}')
    if device != 'cpu':
        raise ValueError(f'model {str(path)!r} is OpenVINO IR, which fna-predict runs on the CPU; expected --device '
                         'cpu (or the ONNX file on cuda)')
    try:
        model = read_model(path)
    except RuntimeError as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ValueError(f'model {str(path)!r} is not a readable OpenVINO IR ({why}); '
                         'expected the .xml of fna-export --format openvino with its .bin beside it') from None
    meta = metadata(model)
    if meta.get('fna_zoo.what') != 'nms':
        raise ValueError(f"model {str(path)!r} is a {meta.get('fna_zoo.what', 'foreign')!r} OpenVINO IR; expected "
                         'a detector exported with fna-export --what nms --format openvino')
    session = OpenVINORuntime().session(model, threads, device)
    name = model.inputs[0].get_any_name()
    outputs = ['boxes', 'scores', 'labels', 'num_detections']

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = session({name: x})
        return [np.asarray(result[o]) for o in outputs]

    return Detector(Path(path), input_spec(meta), [str(n) for n in _json_list(meta, 'class_names') or []],
                    _json_list(meta, 'cat_ids'), 'openvino', run)


# file type -> loader (device, threads); a folder is a retrain run folder
LOADERS: dict[str, Callable[..., Detector]] = {
    '.onnx': onnx_detector, '.xml': openvino_detector, **{s: torch_detector for s in CHECKPOINT_SUFFIXES},
}


def model_loader(path: str | os.PathLike) -> Callable[..., Detector]:
    """The loader (`LOADERS`) of a model file by its type (a folder: a retrain run's checkpoint); checks only.

    Args:
        path: A retrain checkpoint (or run folder), an ONNX file of `fna-export --what nms`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f'model {str(path)!r} does not exist; expected a retrain checkpoint (.pth) or an '
                                'ONNX file from fna-export')
    loader = torch_detector if p.is_dir() else LOADERS.get(p.suffix.lower())
    if loader is None:
        raise ValueError(f'model {str(path)!r} has an unknown file type {p.suffix or "(none)"!r}; expected one of '
                         f'{", ".join(LOADERS)} or a retrain run folder')
    return loader


def load_model(path: str | os.PathLike, device: str = 'cpu', threads: int | None = None) -> Detector:
    """The `Detector` of a model file, by its type (`model_loader`).

    Args:
        path: A retrain checkpoint (or run folder), an ONNX file of `fna-export --what nms`.
        device: 'cpu', 'cuda', ...
        threads: Intra-op threads of the runtime (None: its default).
    """
    return model_loader(path)(Path(path), device=device, threads=threads)


@dataclass(frozen=True)
class Item:
    """One input file and the name its results go by.

    Args:
        path: The image or video file.
        name: Its name in the results: the path under the folder given (with that folder's name in front), or
            the file name of a file given.
        video: Whether it is a video (each frame is an image of the results).
    """

    path: Path
    name: str
    video: bool = False


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return 'image' if suffix in IMAGE_SUFFIXES else 'video' if suffix in VIDEO_SUFFIXES else None


def find_inputs(paths: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Item]:
    """The images and videos of files and folders (folders recursively, by suffix; hidden files skipped).

    Args:
        paths: Files and folders.
        exclude: A folder whose files are never inputs (the output folder, when it is inside an input folder).

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A file given is neither an image nor a video, a video without OpenCV, or nothing found.
    """
    items: list[Item] = []
    skip = Path(exclude).resolve() if exclude is not None else None
    expected = f'an image ({", ".join(IMAGE_SUFFIXES)}), a video ({", ".join(VIDEO_SUFFIXES)}) or a folder of them'
    for given in paths:
        p = Path(given)
        if not p.exists():
            raise FileNotFoundError(f'input {str(given)!r} does not exist; expected {expected}')
        if p.is_dir():
            found = sorted(f for f in p.rglob('*') if f.is_file() and _kind(f) is not None
                           and not any(part.startswith('.') for part in f.relative_to(p).parts)
                           and (skip is None or skip not in f.resolve().parents))
            items += [Item(f, (Path(p.resolve().name) / f.relative_to(p)).as_posix(), _kind(f) == 'video')
                      for f in found]
        elif _kind(p) is None:
            raise ValueError(f'input {str(given)!r} has an unknown file type {p.suffix or "(none)"!r}; expected '
                             f'{expected}')
        else:
            items.append(Item(p, p.name, _kind(p) == 'video'))
    if not items:
        raise ValueError(f'no images or videos found in {", ".join(repr(str(p)) for p in paths)}; expected '
                         f'{expected}')
    if any(i.video for i in items) and not fast_backends()['opencv']:
        video = next(i for i in items if i.video)
        raise ValueError(f'input {str(video.path)!r} is a video, which needs OpenCV (pip install '
                         'opencv-python-headless); expected images')
    names: dict[str, int] = {}
    unique = []
    for item in items:  # NOTE: two files of one name (given from two folders) keep apart in the results
        n = names[item.name] = names.get(item.name, 0) + 1
        unique.append(item if n == 1 else Item(item.path, f'{Path(item.name).with_suffix("")}_{n}'
                                               f'{Path(item.name).suffix}', item.video))
    return unique


def _frames(item: Item) -> Iterator[tuple[str, np.ndarray]]:
    """(result name, [h, w, 3] uint8 RGB) of an image, or of each frame of a video."""
    if not item.video:
        yield item.name, decode_image(item.path)[0]
        return
    import cv2

    cap = cv2.VideoCapture(str(item.path))
    try:
        if not cap.isOpened():
            raise ValueError(f'video {str(item.path)!r} cannot be opened by OpenCV; expected a readable video file')
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield f'{item.name}#{index:06d}', cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise ValueError(f'video {str(item.path)!r} has no readable frame; expected a video file')
    finally:
        cap.release()


def _frame_count(item: Item) -> int:
    if not item.video:
        return 1
    import cv2

    cap = cv2.VideoCapture(str(item.path))
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()


def _drawing_path(out: Path, name: str, used: set[Path]) -> Path:
    """Where the drawing of a result name goes: `<name without suffix>.png` under `out` (a frame:
    `<video>/<frame>.png`), `_2`, `_3`, ... added where two names would share it (a.jpg and a.png)."""
    stem, _, frame = name.partition('#')
    base = out / Path(stem).with_suffix('') / frame if frame else out / Path(stem).with_suffix('')
    dst, n = base.with_name(base.name + '.png'), 1
    while dst in used:
        n += 1
        dst = base.with_name(f'{base.name}_{n}.png')
    used.add(dst)
    return dst


def check_output_folder(output: str | os.PathLike) -> Path:
    """Check an output folder of `predict_files`: a folder or nothing yet, in a writable place.

    Args:
        output: The folder.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f'output {str(out)!r} is a file; expected a folder (made when missing)')
    check_output_path(out / 'detections.json', '.json')
    return out


def predict_files(model: Detector, inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                  score_thresh: float = 0.3, draw_boxes: bool = True, progress: bool = True,
                  prefetch_images: int = 1) -> dict[str, Any]:
    """Run `model` on images, folders and videos; write drawings and COCO results into `output`.

    Args:
        model: A `Detector` (`load_model`).
        inputs: Image and video files, folders of them (recursively).
        output: The output folder (made when missing): `<name>.png` drawings (`<name>` without its suffix; a
            video: `<video>/<frame>.png`),
            `detections.json` (COCO results) and `images.json` (file name -> image_id).
        score_thresh: Keep detections scoring at least this (0 keeps all the model returns, as for COCO AP).
        draw_boxes: Write the drawings.
        progress: A tqdm progress bar over images and frames.
        prefetch_images: Decode and resize this many images (or frames) ahead on a second thread while the
            network runs (`fna_zoo.runtime.prefetch`; 0: one after the other). The results are the same.

    Returns:
        {'images': number of images and frames, 'detections': number kept, 'output': the folder,
        'results': the detections file, 'drawings': the drawn files}.
    """
    from PIL import Image
    from tqdm import tqdm

    if not 0 <= score_thresh <= 1:
        raise ValueError(f'score threshold is {score_thresh}; expected a value in [0, 1]')
    out = check_output_folder(output)
    items = find_inputs(inputs, exclude=out)
    results: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    drawings: list[str] = []
    used: set[Path] = set()
    bar = tqdm(total=sum(_frame_count(i) for i in items) or None, unit='img', desc='predict', disable=not progress)
    frames = (frame for item in items for frame in _frames(item))
    prepare = lambda frame: (*frame, *resize_image(frame[1], model.spec))  # noqa: E731
    try:
        for name, pixels, x, scale in prefetch(prepare, frames, prefetch_images):
            image_id = len(images) + 1
            h, w = pixels.shape[:2]
            images.append({'id': image_id, 'file_name': name, 'width': int(w), 'height': int(h)})
            boxes, scores, labels = image_detections(model.run(x[None]), 0, score_thresh)
            boxes = to_image_pixels(boxes, scale)
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                results.append({'image_id': image_id, 'category_id': model.category_id(int(label)),
                                'bbox': [round(box[0], 3), round(box[1], 3), round(box[2] - box[0], 3),
                                         round(box[3] - box[1], 3)], 'score': round(float(score), 5)})
            if draw_boxes:
                dst = _drawing_path(out, name, used)
                with atomic_path(dst, suffix='.png') as tmp:
                    draw(Image.fromarray(pixels), boxes, scores, labels, model.names).save(tmp, format='PNG')
                drawings.append(str(dst))
            bar.update(1)
    finally:
        bar.close()
    # NOTE: written last and atomically: a run stopped half-way leaves no results file that looks complete
    atomic_write_text(out / 'images.json', json.dumps({
        'images': images, 'categories': model.categories(), 'file_name_to_image_id': {
            i['file_name']: i['id'] for i in images},
        'model': str(model.source), 'runtime': model.runtime, 'score_thresh': score_thresh}, indent=1) + '\n')
    atomic_write_text(out / 'detections.json', json.dumps(results) + '\n')
    _logger.info('%d images, %d detections -> %s', len(images), len(results), out)
    return {'images': len(images), 'detections': len(results), 'output': out, 'results': out / 'detections.json',
            'drawings': drawings}

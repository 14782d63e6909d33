"""INT8 for CPU deployment without TensorRT: onnxruntime static quantization (QDQ), gated by COCO AP.

Calibration runs the fp32 detector-with-NMS on N images of the *training* split (`--data_path`, or the data
the checkpoint was trained on: its COCO tree or the built-in synthetic set; images the run trained on in
random windows are cut into fixed tiles of that window size), preprocessed exactly as at deployment
(letterbox for RetinaNet, stretch for SSD, see `preprocess`); the validation split stays unseen. The gate
for INT8 is the AP drop against fp32 on the same images, not a max difference: both files are run with
onnxruntime over the evaluation split and scored with `fna_zoo.engine.evaluate.coco_evaluate`.

Two flavours of the same QDQ file (`quantize_int8(flavor=...)`): 'onnxruntime' (uint8 asymmetric activations,
int32 biases: onnxruntime's fast CPU kernels) and 'tensorrt' (int8 symmetric activations with zero points 0,
float biases: the explicit quantization TensorRT builds an int8 engine from; `fna-export --int8 --format engine`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..assets.store import resolve_asset
from ..data import CocoDetection, coco_split_paths, make_synthetic_coco, tile_windows
from ..engine.evaluate import coco_evaluate
from ..fileio import atomic_path
from ..onnxgraph.quant import shape_nodes
from ..runtime.ort import ort_session
from ..runtime.preprocess import InputSpec, resize_array
from ..runtime.runners import onnxruntime_runner
from ..runtime.timing import time_interleaved

if TYPE_CHECKING:
    import onnx

__all__ = ['eval_dataset', 'calibration_images', 'preprocess', 'calibration_batches', 'quantize_int8',
           'coco_detections', 'onnx_coco_detections', 'onnx_ap', 'ort_latencies_ms']

_logger = logging.getLogger(__name__)


def eval_dataset(cfg: dict[str, Any] | None, data_path: str | os.PathLike | None = None,
                 split: str | None = None) -> CocoDetection:
    """The evaluation (and calibration) dataset: `data_path`'s split, else the config's data (its COCO
    path or its built-in synthetic set, written when missing), else the default built-in set.

    Args:
        cfg: A run config (a checkpoint's), or None for the defaults.
        data_path: A COCO tree root overriding the config.
        split: Split name (default: the config's val split).
    """
    from ..engine.config import DEFAULTS

    data = (cfg or DEFAULTS)['data']
    split = split or data.get('val_split', 'val2017')
    root = data_path if data_path is not None else data.get('path')
    if root is None:
        syn = dict(data['synthetic'])
        root = make_synthetic_coco(syn.pop('root'), **syn)
    return CocoDetection(*coco_split_paths(resolve_asset(root), split))


def calibration_images(cfg: dict[str, Any] | None, num_images: int,
                       data_path: str | os.PathLike | None = None) -> list[torch.Tensor]:
    """`num_images` float images (3, h, w) in [0, 1] for INT8 calibration, spread evenly over the training split
    of the run's data; when the run trained on random windows (`data.train_crop.size`), over the fixed tiles
    of that size of its images. Only the images the picks fall in are decoded.

    Args:
        cfg: A run config (a checkpoint's), or None for the defaults.
        num_images: How many (at most the number of images or tiles).
        data_path: A COCO tree root overriding the config.
    """
    if num_images < 1:
        raise ValueError(f'--calib-images is {num_images}; expected at least 1')
    data = (cfg or {}).get('data') or {}
    dataset = eval_dataset(cfg, data_path, split=data.get('train_split', 'train2017'))
    tile = (data.get('train_crop') or {}).get('size')
    # (dataset index, window or None); COCO image entries carry width and height, so nothing is decoded here
    units: list[tuple[int, tuple[int, int, int, int] | None]] = []
    for i, image_id in enumerate(dataset.ids):
        entry = dataset.images[image_id]
        if tile is None or 'width' not in entry or 'height' not in entry:
            units.append((i, None))
        else:
            units.extend((i, w) for w in tile_windows(int(entry['width']), int(entry['height']), tile))
    picks = np.linspace(0, len(units) - 1, min(num_images, len(units))).round().astype(int)
    images: list[torch.Tensor] = []
    current, image = None, None
    for k in picks:
        i, window = units[int(k)]
        if i != current:  # picks are in order: one decoded image at a time
            current, image = i, dataset[i][0]
        images.append(image if window is None else image[:, window[1]:window[3], window[0]:window[2]])
    return images


def preprocess(image: torch.Tensor, size: tuple[int, int], resize: str, mean: Sequence[float]
               ) -> tuple[np.ndarray, tuple[float, float]]:
    """A dataset image as the exported detectors take it at deployment (`fna_zoo.runtime.preprocess`, the
    pre-processing of `examples/predict_onnx.py` and `fna-bench --ap`: torchvision's bilinear resize, in numpy).

    Args:
        image: Float image (3, h, w) in [0, 1].
        size: Network input (H, W).
        resize: 'letterbox' (keep the aspect ratio, pad right/bottom with the mean colour, i.e. 0 after
            normalisation as torchvision pads) or 'stretch' (resize to H x W, as torchvision's SSD).
        mean: Normalisation mean (the padding colour).

    Returns:
        (array [3, H, W] float32, (x scale, y scale) from the image to the network input).
    """
    spec = InputSpec((int(size[0]), int(size[1])), resize, tuple(mean))
    return resize_array(image.permute(1, 2, 0).numpy(), spec)


def calibration_batches(images: Sequence[torch.Tensor], size: tuple[int, int], resize: str,
                        mean: Sequence[float]) -> list[np.ndarray]:
    """The calibration images (`calibration_images`) preprocessed as at deployment, as batches of one.

    Args:
        images: Float images (3, h, w) in [0, 1].
        size: Network input (H, W).
        resize: See `preprocess`.
        mean: Normalisation mean.
    """
    return [preprocess(image, size, resize, mean)[0][None] for image in images]


class _Reader:
    """onnxruntime `CalibrationDataReader` over a list of batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, batches
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def _unshare_conv_biases(model: 'onnx.ModelProto') -> int:
    """Give every Conv its own bias initializer; returns how many were copied.

    NOTE: RetinaNet / SSD heads run one conv over all levels, so a bias is shared by several Convs. A
    quantized bias is int32 at scale input_scale * weight_scale, which differs per level: the quantizer
    converts the first use and leaves the other levels' Convs in float ('Expected bias ... to be an
    initializer'). Copies make each level quantize on its own.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        if node.op_type != 'Conv' or len(node.input) < 3 or node.input[2] not in inits:
            continue
        name = node.input[2]
        if name in seen:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]), f'{name}.{node.name or copies}')
            model.graph.initializer.append(copy)
            node.input[2] = copy.name
            copies += 1
        seen.add(name)
    return copies


def _own_initializers(model: 'onnx.ModelProto', nodes: Sequence[str]) -> int:
    """Give each of `nodes` its own copy of every initializer it shares with another node; returns the copies.

    NOTE: RetinaNet's head runs one conv per level with the same weight; the quantizer names a weight's
    DequantizeLinear output after the weight, so a node kept float that shares its weight with a quantized one
    would read the quantized weight. A copy keeps it float.
    """
    from onnx import numpy_helper

    wanted = set(nodes)
    if not wanted:
        return 0
    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    copies = 0
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            if name in inits and readers[name] > 1:
                copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]), f'{name}.float.{copies}')
                model.graph.initializer.append(copy)
                node.input[k] = copy.name
                readers[name] -= 1
                copies += 1
    return copies


def quantize_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, batches: list[np.ndarray],
                  per_channel: bool = True, flavor: str = 'onnxruntime', exclude: Sequence[str] = (),
                  weights: str = 'int8', reduce_range: bool = False) -> Path:
    """Static QDQ quantization (int8 weights, or uint8 with `weights`; MinMax calibration), written atomically.

    The normalisation and the postprocessing (box decoding, NMS) stay in float: only the network is quantized.

    Args:
        fp32_path: The fp32 ONNX file.
        int8_path: Where to write the INT8 file.
        batches: Calibration batches (see `calibration_batches`).
        per_channel: Per-channel weight scales.
        flavor: 'onnxruntime' (uint8 asymmetric activations and int32 quantized biases: onnxruntime's fast CPU
            path) or 'tensorrt' (int8 symmetric activations, zero points 0, float biases: the explicit
            quantization TensorRT builds; onnxruntime runs it too).
        exclude: Names of more nodes to keep in float (the INT8 fallback's most sensitive layers,
            `fna_zoo.export.int8_fallback`).
        weights: 'int8' (symmetric; the fast u8 x s8 kernels) or 'uint8' (asymmetric: onnxruntime's u8 x u8
            kernels, which do not saturate where x86 CPUs without VNNI add u8 x s8 pairs in 16 bits; slower);
            onnxruntime flavor only.
        reduce_range: 7-bit weights (onnxruntime's other remedy for that saturation).
    """
    if flavor not in ('onnxruntime', 'tensorrt'):
        raise ValueError(f"INT8 flavor {flavor!r} is unknown; expected 'onnxruntime' or 'tensorrt'")
    if weights not in ('int8', 'uint8') or (weights == 'uint8' and flavor != 'onnxruntime'):
        raise ValueError(f"INT8 weights {weights!r} with flavor {flavor!r}; expected 'int8', or 'uint8' with the "
                         "'onnxruntime' flavor")
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    ort.set_default_logger_severity(3)
    model = onnx.load(str(fp32_path))
    # NOTE: box decoding (exp, products with anchor sizes) and the coordinate offsets of the per-class NMS
    # need float precision; quantizing them moves boxes by whole pixels. The TorchScript exporter names
    # nodes by module scope, so the postprocess and normalisation nodes are found by prefix.
    names = {n.name for n in model.graph.node}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ValueError(f'nodes to keep float {unknown[:3]} are not in {str(fp32_path)!r}; expected node names of it')
    kept = list(exclude)
    exclude = [n.name for n in model.graph.node if n.name.startswith(('/postprocess', '/normalize'))] + kept
    exclude += [n for n in shape_nodes(model) if n not in exclude]  # shape arithmetic stays exact (TF padding)
    if flavor == 'onnxruntime':
        _unshare_conv_biases(model)  # only quantized biases need a copy per level
    _own_initializers(model, kept)
    int8_path = Path(int8_path)
    trt = flavor == 'tensorrt'
    options = {'ActivationSymmetric': True, 'WeightSymmetric': True, 'QuantizeBias': False} if trt else {}
    with atomic_path(int8_path, suffix='.tmp.onnx') as tmp_path:
        tmp = str(tmp_path)
        onnx.save(model, tmp)
        # NOTE: the quantizer logs through the root logger and suggests `quant_pre_process`; that pass renames
        # and fuses nodes (losing the scope names used for `exclude`) and is not needed for these graphs.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_static(tmp, tmp, _Reader(model.graph.input[0].name, batches),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                            weight_type=QuantType.QUInt8 if weights == 'uint8' else QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, reduce_range=reduce_range,
                            nodes_to_exclude=exclude, extra_options=options)
        finally:
            root.setLevel(level)
        q = onnx.load(tmp)
        del q.metadata_props[:]
        for p in model.metadata_props:
            q.metadata_props.add(key=p.key, value=p.value)
        kind = 'symmetric int8 activations, float biases (TensorRT)' if trt else 'uint8 activations (onnxruntime CPU)'
        kind += (', uint8 weights' if weights == 'uint8' else '') + (', 7-bit weights' if reduce_range else '')
        q.metadata_props.add(key='quantization',
                             value=f'onnxruntime static QDQ int8, {kind}, {len(batches)} calibration images'
                                   + (f', {len(kept)} layers kept float' if kept else ''))
        if kept:
            q.metadata_props.add(key='int8_kept_float', value=json.dumps(kept))
        onnx.save(q, tmp)
    return int8_path


def coco_detections(run: Callable[[np.ndarray], Sequence[np.ndarray]], dataset: CocoDetection,
                    size: tuple[int, int], resize: str, mean: Sequence[float]) -> list[dict[str, Any]]:
    """COCO result entries of a detector-with-NMS over `dataset`, batch 1, whatever runs it.

    Args:
        run: Input batch [1, 3, H, W] -> (boxes, scores, labels, num_detections), as fna-export's files give them.
        dataset: The dataset.
        size: Network input (H, W).
        resize: See `preprocess`.
        mean: Normalisation mean.
    """
    results = []
    for idx in range(len(dataset)):
        image, target = dataset[idx]
        x, (sx, sy) = preprocess(image, size, resize, mean)
        boxes, scores, labels, num = run(x[None])
        n = int(num[0])
        for box, score, label in zip(boxes[0, :n], scores[0, :n], labels[0, :n]):
            x1, y1, x2, y2 = box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy
            results.append({'image_id': int(target['image_id']), 'category_id': dataset.label_to_cat[int(label)],
                            'bbox': [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                            'score': round(float(score), 5)})
    return results


def onnx_coco_detections(path: str | os.PathLike, dataset: CocoDetection, size: tuple[int, int], resize: str,
                         mean: Sequence[float]) -> list[dict[str, Any]]:
    """COCO result entries of an exported detector-with-NMS over `dataset` (onnxruntime, batch 1).

    Args:
        path: The ONNX file.
        dataset: The dataset.
        size: Network input (H, W).
        resize: See `preprocess`.
        mean: Normalisation mean.
    """
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    return coco_detections(lambda x: sess.run(['boxes', 'scores', 'labels', 'num_detections'], {name: x}),
                           dataset, size, resize, mean)


def onnx_ap(path: str | os.PathLike, dataset: CocoDetection, size: tuple[int, int], resize: str,
            mean: Sequence[float]) -> dict[str, float]:
    """COCO bbox metrics (AP, AP50, ...) of an exported detector-with-NMS on `dataset`.

    Args:
        path: The ONNX file.
        dataset: The dataset.
        size: Network input (H, W).
        resize: See `preprocess`.
        mean: Normalisation mean.
    """
    return coco_evaluate(dataset.ann_file, onnx_coco_detections(path, dataset, size, resize, mean))


def ort_latencies_ms(paths: Sequence[str | os.PathLike], x: np.ndarray, runs: int = 20, warmup: int = 3,
                     threads: int | None = None) -> list[float]:
    """Median onnxruntime CPU latency (ms) of each ONNX file on `x`, timed in alternation (round by round, so
    load changes on a shared machine hit every file alike).

    Sessions are the one recipe's (`fna_zoo.runtime.ort`), run with inputs and outputs bound once; timing is
    the runtime layer's `time_interleaved`.

    Args:
        paths: The ONNX files (e.g. fp32 and INT8).
        x: Input batch.
        runs: Timed rounds.
        warmup: Untimed rounds first.
        threads: Intra-op threads (None: onnxruntime's default).
    """
    runners = [onnxruntime_runner(p, [x], threads) for p in paths]
    times = time_interleaved([r.fn for r in runners], warmup=warmup, runs=runs)
    return [1000.0 * float(np.median(t)) for t in times]

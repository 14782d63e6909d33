"""The deployment pre-processing of the exported detectors: decode, resize, scale to [0, 1]; and boxes back.

An exported detector takes `images [B, 3, H, W]`, float RGB in [0, 1] at a fixed size, and normalises inside
the graph. What a deployment does before it is read from the file's metadata (`input_spec`): the network
input size and the resize mode, 'letterbox' (RetinaNet: keep the aspect ratio, scale to fit, pad right and
bottom with the mean colour, which is 0 after normalisation, as torchvision pads) or 'stretch' (SSD: resize to
H x W). The resize is the one the detectors were trained with (`bilinear`: torchvision's, not PIL's); PIL only
decodes. `examples/predict_onnx.py`, fna-export's INT8 calibration and AP gate (`fna_zoo.export.quantize`) and
`fna-bench --ap` all use this module, so the three see the same input.

NOTE: numpy, PIL and the standard library only, and no relative imports: `examples/predict_onnx.py` loads this
file by its path, without importing `fna_zoo` (which imports torch and timm).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = ['RESIZE_MODES', 'InputSpec', 'input_spec', 'load_image', 'bilinear', 'resize_array',
           'resize_image', 'to_image_pixels']

RESIZE_MODES = ('letterbox', 'stretch')


@dataclass(frozen=True)
class InputSpec:
    """What an exported detector expects in front of it.

    Args:
        size: Network input (H, W).
        resize: 'letterbox' or 'stretch' (see the module docstring).
        mean: Normalisation mean in [0, 1] (the letterbox padding colour).
    """

    size: tuple[int, int]
    resize: str
    mean: tuple[float, float, float]


def input_spec(meta: Mapping[str, str]) -> InputSpec:
    """The `InputSpec` recorded in an exported detector's metadata (`input_size`, `resize`, `mean`).

    Args:
        meta: The ONNX file's `metadata_props` as a dict.
    """
    try:
        h, w = (int(v) for v in meta['input_size'].split(','))
        mean = tuple(float(v) for v in json.loads(meta['mean']))
    except (KeyError, ValueError, TypeError):
        raise ValueError('the ONNX file records no input_size / mean metadata; expected a detector exported by '
                         'fna-export') from None
    resize = meta.get('resize', 'letterbox')
    if resize not in RESIZE_MODES or len(mean) != 3:
        raise ValueError(f'the ONNX file records resize {resize!r} and mean {list(mean)}; expected one of '
                         f'{RESIZE_MODES} and three channel means')
    return InputSpec((h, w), resize, mean)  # type: ignore[arg-type]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read and decode an image file as RGB (a ValueError in one line for anything that is not an image).

    Args:
        path: The image file.
    """
    try:
        with Image.open(path) as im:
            return im.convert('RGB')
    except FileNotFoundError:
        raise FileNotFoundError(f'image {str(path)!r} does not exist') from None
    except IsADirectoryError:  # NOTE: the words of `fna_zoo.checks.check_input_file` (not importable here)
        raise IsADirectoryError(f'image {str(path)!r} is a directory; expected a PNG/JPEG file') from None
    except (OSError, Image.DecompressionBombError, ValueError) as e:  # not an image, truncated, too large
        raise ValueError(f'image {str(path)!r} is not a readable image ({type(e).__name__}); expected a PNG/JPEG '
                         'file') from None


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first source index, second source index, weight of the second) per output pixel along one axis.

    NOTE: torch's `F.interpolate(mode='bilinear', align_corners=False)` without antialiasing, in float32 as
    torch's CPU kernel computes it: half-pixel centres, source positions below 0 clamped to 0.
    """
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, np.clip(src - i0, 0, 1).astype(np.float32)


def bilinear(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image [h, w, C] float32 resized to `size` (H, W) the way the detectors were trained on it: bilinear,
    half-pixel centres, no antialiasing (torchvision's detector transform, `F.interpolate(align_corners=False)`).

    NOTE: PIL's bilinear resize antialiases when it shrinks: the trained demo RetinaNet lost 0.7 AP (4.0 -> 3.3 on
    the 14 tree tiles, 400 -> 320 px) when `examples/predict_onnx.py` fed it PIL-resized images.

    Args:
        arr: The image, [h, w, C] float32.
        size: Output (H, W).
    """
    (r0, r1, rw), (c0, c1, cw) = _bilinear_taps(arr.shape[0], size[0]), _bilinear_taps(arr.shape[1], size[1])
    rows = arr[r0] * (1 - rw)[:, None, None] + arr[r1] * rw[:, None, None]  # NOTE: rows first: 3x faster here
    return np.take(rows, c0, axis=1) * (1 - cw)[None, :, None] + np.take(rows, c1, axis=1) * cw[None, :, None]


def resize_array(arr: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, tuple[float, float]]:
    """The network input of one image and the (x, y) scale from the image to it.

    Args:
        arr: The image, [h, w, 3] float32 in [0, 1].
        spec: The detector's `InputSpec`.

    Returns:
        (array [3, H, W] float32 in [0, 1], (x scale, y scale)).
    """
    h, w = arr.shape[:2]
    H, W = spec.size
    if spec.resize == 'stretch':
        return np.ascontiguousarray(bilinear(arr, (H, W)).transpose(2, 0, 1)), (W / w, H / h)
    s = min(H / h, W / w)
    nh, nw = max(1, min(H, round(h * s))), max(1, min(W, round(w * s)))  # a 3 x 2000 strip keeps one row
    canvas = np.empty((H, W, 3), dtype=np.float32)
    canvas[:] = np.asarray(spec.mean, dtype=np.float32)
    canvas[:nh, :nw] = bilinear(arr, (nh, nw))
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), (s, s)


def resize_image(image: Image.Image, spec: InputSpec) -> tuple[np.ndarray, tuple[float, float]]:
    """`resize_array` of a decoded RGB image (its 8-bit values scaled to [0, 1]).

    Args:
        image: An RGB image.
        spec: The detector's `InputSpec`.
    """
    # NOTE: times float32(1 / 255), as torchvision's `to_dtype(scale=True)` makes the datasets' images: x / 255
    # differs in the last bit for half the values, which moves INT8 AP by 0.1 (quantization rounding)
    return resize_array(np.asarray(image, dtype=np.float32) * np.float32(1 / 255), spec)


def to_image_pixels(boxes: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """Boxes [N, 4] xyxy in network-input pixels mapped back to the image's pixels.

    Args:
        boxes: Boxes in the network input.
        scale: (x scale, y scale) of `resize_image`.
    """
    sx, sy = scale
    return boxes / np.array([sx, sy, sx, sy], dtype=np.float32)

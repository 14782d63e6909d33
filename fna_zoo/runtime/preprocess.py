"""The deployment pre-processing of the exported detectors: decode, resize, scale to [0, 1]; and boxes back.

An exported detector takes `images [B, 3, H, W]`, float RGB in [0, 1] at a fixed size, and normalises inside
the graph. What a deployment does before it is read from the file's metadata (`input_spec`): the network
input size and the resize mode, 'letterbox' (RetinaNet: keep the aspect ratio, scale to fit, pad right and
bottom with the mean colour, which is 0 after normalisation, as torchvision pads) or 'stretch' (SSD: resize to
H x W). The resize is the one the detectors were trained with (`bilinear`: torchvision's, not PIL's); PIL only
decodes. `examples/predict_onnx.py`, fna-export's INT8 calibration and AP gate (`fna_zoo.export.quantize`) and
`fna-bench --ap` all use this module, so the three see the same input.

Two paths give the same network input:

* the reference, numpy only: `bilinear` reproduces torch's float32 kernel (within 8e-6 of `F.interpolate`);
* the fast path, the default where OpenCV is installed (`backend='auto'`): `cv2.resize(INTER_LINEAR)` on the same
  float32 pixels, the same half-pixel centres and edge clamping, 50-100x faster than the numpy reference. It
  differs from it by float rounding of the source positions only: at most 5e-5 (1/80 of one 8-bit level; 1 ulp
  where the scale is exact, as the tree tiles' 400 -> 320). `load_input` reads a file straight into the network
  input and may decode with pyspng, OpenCV or simplejpeg where their pixels are PIL's (RGB PNG and JPEG);
  `draft=True` decodes JPEGs at a reduced DCT scale (1/2, 1/4, 1/8) when the network input is at most half the
  image: faster, but other pixels (an option, never the default). `benchmarks/preprocess_bench.py` measures them.

NOTE: numpy, PIL and the standard library only at import time, and no relative imports: `examples/predict_onnx.py`
loads this file by its path, without importing `fna_zoo` (which imports torch and timm). OpenCV, simplejpeg and
pyspng are imported on first use; when they are missing, every function falls back to PIL and numpy with no error.
"""
from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = ['RESIZE_MODES', 'BACKENDS', 'DECODERS', 'InputSpec', 'input_spec', 'load_image', 'decode_image',
           'bilinear', 'resize_bilinear', 'resize_array', 'resize_image', 'load_input', 'to_image_pixels',
           'fast_backends', 'set_threads']

RESIZE_MODES = ('letterbox', 'stretch')
# how the bilinear resize runs: 'auto' is OpenCV when importable, else numpy (see the module docstring)
BACKENDS = ('auto', 'opencv', 'numpy')
# which library decodes an image file: 'auto' is the fastest one whose pixels are PIL's for that file
DECODERS = ('auto', 'pil', 'opencv', 'simplejpeg', 'spng')
# decoder -> the optional module it needs, and the file formats it reads
_DECODER_MODULES = {'opencv': 'cv2', 'simplejpeg': 'simplejpeg', 'spng': 'pyspng'}
_DECODER_FORMATS = {'simplejpeg': ('JPEG',), 'spng': ('PNG',)}


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


@functools.lru_cache(maxsize=None)
def _optional(name: str) -> ModuleType | None:
    """An optional module (cv2, simplejpeg, pyspng), imported on first use; None when it is missing or broken."""
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001  (absent, or a wheel that fails to load: fall back to PIL / numpy)
        return None


def fast_backends() -> dict[str, bool]:
    """Which optional fast paths this Python has: {'opencv': ..., 'simplejpeg': ..., 'spng': ...}."""
    return {name: _optional(module) is not None for name, module in _DECODER_MODULES.items()}


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f'{what} is {value!r}; expected one of {tuple(choices)}')


def _not_an_image(path: str | os.PathLike, why: str) -> ValueError:
    return ValueError(f'image {str(path)!r} is not a readable image ({why}); expected a PNG/JPEG file')


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f'image {str(path)!r} does not exist') from None
    except IsADirectoryError:
        raise IsADirectoryError(f'image {str(path)!r} is a directory; expected a PNG/JPEG file') from None


def _fast_decoder(head: Image.Image, decoder: str) -> str:
    """The decoder 'auto' picks for a file PIL has opened (header only): pyspng (else OpenCV) for RGB PNGs,
    simplejpeg (else OpenCV) for RGB JPEGs, where their pixels are PIL's `convert('RGB')`; PIL otherwise.

    NOTE: other modes (palette with transparency, 16-bit grey, CMYK JPEG, ...) convert differently in each library,
    so they stay with PIL.
    """
    if decoder != 'auto':
        return decoder
    if head.mode != 'RGB' or head.format not in ('PNG', 'JPEG'):
        return 'pil'
    # NOTE: measured on the tree tiles (benchmarks/preprocess_bench.py): pyspng decodes their PNGs 2-2.5x faster
    # than PIL or OpenCV, simplejpeg JPEGs 1.2-1.5x faster than either
    first = 'spng' if head.format == 'PNG' else 'simplejpeg'
    for name in (first, 'opencv'):
        if _optional(_DECODER_MODULES[name]) is not None:
            return name
    return 'pil'


def _draft_factor(size: tuple[int, int], want: tuple[int, int]) -> int:
    """The largest JPEG DCT reduction (1, 2, 4, 8) that keeps an image of `size` (w, h) at least `want` (w, h)."""
    k = 1
    while k < 8 and size[0] // (2 * k) >= want[0] and size[1] // (2 * k) >= want[1]:
        k *= 2
    return k


def decode_image(path: str | os.PathLike, decoder: str = 'auto', draft: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """An image file decoded to [h, w, 3] uint8 RGB, and its full size (w, h).

    Args:
        path: The image file.
        decoder: One of `DECODERS`. 'auto' (default): pyspng for RGB PNGs, simplejpeg for RGB JPEGs, else OpenCV
            for both, when installed (the same pixels as PIL, faster); PIL otherwise. A named decoder that is not
            installed, or cannot read this file type, falls back to PIL.
        draft: (w, h) the decoded image needs at least: a JPEG is then decoded at the smallest DCT scale (1/2,
            1/4, 1/8) that keeps it; other pixels than a full decode (see the module docstring). None: full size.

    Returns:
        (pixels, (width, height) of the full-size image).
    """
    _check_choice(decoder, DECODERS, 'decoder')
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as head:  # NOTE: the header only; the pixels are decoded below
            full = head.size
            use = _fast_decoder(head, decoder)
            fmt = head.format
            if use == 'pil' or fmt not in _DECODER_FORMATS.get(use, (fmt,)) \
                    or _optional(_DECODER_MODULES[use]) is None:
                if draft is not None and fmt == 'JPEG':
                    head.draft('RGB', tuple(int(v) for v in draft))
                return np.asarray(head.convert('RGB')), full
    except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as e:
        raise _not_an_image(path, type(e).__name__) from None
    if use == 'simplejpeg':
        sj = _optional('simplejpeg')
        kw = {}
        if draft is not None and _draft_factor(full, draft) > 1:
            # NOTE: libjpeg-turbo also scales by M/8 (7/8, 3/4, ...), slower than a full decode; min_factor 2 keeps
            # it to PIL's and OpenCV's reductions (1/2, 1/4, 1/8)
            kw = {'min_factor': 2, 'min_width': int(draft[0]), 'min_height': int(draft[1])}
        try:
            return sj.decode_jpeg(data, colorspace='RGB', **kw), full
        except ValueError as e:  # NOTE: a damaged JPEG PIL's header read accepted
            raise _not_an_image(path, type(e).__name__) from None
    if use == 'spng':
        try:
            pixels = _optional('pyspng').load(data, format='RGB')
        except Exception as e:  # noqa: BLE001  (pyspng raises RuntimeError / ValueError for damaged files)
            raise _not_an_image(path, type(e).__name__) from None
        if pixels.dtype == np.uint8 and pixels.shape == (full[1], full[0], 3):
            return pixels, full
        return decode_image(path, 'pil', draft)  # NOTE: a PNG pyspng reads otherwise: PIL's pixels, as promised
    cv2 = _optional('cv2')
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # NOTE: as PIL: EXIF orientation not applied
    if draft is not None and fmt == 'JPEG':
        k = _draft_factor(full, draft)
        flags = {1: flags, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}[k] | (cv2.IMREAD_IGNORE_ORIENTATION if k > 1 else 0)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if bgr is None or bgr.ndim != 3:
        raise _not_an_image(path, 'OpenCV cannot decode it')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), full


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


def resize_bilinear(arr: np.ndarray, size: tuple[int, int], backend: str = 'auto') -> np.ndarray:
    """`bilinear`, by OpenCV where `backend` allows it (see the module docstring for the difference).

    Args:
        arr: The image, [h, w, 3] float32.
        size: Output (H, W).
        backend: One of `BACKENDS`: 'auto' (OpenCV when importable, else numpy), 'opencv' (numpy when OpenCV is
            missing), 'numpy' (the reference).
    """
    _check_choice(backend, BACKENDS, 'backend')
    cv2 = _optional('cv2') if backend != 'numpy' else None
    if cv2 is None:
        return bilinear(arr, size)
    # NOTE: float32 in, so OpenCV interpolates in float as torch does (on uint8 it rounds to 8 bits: 3e-3 off);
    # its INTER_LINEAR has torch's half-pixel centres and edge clamping, no antialiasing
    return cv2.resize(np.ascontiguousarray(arr, dtype=np.float32), (int(size[1]), int(size[0])),
                      interpolation=cv2.INTER_LINEAR)


def _geometry(h: int, w: int, spec: InputSpec) -> tuple[int, int, tuple[float, float]]:
    """(resized height, resized width, (x scale, y scale)) of an h x w image in the network input."""
    H, W = spec.size
    if spec.resize == 'stretch':
        return H, W, (W / w, H / h)
    s = min(H / h, W / w)
    return max(1, min(H, round(h * s))), max(1, min(W, round(w * s))), (s, s)  # a 3 x 2000 strip keeps one row


def _place(resized: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The network input [3, H, W]: `resized` [nh, nw, 3] at the top left, the mean colour around it."""
    H, W = spec.size
    nh, nw = resized.shape[:2]
    out = np.empty((3, H, W), dtype=np.float32)
    out[:, :nh, :nw] = resized.transpose(2, 0, 1)  # NOTE: one strided copy into the CHW layout, no HWC canvas
    if nh < H or nw < W:
        mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
        out[:, nh:, :] = mean
        out[:, :nh, nw:] = mean
    return out


def resize_array(arr: np.ndarray, spec: InputSpec, backend: str = 'auto'
                 ) -> tuple[np.ndarray, tuple[float, float]]:
    """The network input of one image and the (x, y) scale from the image to it.

    Args:
        arr: The image, [h, w, 3] float32 in [0, 1].
        spec: The detector's `InputSpec`.
        backend: How the bilinear resize runs (`resize_bilinear`; default: OpenCV when installed).

    Returns:
        (array [3, H, W] float32 in [0, 1], (x scale, y scale)).
    """
    nh, nw, scale = _geometry(arr.shape[0], arr.shape[1], spec)
    return _place(resize_bilinear(arr, (nh, nw), backend), spec), scale


def _to_float(pixels: np.ndarray) -> np.ndarray:
    # NOTE: times float32(1 / 255), as torchvision's `to_dtype(scale=True)` makes the datasets' images: x / 255
    # differs in the last bit for half the values, which moves INT8 AP by 0.1 (quantization rounding)
    arr = pixels.astype(np.float32)
    arr *= np.float32(1 / 255)
    return arr


def resize_image(image: Image.Image | np.ndarray, spec: InputSpec, backend: str = 'auto'
                 ) -> tuple[np.ndarray, tuple[float, float]]:
    """`resize_array` of a decoded RGB image (its 8-bit values scaled to [0, 1]).

    Args:
        image: An RGB image, or its pixels [h, w, 3] uint8 (`decode_image`).
        spec: The detector's `InputSpec`.
        backend: How the bilinear resize runs (`resize_bilinear`).
    """
    return resize_array(_to_float(np.asarray(image)), spec, backend)


def set_threads(threads: int | None) -> None:
    """Threads of the optional OpenCV resize (it would take every core otherwise); a no-op without cv2 or threads.

    Args:
        threads: The threads the caller gives its runtimes (None: leave OpenCV's default).
    """
    cv2 = _optional('cv2')
    if cv2 is not None and threads:
        cv2.setNumThreads(int(threads))


def load_input(path: str | os.PathLike, spec: InputSpec, decoder: str = 'auto', backend: str = 'auto',
               draft: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """An image file straight to the network input: `resize_image(load_image(path), spec)`, by the fast path.

    With the defaults the result is `resize_image(load_image(path), spec)`'s within the resize backend's
    tolerance (see the module docstring): the decoders 'auto' picks give PIL's pixels.

    Args:
        path: The image file.
        spec: The detector's `InputSpec`.
        decoder: One of `DECODERS` (`decode_image`).
        backend: How the bilinear resize runs (`resize_bilinear`).
        draft: Decode a JPEG at the smallest DCT scale that is still at least the resized size (faster for images
            two or more times the network input; other pixels, so off by default). The returned scale maps to
            the full-size image either way.

    Returns:
        (array [3, H, W] float32 in [0, 1], (x scale, y scale) from the full-size image to it).
    """
    if draft:
        with Image.open(path) as head:  # NOTE: the size from the header, to know how far the decode may reduce
            w, h = head.size
        nh, nw, scale = _geometry(h, w, spec)
        pixels, _ = decode_image(path, decoder, draft=(nw, nh))
    else:
        pixels, (w, h) = decode_image(path, decoder)
        nh, nw, scale = _geometry(h, w, spec)
    return _place(resize_bilinear(_to_float(pixels), (nh, nw), backend), spec), scale


def to_image_pixels(boxes: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """Boxes [N, 4] xyxy in network-input pixels mapped back to the image's pixels.

    Args:
        boxes: Boxes in the network input.
        scale: (x scale, y scale) of `resize_image`.
    """
    sx, sy = scale
    return boxes / np.array([sx, sy, sx, sy], dtype=np.float32)

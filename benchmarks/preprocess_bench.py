"""Deployment pre-processing per library and file type: decode + resize to the network input + scale to [0, 1].

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/preprocess_bench.py [--size 320 320] [--rounds 12]
        [--warmup 2] [-o benchmarks/results/<machine>]

Images: the tree tiles (`asset:neon_trees`, val2017: 400 x 400 RGB PNGs; the set has no TIFF), the same tiles
re-encoded as JPEG (quality 90, in a temporary folder), `asset:photos` (three PNGs, two JPEGs of 300-640 px) and
one large JPEG (the 2299 x 2472 training tile re-encoded), where a reduced JPEG decode applies.
Each path takes an image file to the detector's network input (`fna_zoo.runtime.preprocess`: letterbox to
`--size`, the demo RetinaNet's 320 x 320, float32 [3, H, W] in [0, 1]):

* reference: today's path, PIL decode + the numpy bilinear resize (`resize_image(load_image(p), backend='numpy')`);
* PIL + OpenCV resize, OpenCV decode + resize, simplejpeg (JPEG) or pyspng (PNG) decode + OpenCV resize, and the
  default (`load_input(p, spec)`: the fastest decoder whose pixels are PIL's, OpenCV's resize);
* reduced decodes, which change the pixels (options): JPEG draft (PIL `Image.draft`, OpenCV `IMREAD_REDUCED_*`,
  simplejpeg `min_width/min_height`; `load_input(draft=True)`) and PIL `Image.reduce` (integer box filter) before
  the resize;
* the parts alone: decode only (PIL, OpenCV, simplejpeg, pyspng; for PNG also imagecodecs' libpng and Wuffs where
  installed, not offered by `load_input`) and resize + scale only (numpy, OpenCV) of a decoded image.

One thread (`cv2.setNumThreads(1)`, `OMP_NUM_THREADS=1`), one image at a time, every path on the same image in
turn, round after round (interleaved, so load changes hit every path alike); per path and set the median and p90
ms per image over rounds x images, and the median of the per-image ratios to the reference (`paired_ratio`).
Numerics: the largest and the mean absolute difference of each path's network input from the reference's, and
whether its letterbox geometry (resized size and scale) is the reference's. Writes `preprocess.md` and
`preprocess.json` (the machine recorded, paths repo-relative) into `-o`.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fna_zoo.assets.store import resolve_asset  # noqa: E402
from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402
from fna_zoo.fileio import atomic_write_text, portable_path  # noqa: E402
from fna_zoo.runtime import preprocess as pp  # noqa: E402
from fna_zoo.runtime.machine import cpu_label, machine_info, machine_slug, package_version  # noqa: E402
from fna_zoo.runtime.timing import paired_ratio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEAN = (0.485, 0.456, 0.406)
Path_ = Callable[[str], Any]


def _reduce_then_resize(spec: pp.InputSpec) -> Path_:
    """PIL decode, `Image.reduce` by the largest integer factor that keeps the resized size, OpenCV resize."""
    def run(path: str) -> tuple[np.ndarray, tuple[float, float]]:
        im = pp.load_image(path)
        nh, nw, scale = pp._geometry(im.height, im.width, spec)
        k = max(1, min(im.width // nw, im.height // nh))
        small = im.reduce(k) if k > 1 else im
        arr = pp._to_float(np.asarray(small))
        return pp._place(pp.resize_bilinear(arr, (nh, nw), 'opencv'), spec), scale
    return run


def paths(spec: pp.InputSpec, jpeg: bool) -> dict[str, tuple[Path_, bool]]:
    """The timed paths of one file type: name -> (path -> network input or part, whether it gives the input)."""
    have = pp.fast_backends()
    out: dict[str, tuple[Path_, bool]] = {
        'reference: PIL decode + numpy resize': (
            lambda p: pp.resize_image(pp.load_image(p), spec, backend='numpy'), True),
        'default: load_input (fast decoder + OpenCV resize)': (lambda p: pp.load_input(p, spec), True),
        'PIL decode + OpenCV resize': (lambda p: pp.resize_image(pp.load_image(p), spec, backend='opencv'), True),
    }
    if have['opencv']:
        out['OpenCV decode + OpenCV resize'] = (lambda p: pp.load_input(p, spec, decoder='opencv'), True)
    if jpeg and have['simplejpeg']:
        out['simplejpeg decode + OpenCV resize'] = (lambda p: pp.load_input(p, spec, decoder='simplejpeg'), True)
    if not jpeg and have['spng']:
        out['pyspng decode + OpenCV resize'] = (lambda p: pp.load_input(p, spec, decoder='spng'), True)
    if jpeg:
        out['PIL draft + OpenCV resize (option)'] = (lambda p: pp.load_input(p, spec, decoder='pil', draft=True),
                                                     True)
        if have['opencv']:
            out['OpenCV reduced decode + resize (option)'] = (
                lambda p: pp.load_input(p, spec, decoder='opencv', draft=True), True)
        if have['simplejpeg']:
            out['simplejpeg draft + OpenCV resize (option)'] = (
                lambda p: pp.load_input(p, spec, decoder='simplejpeg', draft=True), True)
    out['PIL reduce + OpenCV resize (not offered)'] = (_reduce_then_resize(spec), True)
    out['decode only: PIL'] = (lambda p: pp.decode_image(p, 'pil'), False)
    if have['opencv']:
        out['decode only: OpenCV'] = (lambda p: pp.decode_image(p, 'opencv'), False)
    if jpeg and have['simplejpeg']:
        out['decode only: simplejpeg'] = (lambda p: pp.decode_image(p, 'simplejpeg'), False)
    if not jpeg and have['spng']:
        out['decode only: pyspng'] = (lambda p: pp.decode_image(p, 'spng'), False)
    if not jpeg:
        out.update({f'decode only: {name} (not offered)': (fn, False) for name, fn in _other_png_decoders().items()})
    return out


def _other_png_decoders() -> dict[str, Callable[[str], np.ndarray]]:
    """PNG decoders `load_input` does not use, where installed (none is a dependency): libpng through imagecodecs,
    and Wuffs (pywuffs; an sdist only, compiled at install), to show where the PNG decode floor is."""
    out: dict[str, Callable[[str], np.ndarray]] = {}
    try:
        import imagecodecs

        out['imagecodecs libpng'] = lambda p: imagecodecs.png_decode(Path(p).read_bytes())
    except ImportError:
        pass
    try:
        from pywuffs import ImageDecoderType, PixelFormat
        from pywuffs.aux import ImageDecoder, ImageDecoderConfig

        config = ImageDecoderConfig()
        config.enabled_decoders = [ImageDecoderType.PNG]
        config.pixel_format = PixelFormat.RGB  # contiguous RGB, as the other decoders return
        decoder = ImageDecoder(config)
        out['wuffs'] = lambda p: decoder.decode(Path(p).read_bytes()).pixbuf
    except ImportError:
        pass
    return out


def resize_only(spec: pp.InputSpec, decoded: dict[str, np.ndarray]) -> dict[str, tuple[Path_, bool]]:
    """Resize + scale of an already decoded image (numpy reference, OpenCV)."""
    return {f'resize + scale only: {b}': (lambda p, b=b: pp.resize_array(pp._to_float(decoded[p]), spec, b), False)
            for b in ('numpy', 'opencv')}


def measure(files: list[str], spec: pp.InputSpec, jpeg: bool, rounds: int, warmup: int) -> list[dict[str, Any]]:
    """Timings and numerics of every path on one set of files (interleaved: round, image, path)."""
    decoded = {f: pp.decode_image(f, 'pil')[0] for f in files}
    table = {**paths(spec, jpeg), **resize_only(spec, decoded)}
    names = list(table)
    ref_name = names[0]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for f in files:
            for n in names:
                tic = time.perf_counter()
                table[n][0](f)
                dt = time.perf_counter() - tic
                if r >= warmup:
                    times[n].append(dt)
    refs = {f: table[ref_name][0](f) for f in files}
    rows = []
    for n in names:
        ms = np.asarray(times[n]) * 1e3
        row: dict[str, Any] = {'path': n, 'images': len(files), 'samples': int(ms.size),
                               'p50_ms': float(np.median(ms)), 'p90_ms': float(np.percentile(ms, 90)),
                               'vs_reference': paired_ratio(times[n], times[ref_name])['ratio']}
        if table[n][1]:
            diffs, same_geometry = [], True
            for f in files:
                x, scale = table[n][0](f)
                d = np.abs(x - refs[f][0])
                diffs.append((float(d.max()), float(d.mean())))
                same_geometry &= scale == refs[f][1] and x.shape == refs[f][0].shape
            row.update(max_abs_diff=max(d[0] for d in diffs), mean_abs_diff=float(np.mean([d[1] for d in diffs])),
                       same_geometry=bool(same_geometry))
        rows.append(row)
    return rows


def image_sets(tmp: Path) -> dict[str, tuple[list[str], bool, str]]:
    """name -> (files, is JPEG, where they come from)."""
    trees = sorted(str(p) for p in (resolve_asset('asset:neon_trees') / 'val2017').glob('*.png'))
    jpegs = []
    for f in trees:
        dst = tmp / (Path(f).stem + '.jpg')
        Image.open(f).convert('RGB').save(dst, quality=90)
        jpegs.append(str(dst))
    photos = resolve_asset('asset:photos')
    big = sorted((resolve_asset('asset:neon_trees') / 'train2017').glob('*.png'))[:1]
    for f in big:  # NOTE: one large image, where a reduced JPEG decode applies (4x: 575 x 618 >= 298 x 320)
        Image.open(f).convert('RGB').save(tmp / 'large.jpg', quality=90)
    return {
        'tree tiles PNG': (trees, False, 'asset:neon_trees val2017, 400x400 RGB PNG'),
        'tree tiles JPEG': (jpegs, True, 'the same tiles saved by PIL as JPEG quality 90'),
        'photos PNG': (sorted(str(p) for p in photos.glob('*.png')), False, 'asset:photos, 300-600 px PNG'),
        'photos JPEG': (sorted(str(p) for p in photos.glob('*.jpg')), True, 'asset:photos, 427-640 px JPEG'),
        'large JPEG': ([str(tmp / 'large.jpg')] if big else [], True,
                       'the training tile of asset:neon_trees (2299x2472) saved as JPEG quality 90'),
    }


def report(result: dict[str, Any]) -> str:
    """The markdown table of a result."""
    m = result['machine']
    h, w = result['input_size']
    lines = [
        '# Pre-processing per library and file type',
        '',
        f"{result['command']}",
        '',
        f"{cpu_label(m)} ({m['cores']} cores, 1 thread, load {m['loadavg_1m']}); "
        + ', '.join(f'{k} {v}' for k, v in result['versions'].items() if v) + '. '
        f"Network input {h}x{w} letterbox, float32 [3, H, W] in [0, 1]. "
        f"{result['rounds']} rounds after {result['warmup']} warm-up rounds; per round every image through every path "
        'in turn. Absolute ms move with the machine\'s load (the load average above); the `x ref` column (median '
        'of per-image time ratios to the reference path, interleaved) is the comparison that holds under load.',
        '',
        '| images | path | p50 ms | p90 ms | x ref | max abs diff | mean abs diff | same geometry |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name, s in result['sets'].items():
        for r in s['rows']:
            diff = (f"{r['max_abs_diff']:.2g}", f"{r['mean_abs_diff']:.2g}", 'yes' if r['same_geometry'] else 'NO') \
                if 'max_abs_diff' in r else ('-', '-', '-')
            lines.append(f"| {name} | {r['path']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                         f"{r['vs_reference']:.3f} | {' | '.join(diff)} |")
    lines += [
        '',
        '- images: ' + '; '.join(f"{k}: {v['source']} ({v['images']} files)" for k, v in result['sets'].items())
        + '. The tree tiles are PNG (no TIFF in the data), so TIFF is not measured.',
        '- reference: `resize_image(load_image(path), spec, backend=\'numpy\')`, the pre-processing before issue 30 '
        '(PIL decode, the numpy emulation of torch\'s bilinear kernel, within 8e-6 of `F.interpolate`).',
        '- default: `load_input(path, spec)`; simplejpeg for RGB JPEGs, pyspng for RGB PNGs (else OpenCV; the '
        'same pixels as PIL), OpenCV\'s float32 INTER_LINEAR resize. Its difference from the reference is float '
        'rounding of the source positions (1 ulp where the scale is exact, 400 -> 320; at most 5e-5 = 1/80 of one '
        '8-bit level otherwise).',
        '- (option): reduced JPEG decodes (`load_input(draft=True)`) decode at 1/2, 1/4 or 1/8 when the resized '
        'image is at most half the file\'s size; other pixels (the diff columns), the same letterbox size and '
        'scale (boxes map back to the full image). PIL reduce: integer box filter before the resize, not offered.',
        '- decode only / resize + scale only: the parts of the path (resize + scale: an already decoded image '
        'to the network input). (not offered): PNG decoders load_input does not use, rows only where installed '
        '(imagecodecs\' libpng; Wuffs through pywuffs).',
    ]
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> None:
    p = CliParser(description='Time decode + resize to the network input per library and file type.')
    p.add_argument('--size', type=int, nargs=2, default=[320, 320], metavar=('H', 'W'))
    p.add_argument('--rounds', type=int, default=12)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('-o', '--output', default=None, help='folder (default: benchmarks/results/<machine>)')
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        raise ValueError(f'--rounds {args.rounds} / --warmup {args.warmup}; expected >= 1 / >= 0')
    if pp.fast_backends()['opencv']:
        import cv2

        cv2.setNumThreads(1)
    spec = pp.InputSpec((args.size[0], args.size[1]), 'letterbox', MEAN)
    info = machine_info(threads=1)
    out = Path(args.output) if args.output else ROOT / 'benchmarks' / 'results' / machine_slug(info)

    result: dict[str, Any] = {
        'command': 'HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/preprocess_bench.py '
                   + ' '.join(argv if argv is not None else sys.argv[1:]),
        'machine': info, 'input_size': list(spec.size), 'resize': spec.resize, 'rounds': args.rounds,
        'warmup': args.warmup,
        'versions': {'numpy': np.__version__, 'Pillow': package_version('PIL'), 'opencv': package_version('cv2'),
                     'simplejpeg': package_version('simplejpeg'), 'pyspng': package_version('pyspng'),
                     'imagecodecs': package_version('imagecodecs'), 'pywuffs': package_version('pywuffs')},
        'sets': {},
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (files, jpeg, source) in image_sets(Path(tmp)).items():
            if not files:
                continue
            rows = measure(files, spec, jpeg, args.rounds, args.warmup)
            result['sets'][name] = {'source': source, 'images': len(files), 'rows': rows}
            print(f'{name}: {len(files)} images, {time.perf_counter() - start:.0f} s')
    result['seconds'] = round(time.perf_counter() - start, 1)
    text = report(result)
    atomic_write_text(out / 'preprocess.json', json.dumps(result, indent=1) + '\n')
    atomic_write_text(out / 'preprocess.md', text)
    print(text)
    print(f'-> {portable_path(out / "preprocess.md", ROOT)}')


if __name__ == '__main__':
    sys.exit(run_cli(main))

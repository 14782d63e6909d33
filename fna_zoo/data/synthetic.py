"""A built-in COCO-format detection set, generated on the fly, so everything runs with no download.

Images show objects of several classes (a shape with its own colour family) at varied scales and
positions on cluttered backgrounds (gradients, noise, lines and grey distractor blobs), with exact boxes.
The layout is a COCO tree: `annotations/instances_{train2017,val2017}.json`, `train2017/`, `val2017/`.

Each combination of settings is its own set, in a subfolder of `data.synthetic.root` named by a short hash of the
settings (`<root>/<hash>/`, its `.done` marker records them): a job with other settings builds beside, never over,
the set another job is reading, and a set is never deleted (remove unused `<root>/<hash>/` folders by hand).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..fileio import atomic_dir, atomic_write_text

__all__ = ['CLASSES', 'make_synthetic_coco', 'synthetic_set_path']

_logger = logging.getLogger(__name__)

# name, shape, base colour (RGB)
CLASSES = (
    ('red_disc', 'ellipse', (220, 40, 40)),
    ('green_square', 'rectangle', (40, 200, 60)),
    ('blue_triangle', 'triangle', (40, 70, 230)),
    ('yellow_cross', 'cross', (235, 215, 30)),
    ('magenta_ring', 'ring', (210, 50, 210)),
    ('cyan_diamond', 'diamond', (30, 210, 220)),
)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    gx, gy = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size))
    base = rng.uniform(40, 200, 3)[None, None] + rng.uniform(-60, 60, 3)[None, None] * (gx + gy)[..., None] / 2
    img = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):  # clutter: lines and grey blobs of any size
        g = int(rng.integers(60, 200))
        pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2)]
        d.line(pts, fill=(g, g, g), width=int(rng.integers(1, 4)))
        c = rng.integers(0, size, 2)
        r = int(rng.integers(3, 14))
        d.ellipse([int(c[0]) - r, int(c[1]) - r, int(c[0]) + r, int(c[1]) + r], fill=(g, g, g))
    return im


def _draw(d: ImageDraw.ImageDraw, shape: str, box: list[int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == 'ellipse':
        d.ellipse(box, fill=colour)
    elif shape == 'rectangle':
        d.rectangle(box, fill=colour)
    elif shape == 'triangle':
        d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == 'diamond':
        d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == 'cross':
        tw, th = (x1 - x0) / 3, (y1 - y0) / 3
        d.rectangle([x0, cy - th / 2, x1, cy + th / 2], fill=colour)
        d.rectangle([cx - tw / 2, y0, cx + tw / 2, y1], fill=colour)
    elif shape == 'ring':
        t = max(2, (x1 - x0) // 5)
        d.ellipse(box, outline=colour, width=t)


def _write_split(root: Path, split: str, num_images: int, image_size: int, num_classes: int,
                 rng: np.random.Generator) -> None:
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    lo, hi = max(12, image_size // 7), max(16, image_size // 2)
    for i in range(num_images):
        im = _background(rng, image_size)
        d = ImageDraw.Draw(im)
        placed: list[list[int]] = []
        for _ in range(int(rng.integers(1, 5))):
            for _try in range(20):  # avoid heavy overlaps so every box is visible
                w, h = (int(v) for v in rng.integers(lo, hi, 2))
                x0, y0 = int(rng.integers(0, image_size - w)), int(rng.integers(0, image_size - h))
                box = [x0, y0, x0 + w, y0 + h]
                if all(min(box[2], p[2]) - max(box[0], p[0]) <= 0 or min(box[3], p[3]) - max(box[1], p[1]) <= 0
                       for p in placed):
                    break
            else:
                continue
            label = int(rng.integers(0, num_classes))
            _, shape, colour = CLASSES[label]
            jitter = np.clip(np.array(colour) + rng.integers(-25, 26, 3), 0, 255)
            _draw(d, shape, box, tuple(int(c) for c in jitter))
            placed.append(box)
            # PIL fills [x0, x1] inclusive: the object covers x0..x1, a COCO box of width w + 1
            annotations.append({'id': len(annotations) + 1, 'image_id': i + 1, 'category_id': label + 1,
                                'bbox': [x0, y0, w + 1, h + 1], 'area': float((w + 1) * (h + 1)), 'iscrowd': 0})
        name = f'{i + 1:06d}.png'
        im.save(img_dir / name)
        images.append({'id': i + 1, 'file_name': name, 'width': image_size, 'height': image_size})
    categories = [{'id': k + 1, 'name': CLASSES[k][0], 'supercategory': 'shape'} for k in range(num_classes)]
    atomic_write_text(root / 'annotations' / f'instances_{split}.json',
                      json.dumps({'images': images, 'annotations': annotations, 'categories': categories}))


# NOTE: marks a folder of built-in sets (one subfolder per settings), so it is never taken for a user's folder
CONTAINER_MARKER = '.fna_synthetic_sets'
_MARKER_TEXT = 'built-in synthetic sets of fna_zoo: one folder per settings, named by their hash (see its .done)\n'


def _stamp(num_train: int, num_val: int, image_size: int, num_classes: int, seed: int) -> str:
    """The settings as recorded in a set's `.done` (version 1: sets written before the hashed folders read the same)."""
    return json.dumps(dict(num_train=num_train, num_val=num_val, image_size=image_size, num_classes=num_classes,
                           seed=seed, version=1))


def _is_set(folder: Path, stamp: str) -> bool:
    """Whether `folder` holds a complete built-in set of these settings."""
    done = folder / '.done'
    try:
        return done.is_file() and done.read_text() == stamp
    except (OSError, UnicodeDecodeError):
        return False


def synthetic_set_path(root: str | os.PathLike, num_train: int = 400, num_val: int = 100, image_size: int = 128,
                       num_classes: int = 6, seed: int = 0) -> Path:
    """The folder `make_synthetic_coco` uses for these settings (nothing is written): `root` itself when it is a set
    of them (a set folder passed back in, or one written before the hashed folders), else `<root>/<hash>`.

    Args:
        root: `data.synthetic.root`.
        num_train: Training images.
        num_val: Validation images.
        image_size: Square image side in pixels.
        num_classes: Object classes.
        seed: Random seed.
    """
    root = Path(root)
    stamp = _stamp(num_train, num_val, image_size, num_classes, seed)
    if _is_set(root, stamp):
        return root
    return root / hashlib.sha256(stamp.encode()).hexdigest()[:12]


def make_synthetic_coco(root: str | os.PathLike, num_train: int = 400, num_val: int = 100, image_size: int = 128,
                        num_classes: int = 6, seed: int = 0) -> Path:
    """Write the built-in dataset for these settings under `root`, or reuse it; returns the COCO tree's folder.

    The set is `synthetic_set_path(root, ...)`: `<root>/<hash of the settings>/`, built in a temp folder and renamed
    into place whole, so other settings never touch a set another job reads; an existing complete set is reused.

    Args:
        root: Folder of built-in sets (`data.synthetic.root`): new, empty, or written by this function; a non-empty
            folder of other files is refused (FileExistsError), never changed.
        num_train: Training images.
        num_val: Validation images.
        image_size: Square image side in pixels.
        num_classes: Object classes (at most `len(CLASSES)`).
        seed: Random seed.
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f'synthetic num_classes is {num_classes}; expected 1..{len(CLASSES)}')
    root = Path(root)
    stamp = _stamp(num_train, num_val, image_size, num_classes, seed)
    target = synthetic_set_path(root, num_train, num_val, image_size, num_classes, seed)
    if _is_set(target, stamp):
        return target
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f'data.synthetic.root {str(root)!r} is a file; expected a folder for the built-in set')
    # NOTE: never touch what the project did not create: a folder holding neither the sets' marker nor a set (one
    # written before the hashed folders has a .done) must be empty
    ours = (root / CONTAINER_MARKER).is_file() or (root / '.done').is_file()
    if root.is_dir() and not ours and any(root.iterdir()):
        raise FileExistsError(f'data.synthetic.root {str(root)!r} is not empty and holds no built-in set (no '
                              f'{CONTAINER_MARKER} or .done marker); expected a new or empty folder, or one the built-in '
                              'set was written to')
    if target.exists():
        raise FileExistsError(f'built-in set folder {str(target)!r} exists but holds no complete set of these settings '
                              '(no matching .done); expected it absent (remove it to have it rebuilt)')
    root.mkdir(parents=True, exist_ok=True)
    if not (root / CONTAINER_MARKER).is_file():
        # NOTE: written in place (not temp + rename), first: concurrent jobs then never see the folder non-empty
        # without its marker; they write the same text
        (root / CONTAINER_MARKER).write_text(_MARKER_TEXT)
    _logger.info('writing the built-in synthetic dataset to %s', target)
    rng = np.random.default_rng(seed)
    try:
        with atomic_dir(target) as tmp:
            _write_split(tmp, 'train2017', num_train, image_size, num_classes, rng)
            _write_split(tmp, 'val2017', num_val, image_size, num_classes, rng)
            atomic_write_text(tmp / '.done', stamp)
    except OSError:
        if _is_set(target, stamp):  # another job built the same set meanwhile (its rename came first)
            return target
        raise
    return target

"""Pascal-VOC XML annotations to a COCO-format split, whole images or fixed tiles.

VOC boxes are read as pixel edges (`xmin`..`xmax`, no +1), as DeepForest and most VOC exporters write them;
a COCO box is then `[xmin, ymin, xmax - xmin, ymax - ymin]`. Tiles follow the cut-box rule of
`fna_zoo.data.crops` (clipped, kept when at least half visible).
"""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..checks import check_input_file
from ..fileio import atomic_write_text
from .crops import MIN_VISIBLE, crop_boxes, tile_windows

__all__ = ['VocAnnotation', 'read_voc', 'voc_to_coco']


@dataclass(frozen=True)
class VocAnnotation:
    """The objects of one image of a Pascal-VOC XML file.

    Args:
        filename: The image file name the XML names.
        width: Image width in pixels.
        height: Image height in pixels.
        boxes: (xmin, ymin, xmax, ymax) per object, pixel edges.
        names: Class name per object.
    """
    filename: str
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    names: tuple[str, ...]


def read_voc(path: str | os.PathLike) -> VocAnnotation:
    """Read one Pascal-VOC XML file.

    Args:
        path: The XML file.

    Raises:
        ValueError: Malformed XML or a missing or non-numeric field, naming the file and the field.
    """
    path = check_input_file(path, 'VOC annotation file', 'a Pascal VOC .xml file')
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f'malformed VOC annotation file {str(path)!r}: {e}') from None

    def text(node: ET.Element, tag: str) -> str:
        child = node.find(tag)
        if child is None or child.text is None or not child.text.strip():
            raise ValueError(f'VOC annotation file {str(path)!r} lacks <{tag}>; expected a Pascal-VOC annotation')
        return child.text.strip()

    def number(node: ET.Element, tag: str) -> float:
        value = text(node, tag)
        try:
            return float(value)
        except ValueError:
            raise ValueError(f'VOC annotation file {str(path)!r}: <{tag}> is {value!r}; expected a number') from None

    size = root.find('size')
    if size is None:
        raise ValueError(f'VOC annotation file {str(path)!r} lacks <size>; expected a Pascal-VOC annotation')
    boxes, names = [], []
    for obj in root.iter('object'):
        bb = obj.find('bndbox')
        if bb is None:
            raise ValueError(f'VOC annotation file {str(path)!r} has an <object> without <bndbox>')
        box = tuple(number(bb, k) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f'VOC annotation file {str(path)!r} has an empty box {box}; expected xmax > xmin, '
                             'ymax > ymin')
        boxes.append(box)
        names.append(text(obj, 'name'))
    return VocAnnotation(text(root, 'filename'), int(number(size, 'width')), int(number(size, 'height')),
                         tuple(boxes), tuple(names))


def voc_to_coco(items: Sequence[tuple[str | os.PathLike, VocAnnotation]], root: str | os.PathLike, split: str,
                tile: int | None = None, category: str | None = None, min_visible: float = MIN_VISIBLE,
                first_image_id: int = 1) -> dict[str, int]:
    """Write images and their VOC boxes as one split of a COCO tree: `root/<split>/`,
    `root/annotations/instances_<split>.json`; returns counts (images, boxes).

    Args:
        items: (image file, its annotation) pairs.
        root: The COCO tree root.
        split: Split name, e.g. 'train2017'.
        tile: Cut each image into fixed tiles of this side (see `fna_zoo.data.crops.tile_windows`);
            None: copy whole images.
        category: Put every object in this one category; None: one category per VOC class name (sorted).
        min_visible: Share of a box that must lie inside a tile to keep it (the cut-box rule).
        first_image_id: COCO id of the first image (keep ids distinct across splits).
    """
    root = Path(root)
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    names = [category] if category else sorted({n for _, ann in items for n in ann.names})
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images: list[dict] = []
    annotations: list[dict] = []
    for image_path, ann in items:
        image_path = Path(image_path)
        with Image.open(image_path) as im:
            if im.size != (ann.width, ann.height):
                raise ValueError(f'image {str(image_path)!r} is {im.size[0]}x{im.size[1]}, its annotation says '
                                 f'{ann.width}x{ann.height}; expected them to agree')
            rgb = im.convert('RGB') if tile else None
        boxes = torch.tensor(ann.boxes, dtype=torch.float64).reshape(-1, 4)
        labels = [cat_id[category or n] for n in ann.names]
        windows = tile_windows(ann.width, ann.height, tile) if tile else [(0, 0, ann.width, ann.height)]
        for window in windows:
            image_id = first_image_id + len(images)
            if tile:
                name = f'{image_path.stem}_x{window[0]}_y{window[1]}.png'
                rgb.crop(window).save(img_dir / name)
            else:
                name = image_path.name
                shutil.copyfile(image_path, img_dir / name)
            kept, keep = crop_boxes(boxes, window, min_visible)
            images.append({'id': image_id, 'file_name': name, 'width': window[2] - window[0],
                           'height': window[3] - window[1], 'source': image_path.name, 'window': list(window)})
            for box, k in zip(kept.tolist(), keep.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': labels[k],
                                    'bbox': [round(v, 2) for v in (box[0], box[1], w, h)],
                                    'area': round(w * h, 2), 'iscrowd': 0})
    categories = [{'id': i, 'name': n, 'supercategory': 'object'} for n, i in cat_id.items()]
    atomic_write_text(root / 'annotations' / f'instances_{split}.json',
                      json.dumps({'images': images, 'annotations': annotations, 'categories': categories}))
    return {'images': len(images), 'boxes': len(annotations)}

"""COCO-format detection data: a dataset over `instances_*.json` + an image folder, and the COCO tree layout."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ..checks import check_input_file, check_input_folder

__all__ = ['CocoDetection', 'coco_split_paths', 'collate', 'check_coco']

_logger = logging.getLogger(__name__)


def coco_split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a split in a COCO tree: `annotations/instances_{split}.json`, `{split}/`.

    Args:
        root: The COCO root folder.
        split: e.g. 'train2017' or 'val2017'.
    """
    root = check_input_folder(root, 'data folder', 'a COCO tree (annotations/instances_<split>.json, <split>/)')
    return root / 'annotations' / f'instances_{split}.json', root / split


def collate(batch: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """Detection collate: lists of images and targets (images may differ in size)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_coco(data: dict[str, Any], ann_file: str | os.PathLike) -> None:
    """Check the entries of a COCO annotation dict, naming the first bad one with its index (one line).

    Args:
        data: The parsed `instances_*.json` (with `images`, `annotations`, `categories` lists).
        ann_file: Its path, for the message.
    """
    where = f'annotation file {str(ann_file)!r}'
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data[key], list):
            raise ValueError(f'{where}: {key} is {type(data[key]).__name__}; expected a list')
    for i, c in enumerate(data['categories']):
        if not isinstance(c, dict) or not isinstance(c.get('id'), int) or isinstance(c.get('id'), bool):
            raise ValueError(f'{where}: categories[{i}] is {str(c)[:80]}; expected {{"id": <int>, "name": ...}}')
    for i, im in enumerate(data['images']):
        if (not isinstance(im, dict) or not isinstance(im.get('id'), int) or isinstance(im.get('id'), bool)
                or not isinstance(im.get('file_name'), str)):
            raise ValueError(f'{where}: images[{i}] is {str(im)[:80]}; expected {{"id": <int>, "file_name": <str>}}')
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data['images']):
        if im['id'] in images:
            raise ValueError(f"{where}: images[{i}] has id {im['id']}, as an earlier image; expected unique image ids")
        for side in ('width', 'height'):
            if side in im and not (_number(im[side]) and math.isfinite(im[side]) and im[side] > 0):
                raise ValueError(f'{where}: images[{i}] has {side} {im[side]!r}; expected a positive number of pixels')
        images[im['id']] = im
    cats = {c['id'] for c in data['categories']}
    for i, a in enumerate(data['annotations']):
        if not isinstance(a, dict) or 'image_id' not in a:
            raise ValueError(f'{where}: annotations[{i}] is {str(a)[:80]}; expected an object with image_id, '
                             'category_id and bbox')
        box = a.get('bbox')
        if (not isinstance(box, list) or len(box) != 4 or not all(_number(v) and math.isfinite(v) for v in box)
                or box[2] < 0 or box[3] < 0):
            raise ValueError(f'{where}: annotations[{i}] has bbox {box!r}; expected [x, y, width, height], '
                             'four finite numbers, width and height >= 0')
        if a.get('category_id') not in cats:
            raise ValueError(f'{where}: annotations[{i}] has category_id {a.get("category_id")!r}; expected one of '
                             f'the categories {sorted(cats)[:10]}')
        im = images.get(a['image_id'])
        if im is None:
            raise ValueError(f"{where}: annotations[{i}] has image_id {a['image_id']!r}; expected the id of one of "
                             'the images')
        x, y, w, h = box
        if 'width' in im and 'height' in im and (x >= im['width'] or y >= im['height'] or x + w <= 0 or y + h <= 0):
            raise ValueError(f"{where}: annotations[{i}] has bbox {box!r}, outside its image {a['image_id']} "
                             f"({im['width']} x {im['height']}); expected a box inside the image")


class CocoDetection(Dataset):
    """Images and boxes of a COCO-format annotation file.

    Items are `(image, target)`: a float image (3, H, W) in [0, 1] and `{'boxes': (N, 4) xyxy float,
    'labels': (N,) int64 in 0..num_classes-1, 'image_id': int}`. Labels index the sorted category ids
    (`label_to_cat` maps them back for COCO evaluation). Crowd boxes are left out.

    Args:
        ann_file: COCO `instances_*.json`.
        img_dir: Folder with the images (`file_name` of each image entry is relative to it).
        transforms: torchvision.transforms.v2 transform applied to (uint8 image, target).
        train: Keep only images with at least one usable box.
    """

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike,
                 transforms: Callable | None = None, train: bool = False) -> None:
        self.ann_file, self.img_dir = Path(ann_file), Path(img_dir)
        check_input_file(self.ann_file, 'annotation file', 'a COCO json file')
        check_input_folder(self.img_dir, 'image folder', "the folder of the split's images")
        try:
            data = json.loads(self.ann_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f'malformed annotation file {str(self.ann_file)!r}: {e}') from None
        except RecursionError:  # NOTE: the json parser recurses into nested lists
            raise ValueError(f'annotation file {str(self.ann_file)!r} is nested too deeply to parse; expected a COCO '
                             'json object (images, annotations, categories)') from None
        missing = [k for k in ('images', 'annotations', 'categories') if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(f'malformed annotation file {str(self.ann_file)!r}: missing {missing}; '
                             'expected COCO keys images, annotations, categories')
        if not data['images'] or not data['categories']:
            raise ValueError(f'annotation file {str(self.ann_file)!r} has no images or no categories')
        check_coco(data, self.ann_file)
        self.transforms = transforms
        self.cat_ids = sorted(c['id'] for c in data['categories'])
        self.cat_names = {c['id']: c.get('name', str(c['id'])) for c in data['categories']}
        self.label_to_cat = dict(enumerate(self.cat_ids))
        cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        self.images = {im['id']: im for im in data['images']}
        self.boxes: dict[int, list[tuple[list[float], int]]] = {i: [] for i in self.images}
        for a in data['annotations']:
            if a.get('iscrowd', 0) or a['image_id'] not in self.boxes:
                continue
            x, y, w, h = a['bbox']
            if w > 1 and h > 1:
                self.boxes[a['image_id']].append(([x, y, x + w, y + h], cat_to_label[a['category_id']]))
        self.ids = sorted(i for i in self.images if not train or self.boxes[i])
        if not self.ids:
            raise ValueError(f'annotation file {str(self.ann_file)!r} has no images with boxes to train on')
        absent = [self.images[i]['file_name'] for i in self.ids
                  if not (self.img_dir / self.images[i]['file_name']).is_file()]
        if absent:
            raise FileNotFoundError(f'{len(absent)} images of {str(self.ann_file)!r} are missing from '
                                    f'{str(self.img_dir)!r}, e.g. {absent[0]!r}')

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        target['boxes'] = target['boxes'].as_subclass(torch.Tensor)
        return F.to_dtype(image, torch.float32, scale=True).as_subclass(torch.Tensor), target

    def check_images(self) -> None:
        """Decode every image once and drop it: an image that cannot be decoded fails now, with the one-line error
        of `load`, so a command can read all of its data before it opens any output."""
        for index in range(len(self.ids)):
            self.load(index)

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The `index`-th image as decoded (uint8 `tv_tensors.Image`) and its target, before any transform.

        Args:
            index: Position in the dataset (not the COCO image id).
        """
        image_id = self.ids[index]
        path = self.img_dir / self.images[image_id]['file_name']
        try:
            with Image.open(path) as im:
                image = tv_tensors.Image(F.pil_to_tensor(im.convert('RGB')))
        except FileNotFoundError:
            raise FileNotFoundError(f'image {str(path)!r} (image id {image_id}) does not exist') from None
        except (OSError, Image.DecompressionBombError, ValueError) as e:  # not an image, truncated, too large
            raise ValueError(f'image {str(path)!r} (image id {image_id}) cannot be decoded ({type(e).__name__}: '
                             f'{" ".join(str(e).split())[:120]}); expected a readable PNG/JPEG image') from None
        entries = self.boxes[image_id]
        boxes = torch.tensor([b for b, _ in entries], dtype=torch.float32).reshape(-1, 4)
        target = {
            'boxes': tv_tensors.BoundingBoxes(boxes, format='XYXY', canvas_size=tuple(image.shape[-2:])),
            'labels': torch.tensor([lab for _, lab in entries], dtype=torch.int64),
            'image_id': image_id,
        }
        return image, target

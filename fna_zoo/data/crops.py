"""Windows of large images: random training crops and fixed evaluation tiles, with one rule for cut boxes.

Aerial and remote-sensing images (the tree-crown set of `fna_zoo.assets`) are far larger than a detector's
input. Training samples random windows of them, so a few hundred boxes give many different views (the
object's position relative to the window edges and to the anchors changes every time); evaluation uses
fixed tiles, so AP is comparable between runs.

The rule for a box cut by a window edge (the same for crops and tiles): the box is clipped to the window
and kept when at least `min_visible` (default half) of its area lies inside; otherwise it is dropped.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .coco import CocoDetection

__all__ = ['MIN_VISIBLE', 'crop_boxes', 'tile_windows', 'RandomCrops']

MIN_VISIBLE = 0.5
Window = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixel edges, x1/y1 exclusive)


def crop_boxes(boxes: torch.Tensor, window: Window,
               min_visible: float = MIN_VISIBLE) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes seen through a window: (boxes clipped and shifted to window coordinates, indices kept).

    Args:
        boxes: (N, 4) xyxy boxes in image coordinates.
        window: (x0, y0, x1, y1) of the window in the image.
        min_visible: Keep a box when at least this share of its area is inside the window (0 < v <= 1).
    """
    if not 0 < min_visible <= 1:
        raise ValueError(f'min_visible is {min_visible}; expected a share in (0, 1]')
    x0, y0, x1, y1 = window
    boxes = boxes.reshape(-1, 4).float()
    clipped = torch.stack([boxes[:, 0].clamp(x0, x1), boxes[:, 1].clamp(y0, y1),
                           boxes[:, 2].clamp(x0, x1), boxes[:, 3].clamp(y0, y1)], 1)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    # NOTE: a relative tolerance, so a box exactly half inside is kept whatever the float rounding
    keep = torch.nonzero((inside > 0) & (inside >= min_visible * area * (1 - 1e-6))).flatten()
    shift = torch.tensor([x0, y0, x0, y0], dtype=clipped.dtype)
    return clipped[keep] - shift, keep


def tile_windows(width: int, height: int, tile: int) -> list[Window]:
    """Fixed tiles covering an image: ceil(side / tile) per side, spread evenly so the last one ends at the
    edge (neighbours overlap a little instead of a thin last tile); an image smaller than `tile` is one tile.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        tile: Tile side in pixels.
    """
    if tile < 1:
        raise ValueError(f'tile size is {tile}; expected a positive number of pixels')

    def starts(side: int) -> list[int]:
        if side <= tile:
            return [0]
        n = math.ceil(side / tile)
        return [round(i * (side - tile) / (n - 1)) for i in range(n)]

    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in starts(height) for x in starts(width)]


class RandomCrops(Dataset):
    """Random square windows of a COCO-format dataset's images, `crops_per_image` per image and epoch.

    Each item decodes (or takes from memory) one image, picks a window uniformly at random (torch's global
    RNG, as the flip transforms: runs are reproducible, and a resumed run with `data.workers: 0` continues
    exactly), applies the cut-box rule of this module, then the `transforms` (e.g. a flip). A side shorter than
    `size` is taken whole.

    Args:
        dataset: The images and boxes (its own transforms are not used).
        size: Window side in pixels.
        crops_per_image: Items per image in one pass over the dataset (its "epoch").
        transforms: torchvision.transforms.v2 transform applied to (uint8 window, target) after the crop.
        min_visible: The cut-box rule, see `crop_boxes`.
        cache_images: Keep decoded images in memory (a 2300x2500 RGB image is 17 MB; decoding it takes
            longer than a crop).
        scale: (low, high): the window side is `size` times a factor drawn uniformly from this range. The
            detector resizes every window to its input size, so this is scale jitter (objects appear up to
            1/low larger or 1/high smaller than at `size`).
    """

    def __init__(self, dataset: CocoDetection, size: int, crops_per_image: int = 1, transforms: Callable | None = None,
                 min_visible: float = MIN_VISIBLE, cache_images: bool = True,
                 scale: tuple[float, float] = (1.0, 1.0)) -> None:
        if size < 1 or crops_per_image < 1:
            raise ValueError(f'random crops of size {size}, {crops_per_image} per image; expected positive integers')
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f'crop scale range is {list(scale)}; expected [low, high] with 0 < low <= high')
        self.scale = (float(scale[0]), float(scale[1]))
        if not 0 < min_visible <= 1:
            raise ValueError(f'min_visible is {min_visible}; expected a share in (0, 1]')
        self.dataset, self.size, self.crops_per_image = dataset, size, crops_per_image
        self.transforms, self.min_visible, self.cache_images = transforms, min_visible, cache_images
        self._cache: dict[int, tuple[tv_tensors.Image, dict[str, Any]]] = {}

    @property
    def cat_ids(self) -> list[int]:
        """The COCO category ids of the labels (those of the wrapped dataset)."""
        return self.dataset.cat_ids

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def __len__(self) -> int:
        return len(self.dataset) * self.crops_per_image

    def _load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        if index in self._cache:
            return self._cache[index]
        item = self.dataset.load(index)
        if self.cache_images:
            self._cache[index] = item
        return item

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self._load(index // self.crops_per_image)
        h, w = image.shape[-2:]
        size = self.size
        if self.scale != (1.0, 1.0):
            low, high = self.scale
            size = max(1, round(self.size * (low + (high - low) * float(torch.rand(())))))
        cw, ch = min(size, w), min(size, h)
        x0 = int(torch.randint(0, w - cw + 1, ()).item())
        y0 = int(torch.randint(0, h - ch + 1, ()).item())
        boxes, keep = crop_boxes(target['boxes'].as_subclass(torch.Tensor), (x0, y0, x0 + cw, y0 + ch),
                                 self.min_visible)
        window = tv_tensors.Image(F.crop(image.as_subclass(torch.Tensor), y0, x0, ch, cw))
        out = {**target, 'labels': target['labels'][keep],
               'boxes': tv_tensors.BoundingBoxes(boxes, format='XYXY', canvas_size=(ch, cw))}
        if self.transforms is not None:
            window, out = self.transforms(window, out)
        out['boxes'] = out['boxes'].as_subclass(torch.Tensor)
        return F.to_dtype(window, torch.float32, scale=True).as_subclass(torch.Tensor), out

"""Training augmentation as in FNA: flip for RetinaNet; SSD photometric distortion, expand and IoU crop for SSDLite.

Resizing is done by the torchvision detector itself (keep-ratio to min/max size for RetinaNet, fixed
320x320 for SSDLite), so the dataset keeps original resolutions and boxes stay in image coordinates.
"""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ['train_transforms']


def train_transforms(detector: str) -> v2.Transform:
    """Training transforms of a detector ('retinanet' or 'ssdlite').

    Args:
        detector: The detector name.
    """
    if detector == 'retinanet':
        return v2.RandomHorizontalFlip(0.5)
    if detector == 'ssdlite':
        fill = [round(255 * m) for m in IMAGENET_DEFAULT_MEAN]
        return v2.Compose([
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: fill, 'others': 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(0.5),
            v2.SanitizeBoundingBoxes(),
        ])
    raise ValueError(f"unknown detector {detector!r}; expected 'retinanet' or 'ssdlite'")

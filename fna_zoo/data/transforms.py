"""Training augmentation as in FNA: flip for RetinaNet; SSD photometric distortion, expand and IoU crop for SSDLite.

The flips are a choice (`augment`): FNA's horizontal flip, or the dihedral group (flips both ways and quarter
turns), the usual augmentation for aerial and remote-sensing images, whose objects have no up (DeepForest,
Weinstein et al. 2020, trains tree crowns so).

Resizing is done by the torchvision detector itself (keep-ratio to min/max size for RetinaNet, fixed
320x320 for SSDLite), so the dataset keeps original resolutions and boxes stay in image coordinates.
"""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ['AUGMENTS', 'flips', 'train_transforms']


AUGMENTS = ('flip', 'dihedral', 'none')


def flips(augment: str = 'flip') -> list[v2.Transform]:
    """The flip transforms of an `augment` choice.

    Args:
        augment: 'flip' (horizontal, p 0.5), 'dihedral' (horizontal and vertical flips, then a quarter turn
            with p 0.5: each of the 8 symmetries of the square equally likely) or 'none'.
    """
    if augment not in AUGMENTS:
        raise ValueError(f'augment is {augment!r}; expected one of {", ".join(AUGMENTS)}')
    if augment == 'none':
        return []
    if augment == 'flip':
        return [v2.RandomHorizontalFlip(0.5)]
    return [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5),
            v2.RandomApply([v2.RandomRotation((90, 90), expand=True)], p=0.5)]


def train_transforms(detector: str, augment: str = 'flip', color_jitter: bool = False) -> v2.Transform:
    """Training transforms of a detector ('retinanet' or 'ssdlite').

    Args:
        detector: The detector name.
        augment: The flips (`flips`).
        color_jitter: RetinaNet: SSD's photometric distortion (brightness, contrast, saturation, hue; p 0.5)
            before the flips (SSDLite always has it).
    """
    if detector == 'retinanet':
        return v2.Compose(([v2.RandomPhotometricDistort(p=0.5)] if color_jitter else []) + flips(augment))
    if detector == 'ssdlite':
        fill = [round(255 * m) for m in IMAGENET_DEFAULT_MEAN]
        return v2.Compose([
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: fill, 'others': 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            *flips(augment),
            v2.SanitizeBoundingBoxes(),
        ])
    raise ValueError(f"unknown detector {detector!r}; expected 'retinanet' or 'ssdlite'")

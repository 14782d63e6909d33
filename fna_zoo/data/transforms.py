"""Training augmentation as in FNA: flip for RetinaNet; SSD photometric distortion, expand and IoU crop for SSDLite.

A detector names its recipe (`DetectorSpec.train_recipe`, one of `TRAIN_RECIPES`): 'plain' (flips, optionally SSD's
photometric distortion; FNA's RetinaNet) or 'ssd' (photometric distortion, zoom out, IoU crop, flips; FNA's SSDLite).
The flips are a choice (`augment`): FNA's horizontal flip, or the dihedral group (flips both ways and quarter
turns), the usual augmentation for aerial and remote-sensing images, whose objects have no up (DeepForest,
Weinstein et al. 2020, trains tree crowns so).

Resizing is done by the torchvision detector itself (keep-ratio to min/max size for RetinaNet, fixed
320x320 for SSDLite), so the dataset keeps original resolutions and boxes stay in image coordinates.
"""
from __future__ import annotations

from typing import Callable

from timm.data import IMAGENET_DEFAULT_MEAN
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ['AUGMENTS', 'TRAIN_RECIPES', 'flips', 'plain_transforms', 'ssd_transforms', 'train_transforms']


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


def plain_transforms(augment: str = 'flip', color_jitter: bool = False) -> v2.Transform:
    """FNA's RetinaNet augmentation: the flips, after SSD's photometric distortion when `color_jitter`.

    Args:
        augment: The flips (`flips`).
        color_jitter: SSD's photometric distortion (brightness, contrast, saturation, hue; p 0.5) first.
    """
    return v2.Compose(([v2.RandomPhotometricDistort(p=0.5)] if color_jitter else []) + flips(augment))


def ssd_transforms(augment: str = 'flip', color_jitter: bool = True) -> v2.Transform:
    """FNA's SSDLite augmentation: photometric distortion, zoom out (to 4x, mean fill), IoU crop, the flips.

    Args:
        augment: The flips (`flips`).
        color_jitter: Unused: the photometric distortion is always part of SSD's augmentation.
    """
    fill = [round(255 * m) for m in IMAGENET_DEFAULT_MEAN]
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: fill, 'others': 0}, side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        *flips(augment),
        v2.SanitizeBoundingBoxes(),
    ])


# recipe name (`DetectorSpec.train_recipe`) -> its transforms(augment, color_jitter)
TRAIN_RECIPES: dict[str, Callable[[str, bool], v2.Transform]] = {'plain': plain_transforms, 'ssd': ssd_transforms}


def train_transforms(recipe: str, augment: str = 'flip', color_jitter: bool = False) -> v2.Transform:
    """Training transforms of a recipe (a detector's `DetectorSpec.train_recipe`).

    Args:
        recipe: 'plain' (RetinaNet) or 'ssd' (SSDLite).
        augment: The flips (`flips`).
        color_jitter: 'plain': SSD's photometric distortion before the flips ('ssd' always has it).
    """
    if recipe not in TRAIN_RECIPES:
        raise ValueError(f'unknown training recipe {recipe!r}; expected one of {", ".join(TRAIN_RECIPES)}')
    return TRAIN_RECIPES[recipe](augment, color_jitter)

"""Detection data: COCO-format datasets, FNA augmentations and the built-in synthetic set."""
from .coco import CocoDetection, coco_split_paths, collate
from .synthetic import CLASSES, make_synthetic_coco
from .transforms import train_transforms

__all__ = ['CocoDetection', 'coco_split_paths', 'collate', 'CLASSES', 'make_synthetic_coco', 'train_transforms']

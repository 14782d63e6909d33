"""Detection data: COCO-format datasets, random windows and tiles of large images, Pascal-VOC conversion,
FNA augmentations and the built-in synthetic set."""
from .coco import CocoDetection, coco_split_paths, collate
from .crops import RandomCrops, crop_boxes, tile_windows
from .synthetic import CLASSES, make_synthetic_coco, synthetic_set_path
from .transforms import TRAIN_RECIPES, train_transforms

__all__ = ['CocoDetection', 'coco_split_paths', 'collate', 'RandomCrops', 'crop_boxes', 'tile_windows', 'CLASSES',
           'make_synthetic_coco', 'synthetic_set_path', 'TRAIN_RECIPES', 'train_transforms']

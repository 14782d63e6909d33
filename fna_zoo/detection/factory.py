"""The detector a run config describes: `build_model`, and `model_kwargs`, its builder settings checked.

A run config (`fna_zoo.engine.config`) names its detector (`detector`), backbone (`model.backbone`), seed weights
(`model.seed_weights`) and builder settings (`model.kwargs`); the detector's spec (`DETECTORS`) builds it.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..checks import MAX_SIDE, is_positive_int
from .registry import get_detector
from .spec import DetectorSpec

__all__ = ['model_kwargs', 'build_model']

_IMAGE_SIDES = ('min_size', 'max_size', 'image_size')
_POSITIVE_SIZES = ('min_size', 'max_size', 'image_size', 'head_width', 'detections_per_img',
                   'topk_candidates', 'anchor_size')


def model_kwargs(cfg: dict[str, Any], builder: DetectorSpec | Callable[..., nn.Module]) -> dict[str, Any]:
    """Builder kwargs from `model.kwargs`, checked against the builder's signature.

    Args:
        cfg: The config.
        builder: The detector's spec (`DETECTORS[name]`) or builder (`build_retinanet`, `build_ssdlite`).
    """
    params = inspect.signature(builder).parameters
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ('num_classes', 'seed_weights')]
    kwargs = dict(cfg['model']['kwargs'] or {})
    for k, v in kwargs.items():
        if k not in allowed:
            raise ValueError(f'unknown config key model.kwargs.{k} for {cfg["detector"]}; expected one of {", ".join(allowed)}')
        if k in _POSITIVE_SIZES and not is_positive_int(v):
            raise ValueError(f'config model.kwargs.{k} is {v!r}; expected a positive integer')
        if k in _IMAGE_SIDES and v > MAX_SIDE:
            raise ValueError(f'config model.kwargs.{k} is {v!r}; expected an image side up to {MAX_SIDE}')
    return kwargs


def build_model(cfg: dict[str, Any], num_classes: int, with_seed: bool = True) -> nn.Module:
    """The detector a run config describes (seed weights remapped into its backbone when `with_seed`).

    Args:
        cfg: The run config (`detector`, `model.backbone`, `model.kwargs`, `model.seed_weights`).
        num_classes: Object classes.
        with_seed: Load `model.seed_weights` (off when a checkpoint will overwrite the weights anyway).
    """
    spec = get_detector(cfg['detector'])
    kwargs = model_kwargs(cfg, spec)
    if cfg['model']['backbone'] is not None:
        kwargs['backbone'] = cfg['model']['backbone']
    seed = cfg['model']['seed_weights'] if with_seed else None
    return spec.build(num_classes=num_classes, seed_weights=seed, **kwargs)

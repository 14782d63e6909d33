"""Run configs: YAML files over built-in defaults, `key.sub=value` overrides, strict key checking.

The layout follows timm's YAML-then-CLI convention; the resolved config is written into the run folder.
"""
from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

__all__ = ['DEFAULTS', 'load_config', 'apply_overrides', 'model_kwargs']

DEFAULTS: dict[str, Any] = {
    'detector': 'retinanet',          # 'retinanet' or 'ssdlite'
    'model': {
        'backbone': None,             # FNA arch (name / file / FNA string) or timm model; None: detector default
        'seed_weights': None,         # None (random init), 'timm' (hub mobilenetv2_100.ra_in1k) or a weights file
        'num_classes': None,          # None: the number of categories in the training annotations
        'kwargs': {},                 # further builder arguments (min_size, head_width, image_size, ...)
    },
    'data': {
        'path': None,                 # COCO tree root; None: the built-in synthetic set
        'train_split': 'train2017',
        'val_split': 'val2017',
        'workers': 2,
        'synthetic': {'root': 'runs/data/synthetic', 'num_train': 400, 'num_val': 100, 'image_size': 128,
                      'num_classes': 6, 'seed': 0},
    },
    'train': {
        'epochs': 12,
        'batch_size': 4,              # per process
        'optimizer': 'sgd',           # 'sgd' (FNA RetinaNet), 'rmsprop' (FNA SSDLite) or 'adamw'
        'lr': 0.05,
        'momentum': 0.9,
        'weight_decay': 5e-5,
        'eps': 1.0,                   # RMSprop eps (FNA SSDLite)
        'lr_steps': [8, 11],          # epochs at which the LR is multiplied by lr_gamma
        'lr_gamma': 0.1,
        'warmup_iters': 500,
        'warmup_ratio': 0.3333333,
        'grad_clip': 35.0,
        'max_iters': None,            # stop after this many iterations in all (short runs, tests)
        'sync_bn': False,
        'log_interval': 20,
        'ckpt_interval': 200,         # iterations between resumable checkpoints (and at every epoch end)
        'eval_at_end': True,
    },
    'eval': {'batch_size': 8},
    'output': 'runs/retrain',
    'seed': 0,
    'device': 'auto',                 # 'auto', 'cpu' or 'cuda'
}


def _merge(base: dict[str, Any], update: dict[str, Any], where: str, open_keys: bool = False) -> None:
    for key, value in update.items():
        path = f'{where}.{key}' if where else key
        if key not in base and not open_keys:
            raise ValueError(f'unknown config key {path!r}; expected one of {", ".join(sorted(base))}')
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _merge(base[key], value, path, open_keys=key == 'kwargs')
        else:
            base[key] = copy.deepcopy(value)


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (values parsed as YAML) in place.

    Args:
        cfg: The config.
        overrides: e.g. `['train.lr=0.01', 'model.kwargs.min_size=320']`.
    """
    for item in overrides:
        if '=' not in item:
            raise ValueError(f'override {item!r} is malformed; expected key.sub=value')
        key, _, raw = item.partition('=')
        nested: Any = yaml.safe_load(raw) if raw.strip() else None
        for part in reversed(key.strip().split('.')):
            nested = {part: nested}
        _merge(cfg, nested, '')
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file, then overrides.

    Args:
        path: A YAML config file (None: defaults only).
        overrides: `key.sub=value` strings.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f'config file {str(p)!r} does not exist')
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f'malformed config file {str(p)!r}: {e}') from None
        if not isinstance(data, dict):
            raise ValueError(f'config file {str(p)!r} holds {type(data).__name__}; expected a mapping')
        try:
            _merge(cfg, data, '')
        except ValueError as e:
            raise ValueError(f'{p}: {e}') from None
    apply_overrides(cfg, overrides)
    from ..detection import DETECTORS  # local: keeps config parsing free of model imports until needed

    if cfg['detector'] not in DETECTORS:
        raise ValueError(f"config detector is {cfg['detector']!r}; expected one of {', '.join(DETECTORS)}")
    if cfg['train']['optimizer'] not in ('sgd', 'rmsprop', 'adamw'):
        raise ValueError(f"config train.optimizer is {cfg['train']['optimizer']!r}; expected 'sgd', 'rmsprop' or 'adamw'")
    return cfg


def model_kwargs(cfg: dict[str, Any], builder: Any) -> dict[str, Any]:
    """Builder kwargs from `model.kwargs`, checked against the builder's signature.

    Args:
        cfg: The config.
        builder: `build_retinanet` or `build_ssdlite`.
    """
    params = inspect.signature(builder).parameters
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ('num_classes', 'seed_weights')]
    kwargs = dict(cfg['model']['kwargs'] or {})
    for k in kwargs:
        if k not in allowed:
            raise ValueError(f'unknown config key model.kwargs.{k} for {cfg["detector"]}; expected one of {", ".join(allowed)}')
    return kwargs

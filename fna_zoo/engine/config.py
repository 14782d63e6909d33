"""Run configs: YAML files over built-in defaults, `key.sub=value` overrides, strict key checking.

The layout follows timm's YAML-then-CLI convention; the resolved config is written into the run folder.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..checks import MAX_SIDE, check_input_file

__all__ = ['DEFAULTS', 'SEARCH_DEFAULTS', 'load_config', 'apply_overrides', 'check_config', 'model_kwargs',
           'build_model']

DEFAULTS: dict[str, Any] = {
    'detector': 'retinanet',          # 'retinanet' or 'ssdlite'
    'model': {
        'backbone': None,             # FNA arch (name / file / FNA string) or timm model; None: detector default
        'seed_weights': None,         # None (random init), 'timm' (hub mobilenetv2_100.ra_in1k), a weights file or
                                      # asset:mobilenetv2_100.tv_in1k (torchvision's ImageNet weights, fna-fetch)
        'num_classes': None,          # None: the number of categories in the training annotations
        'kwargs': {},                 # further builder arguments (min_size, head_width, image_size, ...)
    },
    'data': {
        'path': None,                 # COCO tree root or asset:neon_trees (fna-fetch); None: the built-in synthetic set
        'train_split': 'train2017',
        'val_split': 'val2017',
        'workers': 2,
        # training on random windows of large images (aerial sets): `size` px squares, `crops_per_image` per
        # image and epoch; boxes cut by a window edge are kept (clipped) when at least `min_visible` is inside.
        # size None: whole images. Validation always uses the split's images as they are (fixed tiles).
        # scale [low, high]: window side x U(low, high), i.e. scale jitter, as the detector resizes every window
        'train_crop': {'size': None, 'crops_per_image': 1, 'min_visible': 0.5, 'scale': [1.0, 1.0]},
        # training flips: 'flip' (horizontal, FNA), 'dihedral' (also vertical flips and 90-degree turns: aerial
        # images have no up), 'none'
        'augment': 'flip',
        'color_jitter': False,        # RetinaNet: SSD's photometric distortion (p 0.5) too; SSDLite always has it
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
        'lr_schedule': 'step',        # 'step' (x lr_gamma at each lr_steps epoch) or 'cosine' (to 0 at the last step)
        'lr_steps': [8, 11],          # epochs at which the LR is multiplied by lr_gamma
        'lr_gamma': 0.1,
        'warmup_iters': 500,
        'warmup_ratio': 0.3333333,
        'grad_clip': 35.0,
        'max_iters': None,            # stop after this many iterations in all (short runs, tests)
        'freeze_bn': False,           # backbone BatchNorm frozen at the seed's statistics (torchvision's habit)
        'eval_interval': None,        # steps between validation AP evaluations (eval.csv: the AP-vs-steps curve)
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


# Architecture search (`fna-search`): the same sections (the `train` section drives the weight steps)
# plus `search`. FNA's RetinaNet search settings (method.md section 3.3) are the defaults.
SEARCH_DEFAULTS: dict[str, Any] = copy.deepcopy(DEFAULTS)
SEARCH_DEFAULTS['train'].update(epochs=14, batch_size=1, lr=0.02, weight_decay=1e-4, lr_steps=[8, 11, 14],
                                ckpt_interval=500)
SEARCH_DEFAULTS['output'] = 'runs/search'
SEARCH_DEFAULTS['search'] = {
    'space': {
        'seed': 'mobilenetv2_100',    # registered seed arch (and the timm model whose weights it has)
        'fixed_stages': 1,            # leading stages kept as in the seed (MobileNetV2: the 16-channel e1 stage)
        'layers': [4, 4, 4, 4, 4, 1],  # layer slots per searchable stage (depth = slots that are not skip)
        'first_ops': ['k3_e3', 'k3_e6', 'k5_e3', 'k5_e6', 'k7_e3', 'k7_e6'],           # a stage's first layer
        'ops': ['k3_e3', 'k3_e6', 'k5_e3', 'k5_e6', 'k7_e3', 'k7_e6', 'skip'],      # its other layers
        'width_mults': [0.5, 0.75, 1.0, 1.25, 1.5],  # output width candidates per stage, x the seed width
        'width_divisor': 8,           # widths are rounded to multiples of this
        'tap_expansion': 6,           # SSDLite: the tapped layer (stride 16 -> 32) may only use this expansion
        'temperature': 1.0,           # softmax temperature of the architecture probabilities (FNA SSDLite: 0.9)
    },
    'remap_width': 'leading',         # seed -> super network width rule ('leading' or 'bn_gamma'), as retraining
    'weight_ratio': 0.5,              # share of the training images for weight steps; the rest feed arch steps
    'arch_update_epoch': 8,           # epochs of weight-only warm-up (uniform paths) before arch steps start
    'arch_steps': 1,                  # alternation: this many arch steps ...
    'weight_steps': 1,                # ... then this many weight steps (FNA SSDLite: 5)
    'arch_batch_size': None,          # images per architecture step (None: train.batch_size); more, less noise
    'relaxation': 'darts',            # arch steps: 'darts' (all candidates, FNA), 'gumbel' (one sampled path) or
                                      # 'pairs' (two candidates per slot drawn by probability, ProxylessNAS)
    'gumbel_tau': 1.0,
    # weight of the architecture entropy (mean over slots and stages, over its maximum) added to the arch loss,
    # ramped linearly from 0 at the first arch step to this at the last (Tian et al., DA2S, 2020): 0 = off
    'entropy_weight': 0.0,
    # logit bonus of the seed's choice in every slot and stage at the start (SuperNet.set_prior): the search starts
    # at the seed and the gradients must earn every move away from it; 0 = FNA's near-uniform start
    'seed_prior': 0.0,
    # after the search: retrain the `candidates` most probable distinct archs near the cost target and the seed at
    # that cost (the baseline) with the retrain config `recipe` for `steps` (successive-halving rungs) on a
    # held-out `holdout` share of the training split; hand on the best candidate only when its held-out AP50 beats
    # the baseline's by `margin` points, else the baseline (fna_zoo/nas/verify.py). candidates 0 = off
    'verify': {'candidates': 0, 'recipe': None, 'steps': [100, 200], 'margin': 1.0, 'holdout': 0.2, 'band': 0.1},
    'arch_optimizer': {'lr': 3.0e-4, 'betas': [0.5, 0.999], 'weight_decay': 1.0e-3, 'grad_clip': 35.0},
    # type 'madds' or 'latency' (needs `table`, from fna-latency-table); target: in GMAdds / ms, with target_mode
    # 'max' (a hinge: no cost above it) or 'match' (two-sided: land at it);
    # table with madds: the summary also reports the table's latency; runtime: the table's must match (None: any)
    'objective': {'type': 'madds', 'lambda': 0.02, 'input_size': [800, 1088], 'target': None, 'target_mode': 'max',
                  'table': None, 'runtime': None},
    'arch_log_interval': 100,         # weight steps between logged argmax archs / probability snapshots
    'eval_derived': True,             # at the end: recalibrate BN on the derived path and report its COCO AP
    'bn_calib_batches': 20,
}


def _merge(base: dict[str, Any], update: dict[str, Any], where: str, open_keys: bool = False) -> None:
    for key, value in update.items():
        path = f'{where}.{key}' if where else key
        if key not in base and not open_keys:
            raise ValueError(f'unknown config key {path!r}; expected one of {", ".join(sorted(base))}')
        if isinstance(base.get(key), dict) and not isinstance(value, dict) and not open_keys:
            # NOTE: now, not in the type check: a section replaced by a scalar would turn the next override of one
            # of its keys into an 'unknown key' error
            raise ValueError(f'config {path} is {value!r}; expected a mapping')
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
        try:
            nested: Any = yaml.safe_load(raw) if raw.strip() else None
        except RecursionError:
            raise ValueError(f'override {key.strip()!r} has a value nested too deeply to parse; expected a YAML '
                             'value (a number, a string, a short list or mapping)') from None
        except yaml.YAMLError:
            # NOTE: not YAML (e.g. an FNA net_config string, "[[32, 16], ['k3_e1'], 1]|..."): the text itself; the
            # type check of load_config still rejects it where a number or a list is expected
            nested = raw
        for part in reversed(key.strip().split('.')):
            nested = {part: nested}
        _merge(cfg, nested, '')
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                defaults: dict[str, Any] = DEFAULTS) -> dict[str, Any]:
    """Defaults, then the YAML file, then overrides.

    Args:
        path: A YAML config file (None: defaults only).
        overrides: `key.sub=value` strings.
        defaults: `DEFAULTS` (retraining) or `SEARCH_DEFAULTS` (architecture search).
    """
    cfg = copy.deepcopy(defaults)
    if path is not None:
        p = check_input_file(path, 'config file', 'a YAML config file')
        try:
            text = p.read_text()
            data = yaml.safe_load(text)
        except UnicodeDecodeError:
            raise ValueError(f'config file {str(p)!r} is not text; expected a YAML config') from None
        except yaml.YAMLError as e:
            raise ValueError(f'malformed config file {str(p)!r}: {e}') from None
        except RecursionError:
            raise ValueError(f'config file {str(p)!r} is nested too deeply to parse; expected a YAML mapping of '
                             'config sections') from None
        if data is None:  # NOTE: an empty file is more likely a failed write than a wish for the defaults
            raise ValueError(f'config file {str(p)!r} is empty; expected a YAML mapping of config sections (e.g. '
                             'train: {lr: 0.01})')
        if not isinstance(data, dict):
            raise ValueError(f'config file {str(p)!r} holds {type(data).__name__}; expected a mapping')
        try:
            _merge(cfg, data, '')
        except ValueError as e:
            raise ValueError(f'{p}: {e}') from None
    apply_overrides(cfg, overrides)
    from ..detection import DETECTORS  # local: keeps config parsing free of model imports until needed

    _check_types(cfg, defaults, '')  # NOTE: first, so the checks below may index every section ('train=5' is not one)
    if not cfg['output'].strip():
        raise ValueError(f"config output is {cfg['output']!r}; expected a run folder path")
    if cfg['detector'] not in DETECTORS:
        raise ValueError(f"config detector is {cfg['detector']!r}; expected one of {', '.join(DETECTORS)}")
    for key, allowed in (('train.lr_schedule', ('step', 'cosine')), ('data.augment', ('flip', 'dihedral', 'none'))):
        section, name = key.split('.')
        if cfg[section][name] not in allowed:
            raise ValueError(f'config {key} is {cfg[section][name]!r}; expected one of {", ".join(allowed)}')
    if cfg['train']['optimizer'] not in ('sgd', 'rmsprop', 'adamw'):
        raise ValueError(f"config train.optimizer is {cfg['train']['optimizer']!r}; expected 'sgd', 'rmsprop' or 'adamw'")
    _check_ranges(cfg)
    _check_float_ranges(cfg)
    _check_train_crop(cfg['data']['train_crop'])
    return cfg


def _type_name(default: Any) -> str | None:
    """What a value must be, from its default's type (None: any, a mapping of open keys, or a nullable key)."""
    if isinstance(default, bool):
        return 'true or false'
    if isinstance(default, int):
        return 'an integer'
    if isinstance(default, float):
        return 'a number'
    if isinstance(default, str):
        return 'a string'
    if isinstance(default, list):
        return 'a list'
    return None


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _check_types(cfg: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
    """Every value has its default's type (naming the dotted key), so a wrong type fails before any work.

    Args:
        cfg: The merged config (or a section of it).
        defaults: The defaults (or the same section).
        where: The section's dotted key ('' at the top).
    """
    for key, default in defaults.items():
        path = f'{where}.{key}' if where else key
        value = cfg.get(key)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ValueError(f'config {path} is {value!r}; expected a mapping')
            if key != 'kwargs':
                _check_types(value, default, path)
        elif (what := _type_name(default)) is not None and not _fits(value, default):
            if isinstance(default, float) and isinstance(value, str):
                # NOTE: YAML 1.1 (PyYAML) reads 1e-3 as a string; a number written so is meant as one
                try:
                    cfg[key] = float(value)
                    if math.isfinite(cfg[key]):
                        continue
                except ValueError:
                    pass
            raise ValueError(f'config {path} is {value!r}; expected {what}')
        elif isinstance(default, float) and not math.isfinite(value):
            raise ValueError(f'config {path} is {value!r}; expected a finite number')


# dotted key -> (the smallest value allowed, whether null is allowed)
_RANGES: dict[str, tuple[float, bool]] = {
    'train.epochs': (1, False), 'train.batch_size': (1, False), 'train.log_interval': (1, False),
    'train.ckpt_interval': (1, False), 'train.warmup_iters': (0, False), 'train.max_iters': (1, True),
    'train.eval_interval': (1, True),
    'eval.batch_size': (1, False), 'data.workers': (0, False), 'model.num_classes': (1, True),
    'data.synthetic.num_train': (1, False), 'data.synthetic.num_val': (1, False),
    'data.synthetic.image_size': (32, False), 'search.arch_steps': (1, False), 'search.weight_steps': (1, False),
    'search.arch_log_interval': (1, False), 'search.arch_update_epoch': (0, False),
    'search.bn_calib_batches': (1, False), 'search.arch_batch_size': (1, True), 'search.verify.candidates': (0, False),
}


# dotted key -> (low, high, whether low itself is allowed, whether high is, the expected range in words)
_FLOAT_RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    'train.momentum': (0, 1, True, False, 'a number in [0, 1)'),
    'train.weight_decay': (0, math.inf, True, False, 'a number >= 0'),
    'train.eps': (0, math.inf, False, False, 'a positive number'),
    'train.lr_gamma': (0, math.inf, False, False, 'a positive number'),
    'train.warmup_ratio': (0, 1, False, True, 'a number in (0, 1]'),
    'train.grad_clip': (0, math.inf, True, False, 'a number >= 0 (0: no clipping)'),
    'search.weight_ratio': (0, 1, False, False, 'a share in (0, 1)'),
    'search.gumbel_tau': (0, math.inf, False, False, 'a positive number'),
    'search.entropy_weight': (0, math.inf, True, False, 'a number >= 0'),
    'search.seed_prior': (0, math.inf, True, False, 'a number >= 0'),
    'search.verify.margin': (0, math.inf, True, False, 'a number of AP50 points >= 0'),
    'search.verify.holdout': (0, 1, False, False, 'a share in (0, 1)'),
    'search.verify.band': (0, math.inf, False, False, 'a positive relative cost band (0.1: +-10 %)'),
    'search.space.temperature': (0, math.inf, False, False, 'a positive number'),
    'search.objective.lambda': (0, math.inf, True, False, 'a number >= 0'),
    'search.arch_optimizer.weight_decay': (0, math.inf, True, False, 'a number >= 0'),
    'search.arch_optimizer.grad_clip': (0, math.inf, True, False, 'a number >= 0 (0: no clipping)'),
}


_ABSENT = object()


def _setting(cfg: dict[str, Any], path: str) -> Any:
    """The value at a dotted key, or `_ABSENT` when it is not in the config (search.* in a retrain one, a key the
    config of an older checkpoint lacks, see `check_config`)."""
    value: Any = cfg
    for k in path.split('.'):
        if not isinstance(value, dict) or k not in value:
            return _ABSENT
        value = value[k]
    return value


def _check_float_ranges(cfg: dict[str, Any]) -> None:
    """Rates, shares and coefficients in range (a negative clip norm or momentum trains nonsense, silently)."""
    for path, (low, high, low_ok, high_ok, what) in _FLOAT_RANGES.items():
        if (value := _setting(cfg, path)) is _ABSENT:
            continue  # search.* in a retrain config
        above = value >= low if low_ok else value > low
        below = value <= high if high_ok else value < high
        if not (above and below):
            raise ValueError(f'config {path} is {value!r}; expected {what}')


def _check_ranges(cfg: dict[str, Any]) -> None:
    """Counts and sizes in range (a zero batch size or interval would divide by zero or train nothing)."""
    for path, (low, nullable) in _RANGES.items():
        if (value := _setting(cfg, path)) is _ABSENT:
            continue  # search.* in a retrain config
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'config {path} is {value!r}; expected an integer >= {int(low)}'
                             f'{" or null" if nullable else ""}')
        if path == 'data.synthetic.image_size' and value > MAX_SIDE:
            raise ValueError(f'config {path} is {value!r}; expected an image side up to {MAX_SIDE}')
    for path in ('train.lr', 'search.arch_optimizer.lr'):
        value = _setting(cfg, path)
        if value is not _ABSENT and not value > 0:
            raise ValueError(f'config {path} is {value!r}; expected a positive number')
    if _setting(cfg, 'search.objective.input_size') is not _ABSENT:
        size = cfg['search']['objective']['input_size']
        if not (isinstance(size, list) and len(size) == 2
                and all(_positive_int(v) and 32 <= v <= MAX_SIDE and v % 32 == 0 for v in size)):
            raise ValueError(f'config search.objective.input_size is {size!r}; expected [H, W], two multiples of 32 '
                             f'from 32 to {MAX_SIDE}')


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_config(cfg: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The typed checks of `load_config` for a config made elsewhere, e.g. a checkpoint's with `--set` overrides:
    every value has the type of its value in `reference`, counts, sizes and rates in range. Returns `cfg`.

    Args:
        cfg: The config to check.
        reference: A config of the right types (the checkpoint's own, before the overrides).
    """
    _check_types(cfg, reference, '')
    _check_ranges(cfg)
    _check_float_ranges(cfg)
    return cfg


def _check_train_crop(crop: dict[str, Any]) -> None:
    """One clear error for a bad `data.train_crop` (before any model or data is built)."""
    if crop['size'] is not None and not (_positive_int(crop['size']) and crop['size'] <= MAX_SIDE):
        raise ValueError(f"config data.train_crop.size is {crop['size']!r}; expected a positive integer (pixels) "
                         f'or null (whole images); at most {MAX_SIDE}')
    if not _positive_int(crop['crops_per_image']):
        raise ValueError(f"config data.train_crop.crops_per_image is {crop['crops_per_image']!r}; expected a "
                         'positive integer')
    v = crop['min_visible']
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
        raise ValueError(f'config data.train_crop.min_visible is {v!r}; expected a share in (0, 1]')
    sc = crop['scale']
    if not (isinstance(sc, list) and len(sc) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in sc) and 0 < sc[0] <= sc[1] <= 4):
        raise ValueError(f'config data.train_crop.scale is {sc!r}; expected [low, high] with 0 < low <= high <= 4')


def model_kwargs(cfg: dict[str, Any], builder: Any) -> dict[str, Any]:
    """Builder kwargs from `model.kwargs`, checked against the builder's signature.

    Args:
        cfg: The config.
        builder: `build_retinanet` or `build_ssdlite`.
    """
    params = inspect.signature(builder).parameters
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ('num_classes', 'seed_weights')]
    kwargs = dict(cfg['model']['kwargs'] or {})
    for k, v in kwargs.items():
        if k not in allowed:
            raise ValueError(f'unknown config key model.kwargs.{k} for {cfg["detector"]}; expected one of {", ".join(allowed)}')
        if k in _POSITIVE_SIZES and not _positive_int(v):
            raise ValueError(f'config model.kwargs.{k} is {v!r}; expected a positive integer')
        if k in _IMAGE_SIDES and v > MAX_SIDE:
            raise ValueError(f'config model.kwargs.{k} is {v!r}; expected an image side up to {MAX_SIDE}')
    return kwargs


def build_model(cfg: dict[str, Any], num_classes: int, with_seed: bool = True) -> Any:
    """The detector a run config describes (seed weights remapped into its backbone when `with_seed`).

    Args:
        cfg: The run config (`detector`, `model.backbone`, `model.kwargs`, `model.seed_weights`).
        num_classes: Object classes.
        with_seed: Load `model.seed_weights` (off when a checkpoint will overwrite the weights anyway).
    """
    from ..detection import DETECTORS

    builder = DETECTORS[cfg['detector']]
    kwargs = model_kwargs(cfg, builder)
    if cfg['model']['backbone'] is not None:
        kwargs['backbone'] = cfg['model']['backbone']
    seed = cfg['model']['seed_weights'] if with_seed else None
    return builder(num_classes=num_classes, seed_weights=seed, **kwargs)


_IMAGE_SIDES = ('min_size', 'max_size', 'image_size')
_POSITIVE_SIZES = ('min_size', 'max_size', 'image_size', 'head_width', 'detections_per_img',
                   'topk_candidates', 'anchor_size')

"""Run configs: YAML files over built-in defaults, `key.sub=value` overrides, strict key checking.

The layout follows timm's YAML-then-CLI convention; the resolved config is written into the run folder.
`DEFAULTS` are retraining's (the engine's); a feature with its own section composes its defaults from them and
registers that section's check (`register_section_check`): the search's are `fna_zoo.nas.config.SEARCH_DEFAULTS`,
which `import fna_zoo` does not import. `load_config` takes the composed defaults and runs every check once.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..checks import MAX_SIDE, check_input_file, is_positive_int
from ..deprecation import moved_names

AMP_MODES = ('off', 'bf16', 'fp16')  # train.amp (fna_zoo.engine.precision)

__all__ = ['DEFAULTS', 'load_config', 'apply_overrides', 'check_config', 'register_section_check', 'check_ranges',
           'check_float_ranges', 'setting', 'ABSENT', 'IntRange', 'FloatRange']

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
        'amp': 'off',                 # mixed precision: 'off', 'bf16' (CPU and CUDA) or 'fp16' (CUDA, with a scaler)
        'channels_last': False,       # NHWC memory layout of the model (faster convolutions, same fp32 numbers)
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
        defaults: `DEFAULTS` (retraining) or a feature's defaults composed from them (architecture search:
            `fna_zoo.nas.config.SEARCH_DEFAULTS`, whose import registers the check of its `search` section).
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
    for key, allowed in (('train.lr_schedule', ('step', 'cosine')), ('data.augment', ('flip', 'dihedral', 'none')),
                         ('train.amp', AMP_MODES)):
        section, name = key.split('.')
        if cfg[section][name] not in allowed:
            raise ValueError(f'config {key} is {cfg[section][name]!r}; expected one of {", ".join(allowed)}')
    if cfg['train']['optimizer'] not in ('sgd', 'rmsprop', 'adamw'):
        raise ValueError(f"config train.optimizer is {cfg['train']['optimizer']!r}; expected 'sgd', 'rmsprop' or 'adamw'")
    _check_ranges(cfg)
    check_float_ranges(cfg, _FLOAT_RANGES)
    _check_train_crop(cfg['data']['train_crop'])
    _check_sections(cfg)
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


# an integer setting's range: (the smallest value allowed, whether null is allowed)
IntRange = tuple[float, bool]
# a number setting's range: (low, high, whether low itself is allowed, whether high is, the expected range in words)
FloatRange = tuple[float, float, bool, bool, str]

# dotted key -> its range, for the engine's sections (a feature's section has its own tables, e.g. fna_zoo.nas.config)
_RANGES: dict[str, IntRange] = {
    'train.epochs': (1, False), 'train.batch_size': (1, False), 'train.log_interval': (1, False),
    'train.ckpt_interval': (1, False), 'train.warmup_iters': (0, False), 'train.max_iters': (1, True),
    'train.eval_interval': (1, True),
    'eval.batch_size': (1, False), 'data.workers': (0, False), 'model.num_classes': (1, True),
    'data.synthetic.num_train': (1, False), 'data.synthetic.num_val': (1, False),
    'data.synthetic.image_size': (32, False),
}


_FLOAT_RANGES: dict[str, FloatRange] = {
    'train.momentum': (0, 1, True, False, 'a number in [0, 1)'),
    'train.weight_decay': (0, math.inf, True, False, 'a number >= 0'),
    'train.eps': (0, math.inf, False, False, 'a positive number'),
    'train.lr_gamma': (0, math.inf, False, False, 'a positive number'),
    'train.warmup_ratio': (0, 1, False, True, 'a number in (0, 1]'),
    'train.grad_clip': (0, math.inf, True, False, 'a number >= 0 (0: no clipping)'),
}


ABSENT = object()  # `setting` of a key the config does not have


def setting(cfg: dict[str, Any], path: str) -> Any:
    """The value at a dotted key, or `ABSENT` when it is not in the config (a key the config of an older checkpoint
    lacks, see `check_config`).

    Args:
        cfg: The config.
        path: A dotted key ('train.lr').
    """
    value: Any = cfg
    for k in path.split('.'):
        if not isinstance(value, dict) or k not in value:
            return ABSENT
        value = value[k]
    return value


def check_float_ranges(cfg: dict[str, Any], ranges: dict[str, FloatRange]) -> None:
    """Rates, shares and coefficients in range (a negative clip norm or momentum trains nonsense, silently).

    Args:
        cfg: The config.
        ranges: Dotted key -> its `FloatRange` (keys the config lacks are skipped).
    """
    for path, (low, high, low_ok, high_ok, what) in ranges.items():
        if (value := setting(cfg, path)) is ABSENT:
            continue
        above = value >= low if low_ok else value > low
        below = value <= high if high_ok else value < high
        if not (above and below):
            raise ValueError(f'config {path} is {value!r}; expected {what}')


def check_ranges(cfg: dict[str, Any], ranges: dict[str, IntRange]) -> None:
    """Counts and sizes in range (a zero batch size or interval would divide by zero or train nothing).

    Args:
        cfg: The config.
        ranges: Dotted key -> its `IntRange` (keys the config lacks are skipped).
    """
    for path, (low, nullable) in ranges.items():
        if (value := setting(cfg, path)) is ABSENT:
            continue
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'config {path} is {value!r}; expected an integer >= {int(low)}'
                             f'{" or null" if nullable else ""}')


def _check_ranges(cfg: dict[str, Any]) -> None:
    """The engine's counts, sizes and learning rate in range."""
    check_ranges(cfg, _RANGES)
    side = setting(cfg, 'data.synthetic.image_size')
    if side is not ABSENT and side > MAX_SIDE:
        raise ValueError(f'config data.synthetic.image_size is {side!r}; expected an image side up to {MAX_SIDE}')
    lr = setting(cfg, 'train.lr')
    if lr is not ABSENT and not lr > 0:
        raise ValueError(f'config train.lr is {lr!r}; expected a positive number')


# section -> the check of a feature's own config section (`register_section_check`)
_SECTION_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {}


def register_section_check(section: str, check: Callable[[dict[str, Any]], None]) -> None:
    """Register the value check of a feature's own config section: `load_config` and `check_config` run it on
    every config that has the section (after the engine's checks). The feature's module registers it on import,
    as the module holding the feature's defaults, which a config with the section was loaded over.

    Args:
        section: The top-level section ('search').
        check: Raises ValueError (one line naming the dotted key) for a bad value; takes the whole config.
    """
    _SECTION_CHECKS[section] = check


def _check_sections(cfg: dict[str, Any]) -> None:
    """The registered checks of the feature sections `cfg` has."""
    for section, check in _SECTION_CHECKS.items():
        if section in cfg:
            check(cfg)


def check_config(cfg: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The typed checks of `load_config` for a config made elsewhere, e.g. a checkpoint's with `--set` overrides:
    every value has the type of its value in `reference`, counts, sizes and rates in range. Returns `cfg`.

    Args:
        cfg: The config to check.
        reference: A config of the right types (the checkpoint's own, before the overrides).
    """
    _check_types(cfg, reference, '')
    _check_ranges(cfg)
    check_float_ranges(cfg, _FLOAT_RANGES)
    _check_sections(cfg)
    return cfg


def _check_train_crop(crop: dict[str, Any]) -> None:
    """One clear error for a bad `data.train_crop` (before any model or data is built)."""
    if crop['size'] is not None and not (is_positive_int(crop['size']) and crop['size'] <= MAX_SIDE):
        raise ValueError(f"config data.train_crop.size is {crop['size']!r}; expected a positive integer (pixels) "
                         f'or null (whole images); at most {MAX_SIDE}')
    if not is_positive_int(crop['crops_per_image']):
        raise ValueError(f"config data.train_crop.crops_per_image is {crop['crops_per_image']!r}; expected a "
                         'positive integer')
    v = crop['min_visible']
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
        raise ValueError(f'config data.train_crop.min_visible is {v!r}; expected a share in (0, 1]')
    sc = crop['scale']
    if not (isinstance(sc, list) and len(sc) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in sc) and 0 < sc[0] <= sc[1] <= 4):
        raise ValueError(f'config data.train_crop.scale is {sc!r}; expected [low, high] with 0 < low <= high <= 4')


# NOTE: old homes of moved names, kept for one release (a DeprecationWarning names the new one); module names, so
# neither the detectors nor the search (which `import fna_zoo` must not import) load before they are asked for
__getattr__ = moved_names(__name__, {'SEARCH_DEFAULTS': 'fna_zoo.nas.config', 'build_model': 'fna_zoo.detection',
                                     'model_kwargs': 'fna_zoo.detection'})

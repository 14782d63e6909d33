"""Checkpoints of search and retraining: one writer (atomic) and one reader that every command uses.

A retrain checkpoint carries the backbone's arch itself (`Arch.to_dict()` under ``'arch'``), so a command
reading it (fna-test, fna-export, fna-publish, fna-bench) needs no file the run's config points at: a run
folder can be moved or copied to another machine. Checkpoints written before the arch was stored fall back to
the run folder's `arch.yaml` snapshot, then to the config's backbone spec.

Ground floor: imports only `checks`, `fileio` and, lazily, `arch`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .checks import check_input_file
from .fileio import atomic_path

__all__ = ['save_checkpoint', 'load_checkpoint', 'read_checkpoint', 'stored_arch', 'check_weights_file', 'Checkpoint']

_REQUIRED = ('model', 'config')
_CONFIG_SECTIONS = ('detector', 'model', 'data', 'train', 'eval')


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` through a temp file and a rename, so a killed run never leaves half a file.

    Args:
        state: Must hold 'model' (a state dict) and 'config'.
        path: Destination.
    """
    # NOTE: through a Python file object: torch.save to a path turns a full disk into a RuntimeError with no errno,
    # a file object's write raises OSError(ENOSPC), which atomic_path reports naming `path`
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights-only unpickling), with clear errors.

    Args:
        path: Checkpoint file.
    """
    path = check_input_file(path, 'checkpoint', 'a .pth file written by fna-search or fna-retrain')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated or foreign files fail in many ways inside torch.load
        raise ValueError(f'checkpoint {str(path)!r} is corrupt or not a checkpoint ({type(e).__name__}); expected a '
                         '.pth file written by this project') from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        raise ValueError(f'checkpoint {str(path)!r} lacks {list(_REQUIRED)}; expected a file written by fna-search '
                         'or fna-retrain')
    if not isinstance(state['config'], Mapping):
        raise ValueError(f'checkpoint {str(path)!r} has no run config; expected a file written by fna-search or '
                         'fna-retrain')
    return state


def check_weights_file(path: str | os.PathLike, what: str = 'seed weights file') -> Path:
    """A weights file that loads as a state dict (weights-only unpickling, or safetensors), or one clear error.

    Read once here, before a model is built around it, so random bytes, a truncated download or a pickle payload
    fail in one line instead of inside timm's loader.

    Args:
        path: A .pth / .pt / .bin (torch) or .safetensors file.
        what: How to name it in the error.
    """
    path = check_input_file(path, what, 'a .pth/.safetensors file of model weights')
    try:
        if path.suffix.lower() == '.safetensors':
            from safetensors import safe_open

            with safe_open(str(path), framework='pt') as f:
                ok = bool(list(f.keys()))
        else:
            state = torch.load(path, map_location='cpu', weights_only=True)
            ok = isinstance(state, Mapping) and bool(state)
    except Exception as e:  # noqa: BLE001  (corrupt, truncated or foreign files fail in many ways)
        raise ValueError(f'{what} {str(path)!r} is not a readable state dict ({type(e).__name__}); expected a '
                         '.pth/.safetensors file of model weights') from None
    if not ok:
        raise ValueError(f'{what} {str(path)!r} holds no tensors; expected a .pth/.safetensors file of model weights')
    return path


@dataclass
class Checkpoint:
    """A checkpoint, decoded.

    Args:
        path: Where it was read from.
        config: The run config it was trained with.
        weights: The model's state dict.
        state: Everything else it holds (optimizer, step, rng, ...), without the weights.
        arch: The backbone arch as `Arch.to_dict()` (None for a timm backbone or a search checkpoint).
    """

    path: Path
    config: dict[str, Any]
    weights: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    arch: dict[str, Any] | None = None

    @property
    def is_search(self) -> bool:
        """Whether it is an architecture search checkpoint (super-network weights)."""
        return 'search' in self.config

    @property
    def step(self) -> Any:
        """The training step it was written at (None when it does not say)."""
        return self.state.get('step')

    @property
    def num_classes(self) -> int | None:
        """The detector's object classes (from the checkpoint, else its config)."""
        n = self.state.get('num_classes') or (self.config.get('model') or {}).get('num_classes')
        return int(n) if n else None

    @property
    def backbone(self) -> Any:
        """The backbone to build: the stored arch (a dict `load_arch` reads), else the config's spec (a timm
        model name, or None for the detector's default)."""
        if self.arch is not None:
            return self.arch
        return (self.config.get('model') or {}).get('backbone')

    def model_config(self) -> dict[str, Any]:
        """The run config with `model.backbone` set to the stored arch, so the detector builds from the
        checkpoint alone."""
        cfg = dict(self.config)
        cfg['model'] = dict(cfg.get('model') or {}, backbone=self.backbone)
        return cfg


def stored_arch(path: str | os.PathLike, state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The backbone arch (`Arch.to_dict()`) a checkpoint was trained with; None for a timm backbone, the
    detector's default or a search checkpoint.

    Args:
        path: Where the checkpoint was read from (its folder may hold the arch.yaml snapshot).
        state: The loaded checkpoint (`load_checkpoint`).
    """
    from .arch import is_arch_spec, load_arch

    if isinstance(state.get('arch'), Mapping):
        return dict(state['arch'])
    cfg = state['config']
    if 'search' in cfg:
        return None
    spec = (cfg.get('model') or {}).get('backbone')
    if spec is None or not is_arch_spec(spec):
        return None  # the detector's default or a timm model: the config says it all
    # NOTE: an older checkpoint (no 'arch' entry): the run folder's arch.yaml snapshot, which retraining wrote
    # when it started, wins over the config's spec, which may name a file that has changed or moved since.
    snapshot = Path(path).parent / 'arch.yaml'
    try:
        return load_arch(snapshot if snapshot.is_file() else spec).to_dict()
    except FileNotFoundError:
        raise FileNotFoundError(f'the arch file {str(spec)!r} of checkpoint {str(path)!r} does not exist (and there '
                                'is no arch.yaml beside the checkpoint); expected the arch it was trained '
                                'with') from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """A checkpoint with its arch: what every command that reads a run's weights uses.

    Args:
        path: final.pth / last.pth of a retrain (or search) run.
    """
    path = Path(path)
    state = load_checkpoint(path)
    # NOTE: the sections every reader of a run's config indexes (a foreign dict with 'model' and 'config' keys passes
    # load_checkpoint's check)
    bad = [k for k in _CONFIG_SECTIONS if not isinstance(state['config'].get(k), Mapping if k != 'detector' else str)]
    if bad:
        raise ValueError(f'checkpoint {str(path)!r} has a run config without {bad}; expected a file written by '
                         'fna-search or fna-retrain')
    weights = state['model']
    if not isinstance(weights, Mapping):
        raise ValueError(f'checkpoint {str(path)!r} has no state dict under "model"; expected a model checkpoint')
    rest = {k: v for k, v in state.items() if k not in ('model', 'config', 'arch')}
    return Checkpoint(path, dict(state['config']), dict(weights), rest, stored_arch(path, state))

"""Atomic, validated checkpoints for resumable runs."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ['save_checkpoint', 'load_checkpoint']

_logger = logging.getLogger(__name__)
_REQUIRED = ('model', 'config')


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` through a temp file and a rename, so a killed run never leaves half a file.

    Args:
        state: Must hold 'model' (a state dict) and 'config'.
        path: Destination.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights-only unpickling), with clear errors.

    Args:
        path: Checkpoint file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {str(path)!r} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated or foreign files fail in many ways inside torch.load
        raise ValueError(f'checkpoint {str(path)!r} is corrupt or not a checkpoint ({type(e).__name__}); expected a '
                         '.pth file written by this project') from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        raise ValueError(f'checkpoint {str(path)!r} lacks {list(_REQUIRED)}; expected a file written by search/retrain.py')
    return state

"""Checks of command-line inputs made before any work starts: output paths and input sizes.

Ground floor: imports nothing of the package, so every feature module and command line can use it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

__all__ = ['MAX_SIDE', 'check_output_path', 'check_input_size']

# NOTE: the largest image side accepted anywhere (the papers use 800x1088 at most); larger sizes are typos that
# would allocate tens of gigabytes
MAX_SIDE = 4096


def check_output_path(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """Validate a file to be written: the right suffix, not a folder, a writable (or creatable) parent.

    Args:
        path: The output file.
        suffix: Expected suffix (e.g. '.onnx'); None accepts any.
    """
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f'output path {str(path)!r} has suffix {path.suffix!r}; expected a {suffix} file')
    if path.is_dir():
        raise IsADirectoryError(f'output path {str(path)!r} is a folder; expected a {suffix or "file"} path')
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f'output path {str(path)!r} is not writable ({str(existing)!r} is not a writable '
                              'folder); expected a path in a writable folder')
    return path


def check_input_size(size: Sequence[int] | None, what: str = 'model') -> tuple[int, int] | None:
    """Validate an (H, W) input size: two positive multiples of 32 (the output stride).

    Args:
        size: (H, W) or None.
        what: Name used in the error message.
    """
    if size is None:
        return None
    size = list(size)
    if len(size) != 2 or any(not isinstance(v, int) or not 32 <= v <= MAX_SIDE or v % 32 for v in size):
        raise ValueError(f'input size {" x ".join(str(v) for v in size)} for the {what} is invalid; '
                         f'expected H W, two positive multiples of 32 up to {MAX_SIDE} (e.g. --input-size 320 320)')
    return int(size[0]), int(size[1])

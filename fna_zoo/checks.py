"""Checks of command-line inputs made before any work starts: input and output paths, input sizes, and the length
of what an error line echoes.

Ground floor: imports nothing of the package, so every feature module and command line can use it (and
`examples/predict_onnx.py`, which imports no torch, loads this file by its path); also `first_difference`, where two
JSON values (configs, fingerprints) first differ, for the error lines that refuse a mismatch.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ['first_difference', 'MAX_SIDE', 'MAX_ECHO', 'MAX_LINE', 'check_output_path', 'check_input_file',
           'check_input_folder', 'check_input_size', 'is_positive_int', 'shorten', 'error_line']

# NOTE: the largest image side accepted anywhere (the papers use 800x1088 at most); larger sizes are typos that
# would allocate tens of gigabytes
MAX_SIDE = 4096
# NOTE: the input side is a multiple of the backbones' output stride, so every feature map tiles the image exactly
# (the stride-32 map of a 33-pixel side would cover 64 pixels): what fna-export, fna-bench and fna-latency-table need
SIZE_STRIDE = 32
# the most characters of one value an error line echoes (a path, a config value, an FNA string); longer ones are
# shortened in the middle (`shorten`)
MAX_ECHO = 200
# the most characters of a whole error line (`error_line`): a long list of short values is cut in the middle too
MAX_LINE = 1000


def _kind(path: Path) -> str:
    """What is at `path`: 'missing', 'file', 'folder', 'other' (a FIFO, socket or device) or 'unknown' (the OS
    will not say, e.g. no permission to look), links followed."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # NOTE: under a file, or a NUL in the name: nothing
        return 'missing'
    except OSError:
        return 'unknown'
    if stat.S_ISREG(mode):
        return 'file'
    return 'folder' if stat.S_ISDIR(mode) else 'other'


def _check_kind(path: str | os.PathLike, want: str, what: str, expected: str | None) -> Path:
    """The one path-kind check of the project (see `check_input_file` / `check_input_folder`)."""
    p = Path(path)
    kind = _kind(p)
    if kind in (want, 'unknown'):  # NOTE: unknown: the read that follows fails with the OS's own reason
        return p
    name = f'{what} {shorten(repr(str(p)))}'
    tail = f'; expected {expected}' if expected else ''
    if kind == 'missing':
        raise FileNotFoundError(f'{name} does not exist{tail}')
    if kind == 'folder':
        raise IsADirectoryError(f'{name} is a directory{tail or "; expected a file"}')
    if kind == 'file':
        raise NotADirectoryError(f'{name} is a file{tail or "; expected a folder"}')
    raise ValueError(f'{name} is not a {want} (a FIFO, socket or device){tail}')


def check_input_file(path: str | os.PathLike, what: str, expected: str | None = None) -> Path:
    """A file to be read: there, and a regular file (a folder or a device given instead says so).

    Args:
        path: The file.
        what: How to name it in the error ('checkpoint', 'arch file', ...).
        expected: What it should be, for the error's `expected ...` part (e.g. 'a final.pth of fna-retrain').

    Raises:
        FileNotFoundError: Nothing is there ('does not exist').
        IsADirectoryError: A folder is there ('is a directory').
        ValueError: Something else is there, e.g. a FIFO ('is not a file').
    """
    return _check_kind(path, 'file', what, expected)


def check_input_folder(path: str | os.PathLike, what: str, expected: str | None = None) -> Path:
    """A folder to be read: there, and a folder (a file given instead says so).

    Args:
        path: The folder.
        what: How to name it in the error ('data folder', ...).
        expected: What it should be, for the error's `expected ...` part.

    Raises:
        FileNotFoundError: Nothing is there ('does not exist').
        NotADirectoryError: A file is there ('is a file').
        ValueError: Something else is there ('is not a folder').
    """
    return _check_kind(path, 'folder', what, expected)


def check_output_path(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """Validate a file to be written: not a folder, the right suffix, a writable (or creatable) parent.

    Args:
        path: The output file.
        suffix: Expected suffix (e.g. '.onnx'); None accepts any.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f'output path {shorten(repr(str(path)))} is a directory; expected a '
                                f'{suffix + " " if suffix else ""}file path')
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f'output path {shorten(repr(str(path)))} has suffix {shorten(repr(path.suffix))}; expected '
                         f'a {suffix} file')
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f'output path {shorten(repr(str(path)))} is not writable ({str(existing)!r} is not a '
                              'writable folder); expected a path in a writable folder')
    return path


def is_positive_int(value: Any) -> bool:
    """Whether `value` is an integer >= 1 (a bool is not: YAML's `true` would pass as 1).

    Args:
        value: Any config value.
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_input_size(size: Any, what: str = 'model') -> tuple[int, int] | None:
    """The one input-size rule of every command: (H, W), two multiples of 32 from 32 to `MAX_SIDE`.

    Args:
        size: (H, W) (a list or tuple of two integers), or None (no size given).
        what: Name used in the error message ('backbone', 'latency table', ...).

    Raises:
        ValueError: Anything else, in one line naming the size.
    """
    if size is None:
        return None
    values = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or not SIZE_STRIDE <= v <= MAX_SIDE
                               or v % SIZE_STRIDE for v in values):
        shown = ' x '.join(shorten(repr(v) if not isinstance(v, int) else str(v)) for v in values) or repr(size)
        raise ValueError(f'input size {shorten(shown)} for the {what} is invalid; expected H W, two positive multiples '
                         f'of {SIZE_STRIDE} up to {MAX_SIDE} (e.g. --input-size 320 320)')
    return int(values[0]), int(values[1])


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """`text`, or (longer than `limit`) its start and end around a note of how much was left out.

    Example: a 200,000-character FNA string echoed by an error becomes `'[[[[...]]]]'` with the middle replaced by
    `…[199,800 characters]…`, so the error stays one readable line and still shows both ends (the quotes, a file's
    suffix).

    Args:
        text: What is to be echoed.
        limit: The most characters kept (at least 40).
    """
    limit = max(40, limit)
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f'{text[:head]}…[{len(text) - head - tail:,} characters]…{text[-tail:]}'


def error_line(message: str) -> str:
    """An error message as the one line a command prints: whitespace runs (newlines too) made one space, each
    word longer than `MAX_ECHO` shortened (`shorten`), and the whole cut to `MAX_LINE` characters.

    NOTE: the one cap on what an error echoes, applied where every command prints its error (`cli.common.run_cli`,
    `examples/predict_onnx.py`): a 100,000-level nested value in a file would otherwise be echoed in full.

    Args:
        message: The exception's message.
    """
    words = [shorten(w) for w in message.split()]
    return shorten(' '.join(words), MAX_LINE)


def first_difference(a: Any, b: Any, where: str = '') -> str | None:
    """Where two JSON values first differ, e.g. 'stages[2].widths: [16, 24] vs [24, 32]'; None when they are equal.

    Args:
        a: The first value (dicts, lists and scalars as JSON has them).
        b: The second.
        where: The path of `a` and `b` in a larger value, for the message.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = first_difference(a.get(k), b.get(k), f'{where}.{k}' if where else str(k))
            if d:
                return d
        return None
    nested = isinstance(a, list) and any(isinstance(v, (list, dict)) for v in a)
    if nested and isinstance(b, list) and len(a) == len(b):  # lists of scalars are shown whole
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f'{where}[{i}]')
            if d:
                return d
        return None
    return None if a == b else f'{where or "value"}: {json.dumps(a)} vs {json.dumps(b)}'

"""Atomic file and folder writes: nothing half-written, whatever kills the process.

Every writer goes through a temp name in the destination's own folder and a rename, so a reader sees either
the old content or the new, never a part. Files get the mode `open()` would give them (0666 & ~umask; the
temp files of `mkstemp` are 0600, which would hide results from teammates and serving containers).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ['atomic_path', 'atomic_write_text', 'atomic_dir', 'default_file_mode', 'default_dir_mode', 'commit_file']


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_file_mode() -> int:
    """The mode `open()` gives a new file: 0666 masked by the process umask."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The mode `mkdir` gives a new folder: 0777 masked by the process umask."""
    return 0o777 & ~_umask()


def commit_file(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename a finished temp file onto `dest` with the mode `open()` would have given it.

    Args:
        tmp: The finished file (in `dest`'s folder, so the rename is atomic).
        dest: Destination.
    """
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, dest)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = '.tmp') -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed onto `path` when the block ends without an error.

    Example::

        with atomic_path('model.safetensors') as tmp:
            safetensors.torch.save_file(sd, tmp)

    Args:
        path: Destination file.
        suffix: Suffix of the temp name (some writers pick a format from it, e.g. '.tmp.onnx').
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temp file in the same folder, then a rename).

    Args:
        path: Destination file.
        text: File content.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temp folder beside `path` to fill; renamed onto `path` when the block ends without an error.

    `path` must not exist yet (a folder is never replaced in place: that cannot be done atomically); on an
    error the temp folder is removed and `path` is left as it was.

    Args:
        path: Destination folder.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f'{str(path)!r} exists already; expected a new folder')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp'))
    try:
        yield tmp
        os.chmod(tmp, default_dir_mode())  # mkdtemp makes it 0700; `mkdir` would give this
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

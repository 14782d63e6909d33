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
from typing import Any, Iterator

__all__ = ['atomic_path', 'atomic_write_text', 'atomic_dir', 'save_figure', 'default_file_mode', 'default_dir_mode',
           'commit_file', 'lock_folder', 'unlock_folder']


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
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """A fresh temp folder beside `path` to fill; renamed onto `path` when the block ends without an error.

    On an error the temp folder is removed and `path` is left as it was.

    Args:
        path: Destination folder. It must not exist yet unless `replace`.
        replace: Swap out an existing `path` (the caller has checked it may go): it is renamed aside, the new
            folder renamed in, then the old one removed, so `path` is never half-written (a folder cannot be
            replaced in one atomic step; between the two renames `path` is briefly absent).
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f'{str(path)!r} exists already; expected a new folder')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp'))
    try:
        yield tmp
        os.chmod(tmp, default_dir_mode())  # mkdtemp makes it 0700; `mkdir` would give this
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.old'))
            os.rename(path, old / path.name)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# folder (resolved) -> the descriptor holding this process's lock on it
_HELD: dict[str, int] = {}


def lock_folder(folder: str | os.PathLike, what: str = 'run folder') -> None:
    """Take this process's exclusive lock on `folder` (created if needed), or fail in one line naming who holds it.

    NOTE: an advisory `flock` on `<folder>/.lock`, held while the process runs: the OS drops it when the process
    ends however it ends, so a killed run leaves no stale lock to clear. A lock this process still holds on the
    folder (an earlier run in the same process that ended with an error) is handed over.

    Args:
        folder: The folder one process at a time may write.
        what: How to name it in the error.
    """
    import fcntl
    import socket

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unlock_folder(folder)
    fd = os.open(folder / '.lock', os.O_RDWR | os.O_CREAT, default_file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'another process'
        os.close(fd)
        raise FileExistsError(f'{what} {str(folder)!r} is in use by {holder}; expected a folder no other run writes '
                              'to (pass another --output, or wait for that run to end)') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}'.encode(), 0)
    _HELD[str(folder.resolve())] = fd


def unlock_folder(folder: str | os.PathLike) -> None:
    """Release this process's lock on `folder`, if it holds one.

    Args:
        folder: A folder locked with `lock_folder`.
    """
    fd = _HELD.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure to `path` atomically (PNG by the suffix) and close it, whatever happens.

    Args:
        fig: A matplotlib `Figure`.
        path: Destination file.
        dpi: Resolution.
    """
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix='.tmp' + Path(path).suffix) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)

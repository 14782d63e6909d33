"""Atomic file and folder writes: nothing half-written, whatever kills the process.

Every writer goes through a temp name in the destination's own folder and a rename, so a reader sees either
the old content or the new, never a part. Files get the mode `open()` would give them (0666 & ~umask; the
temp files of `mkstemp` are 0600, which would hide results from teammates and serving containers). An OS error
while writing (read-only file system, permission denied, disk full) is a `WriteError` naming the destination, never
the hidden temp file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ['atomic_path', 'atomic_write_text', 'atomic_dir', 'save_figure', 'default_file_mode', 'default_dir_mode',
           'commit_file', 'lock_folder', 'unlock_folder', 'WriteError', 'naming_destination']


class WriteError(OSError):
    """An OS error while writing a destination (`filename`): `cannot write '<dest>': <reason>`.

    Raised as a subclass of the original error's class too (a `PermissionError` stays one), so handlers written
    for the raw error still catch it; `errno` and `strerror` are the original's.
    """

    def __str__(self) -> str:
        return f'cannot write {str(self.filename)!r}: {self.strerror}'


# NOTE: errnos only writing raises: an error with one of these inside a writer's block is about the destination,
# whatever file (or none) it names; other errors there name a file the writer read and pass unchanged
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
_WRITE_ERROR_CLASSES: dict[type[OSError], type[WriteError]] = {}


def _write_error(e: OSError, dest: str | os.PathLike) -> WriteError:
    """`e` as a `WriteError` (and an instance of `e`'s own class) naming `dest`."""
    base = type(e)
    cls = _WRITE_ERROR_CLASSES.get(base)
    if cls is None:
        if issubclass(base, WriteError):
            cls = base
        else:
            cls = WriteError if base is OSError else type(f'Write{base.__name__}', (WriteError, base), {})
        _WRITE_ERROR_CLASSES[base] = cls
    return cls(e.errno, e.strerror or str(e), str(dest))


@contextlib.contextmanager
def naming_destination(dest: str | os.PathLike, temps: tuple[str | os.PathLike, ...] | None = None) -> Iterator[None]:
    """Re-raise OS errors of the block as `WriteError`s naming `dest` (instead of a hidden temp file).

    Args:
        dest: The user's destination (file or folder).
        temps: When given, only errors naming one of these files, or with an errno that only writing raises
            (disk full, quota, read-only file system, file too large), are about `dest`; the others (a file the
            block read) pass unchanged. None: every OS error of the block is about `dest`.
    """
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        if temps is not None and e.errno not in _WRITE_ERRNOS:
            names = {str(t) for t in temps}
            if str(e.filename) not in names and str(e.filename2) not in names:
                raise
        raise _write_error(e, dest) from e


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
    with naming_destination(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=suffix)
        os.close(fd)
    tmp = Path(name)
    try:
        with naming_destination(path, (tmp,)):
            yield tmp
        with naming_destination(path):
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
    with naming_destination(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp'))
    try:
        # NOTE: errors on files inside the temp folder name the same files inside `path` (their final place)
        with _naming_inside(tmp, path):
            yield tmp
        with naming_destination(path):
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


@contextlib.contextmanager
def _naming_inside(tmp: Path, dest: Path) -> Iterator[None]:
    """Re-raise a write error naming a file under the temp folder `tmp` as one naming it under `dest`."""
    try:
        yield
    except OSError as e:
        name = str(e.filename) if e.filename is not None else ''
        inside = name == str(tmp) or name.startswith(str(tmp) + os.sep)
        if not inside and not isinstance(e, WriteError) and e.errno not in _WRITE_ERRNOS:
            raise
        where = dest / os.path.relpath(name, tmp) if inside else dest
        raise _write_error(e, os.path.normpath(where)) from e


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
    with naming_destination(folder):
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

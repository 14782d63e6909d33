"""Atomic file and folder writes: nothing half-written, whatever kills the process.

Every writer goes through a temp name in the destination's own folder and a rename, so a reader sees either
the old content or the new, never a part. Files get the mode `open()` would give them (0666 & ~umask; the
temp files of `mkstemp` are 0600, which would hide results from teammates and serving containers). An OS error
while writing (read-only file system, permission denied, disk full) is a `WriteError` naming the destination, never
the hidden temp file.

What a written record says of a path is portable (`portable_path`, `portable_text`, `portable_data`): relative to
the working folder (or a given root) where the path is inside it, else a placeholder (`<tmp>`, `<home>`, `<abs>`,
or one the writer names, e.g. `<out>`) and the path's last few names, so committed results hold no machine's own
absolute paths.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path, PureWindowsPath
from typing import Any, Iterator, Mapping

__all__ = ['atomic_path', 'atomic_write_text', 'atomic_dir', 'save_figure', 'default_file_mode', 'default_dir_mode',
           'commit_file', 'lock_folder', 'unlock_folder', 'WriteError', 'naming_destination', 'portable_path',
           'portable_text', 'portable_data']


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


# ------------------------------------------------------------------------------------------- portable paths
# placeholder -> base path (a folder, or one file such as the python executable)
Names = Mapping[str, 'str | os.PathLike']
ELIDED = '...'  # what stands for the names left out between a placeholder and a path's last names
# NOTE: the same on every Linux machine (and inputs of their own in the bad-input sweep): kept as they are
_SYSTEM_DIRS = frozenset({'dev', 'proc', 'sys'})
_PACKAGE_DIRS = ('site-packages', 'dist-packages')  # an installed package's path: `<site-packages>/pkg/...`
_WINDOWS_ABS = re.compile(r'^(?:[A-Za-z]:[\\/]|\\\\)')
_NAME = r'[\w.@+-]'
# NOTE: an absolute path of two names or more inside text, not the tail of a relative path, a URL or a placeholder
# (nothing path-like right before it); POSIX, or a Windows drive path
_ABS_IN_TEXT = re.compile(rf'(?<![\w.@+:/\\<>~-])(?:/{_NAME}+){{2,}}/?'
                          rf'|(?<![\w.@+:/\\<>~-])[A-Za-z]:[\\/](?:{_NAME}+[\\/])*{_NAME}+')


def _inside(path: str, base: str) -> str | None:
    """`path` relative to `base` ('' when they are the same), or None when it is not inside it (both normalised)."""
    if path == base:
        return ''
    head = base if base.endswith(os.sep) else base + os.sep
    return path[len(head):] if path.startswith(head) else None


def _join(head: str, rel: str) -> str:
    """`head/rel` with '/' separators ('.' for an empty `rel` with no head)."""
    rel = rel.replace(os.sep, '/')
    if not head:
        return rel or '.'
    return f'{head}/{rel}' if rel else head


def _tail(head: str, names: list[str], keep: int) -> str:
    """`head/.../<the last keep names>` (no '...' when nothing is left out)."""
    kept = names[-keep:] if keep > 0 else []
    return '/'.join([head] + ([ELIDED] if len(kept) < len(names) else []) + kept)


def _bases(root: str | os.PathLike | None, names: Names | None) -> list[tuple[str, str]]:
    """(head, normalised base) pairs to try in order: the named ones (longest base first), then the root ('' head).

    NOTE: a file-system root (`/`, `C:\\`) is no root here: every path would be "inside" it.
    """
    pairs = sorted(((name, os.path.normpath(os.fspath(base))) for name, base in (names or {}).items()),
                   key=lambda p: -len(p[1]))
    top = os.path.normpath(os.fspath(root) if root is not None else os.getcwd())
    if os.path.dirname(top) != top:
        pairs.append(('', top))
    return pairs


def _elsewhere(path: str, tail: int) -> str:
    """A normalised absolute path outside every base: a placeholder for where it is, and its last names."""
    parts = [p for p in path.split(os.sep) if p]
    if parts and parts[0] in _SYSTEM_DIRS:
        return path
    for marker in _PACKAGE_DIRS:
        if marker in parts:
            at = len(parts) - 1 - parts[::-1].index(marker)
            return _join(f'<{marker}>', '/'.join(parts[at + 1:]))
    home = os.path.normpath(os.path.expanduser('~'))
    for head, base in (('<tmp>', os.path.normpath(tempfile.gettempdir())), ('<tmp>', os.sep + 'tmp'),
                       ('<home>', home)):
        rel = _inside(path, base) if os.path.dirname(base) != base else None
        if rel is not None:
            return _tail(head, [p for p in rel.split(os.sep) if p], tail)
    # NOTE: never the first name (`/work`, `/opt`): that is the machine-specific part
    return _tail('<abs>', parts, min(tail, max(1, len(parts) - 1)))


def portable_path(path: str | os.PathLike, root: str | os.PathLike | None = None, names: Names | None = None,
                  tail: int = 3) -> str:
    """How a written record names `path`: portable, with no absolute path of this machine.

    A relative path (or a name that is no path, e.g. a model name) is kept as it is. An absolute one is, in order:
    a placeholder of `names` where it is inside that base (`<out>/summary.md`); relative to `root` where it is
    inside it (`runs/demo/arch.yaml`); kept where it is a system path (`/dev/null`, `/proc/...`); else
    `<site-packages>/pkg/...`, or `<tmp>`, `<home>` or `<abs>` followed by its last `tail` names
    (`<tmp>/.../runs/demo/arch.yaml`). A Windows drive path on another OS is `<abs>/...` too.

    Args:
        path: The path (or any string).
        root: The folder relative paths are relative to (default: the current working folder).
        names: Placeholder -> base path, tried first (longest base first), e.g. {'<out>': out_dir, '<python>':
            sys.executable}.
        tail: How many of its last names an elsewhere path keeps.
    """
    text = os.fspath(path)
    if os.name != 'nt' and _WINDOWS_ABS.match(text):
        parts = [p for p in PureWindowsPath(text).parts[1:] if p not in ('\\', '/')]
        return _tail('<abs>', parts, min(tail, max(1, len(parts) - 1)))
    if not os.path.isabs(text):
        return text
    found = os.path.normpath(text)
    bases = _bases(root, names)
    for candidate in dict.fromkeys([found, os.path.realpath(found)]):  # NOTE: a path through a symlink too
        for head, base in bases:
            rel = _inside(candidate, base)
            if rel is not None:
                return _join(head, rel)
    return _elsewhere(found, tail)


def portable_text(text: str, root: str | os.PathLike | None = None, names: Names | None = None,
                  tail: int = 3) -> str:
    """`text` (a log line, an error, a traceback) with every absolute path in it made a `portable_path`.

    The bases of `names` and `root` are replaced wherever they start a path, even one with spaces in its names
    (a temp folder named after a case); the other absolute paths are found by their shape (two names or more).

    Args:
        text: Any text.
        root: See `portable_path`.
        names: See `portable_path`.
        tail: See `portable_path`.
    """
    for head, base in _bases(root, names):
        # NOTE: the base where a path starts (not inside another path): followed by a separator and a name, or by
        # no name (the base itself)
        start = rf'(?<![\w.@+/\\-]){re.escape(base)}'
        inside, itself = f'{head}/' if head else '', head or '.'
        text = re.sub(rf'{start}[/\\](?={_NAME})', lambda m, s=inside: s, text)  # NOTE: a function: taken literally
        text = re.sub(rf'{start}(?!{_NAME})', lambda m, s=itself: s, text)
    return _ABS_IN_TEXT.sub(lambda m: portable_path(m.group(0), root, names, tail), text)


def portable_data(value: Any, root: str | os.PathLike | None = None, names: Names | None = None,
                  tail: int = 3) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with `portable_text` applied to every string in it; keys
    and numbers are kept as they are.

    Args:
        value: The value.
        root: See `portable_path`.
        names: See `portable_path`.
        tail: See `portable_path`.
    """
    if isinstance(value, str):
        return portable_text(value, root, names, tail)
    if isinstance(value, dict):
        return {k: portable_data(v, root, names, tail) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_data(v, root, names, tail) for v in value)
    return value

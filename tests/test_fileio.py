"""Atomic writes: the mode open() would give, nothing left behind on an error, folders renamed into place."""
import os
import stat

import pytest

from fna_zoo.fileio import atomic_dir, atomic_path, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_usual_mode_and_leave_nothing_on_error(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / 'a' / 'x.txt', 'hello')
        assert (tmp_path / 'a' / 'x.txt').read_text() == 'hello' and _mode(tmp_path / 'a' / 'x.txt') == 0o644
        with pytest.raises(RuntimeError):
            with atomic_path(tmp_path / 'a' / 'x.txt') as tmp:
                tmp.write_text('half')
                raise RuntimeError('killed')
        assert (tmp_path / 'a' / 'x.txt').read_text() == 'hello'  # the old content, untouched
        assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == ['x.txt']
    finally:
        os.umask(old)


def test_atomic_dir(tmp_path):
    dest = tmp_path / 'set'
    with pytest.raises(ValueError):
        with atomic_dir(dest) as tmp:
            (tmp / 'part').write_text('1')
            raise ValueError('bad input')
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(dest) as tmp:
        (tmp / 'done').write_text('1')
    assert (dest / 'done').read_text() == '1' and _mode(dest) == 0o777 & ~_umask()  # as mkdir would make it
    with pytest.raises(FileExistsError, match='exists already; expected a new folder'):
        with atomic_dir(dest):
            pass


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u

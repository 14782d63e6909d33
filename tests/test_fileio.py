"""Atomic writes: the mode open() would give, nothing left behind on an error, folders renamed into place."""
import errno
import os
import stat

import pytest

from fna_zoo import fileio
from fna_zoo.fileio import WriteError, atomic_dir, atomic_path, atomic_write_text, lock_folder


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


# ------------------------------------------------------------------ OS errors name the destination
def _raise(err_no: int, filename=None):
    def fail(*args, **kwargs):
        raise OSError(err_no, os.strerror(err_no), *([filename] if filename is not None else []))
    return fail


@pytest.mark.parametrize('where, err_no', [
    ('mkstemp', errno.EROFS), ('mkstemp', errno.EACCES), ('replace', errno.EROFS), ('replace', errno.ENOSPC),
    ('chmod', errno.EPERM), ('write', errno.ENOSPC), ('write', errno.EDQUOT),
])
def test_write_errors_name_the_destination(tmp_path, monkeypatch, where, err_no):
    dest = tmp_path / 'out' / 'metrics.json'
    if where == 'mkstemp':
        monkeypatch.setattr(fileio.tempfile, 'mkstemp', _raise(err_no, str(tmp_path / 'out' / '.metrics.json.x.tmp')))
    elif where in ('replace', 'chmod'):
        monkeypatch.setattr(fileio.os, where, _raise(err_no, str(tmp_path / 'out' / '.metrics.json.x.tmp')))
    with pytest.raises(WriteError) as e:
        if where == 'write':
            with atomic_path(dest) as tmp:
                _raise(err_no)()  # e.g. a writer's flush on a full disk: no file name at all
        else:
            atomic_write_text(dest, '{}')
    assert str(e.value) == f"cannot write '{dest}': {os.strerror(err_no)}"
    assert e.value.errno == err_no and e.value.filename == str(dest)
    if err_no == errno.EACCES:
        assert isinstance(e.value, PermissionError)  # handlers of the raw class still catch it
    monkeypatch.undo()
    assert not dest.exists() and [p.name for p in (tmp_path / 'out').iterdir()] == []  # no temp left


def test_read_errors_in_a_writer_pass_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        with atomic_path(tmp_path / 'copy.bin') as tmp:
            tmp.write_bytes((tmp_path / 'missing-source.bin').read_bytes())
    assert not isinstance(e.value, WriteError) and 'missing-source.bin' in str(e.value)


def test_atomic_dir_errors_name_the_final_place(tmp_path, monkeypatch):
    dest = tmp_path / 'set'
    with pytest.raises(WriteError) as e:
        with atomic_dir(dest) as tmp:
            monkeypatch.setattr(fileio.os, 'replace', _raise(errno.ENOSPC))
            atomic_write_text(tmp / 'annotations' / 'a.json', '{}')
    assert str(e.value) == f"cannot write '{dest / 'annotations' / 'a.json'}': No space left on device"
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder(tmp_path):
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip('running as root: a 0555 folder stays writable')
        with pytest.raises(PermissionError, match=rf"^cannot write '{ro / 'x.txt'}': Permission denied$"):
            atomic_write_text(ro / 'x.txt', 'x')
        with pytest.raises(WriteError, match=rf"^cannot write '{ro / 'run'}'"):
            lock_folder(ro / 'run')
    finally:
        ro.chmod(0o755)


def test_cli_prints_one_line_naming_the_destination(tmp_path, monkeypatch, capsys):
    from fna_zoo.cli.common import run_cli

    monkeypatch.setattr(fileio.os, 'replace', _raise(errno.EROFS, str(tmp_path / '.result.json.abc.tmp')))
    code = run_cli(lambda argv: atomic_write_text(tmp_path / 'result.json', '{}'), [])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: cannot write '{tmp_path / 'result.json'}': "
                                                    'Read-only file system']

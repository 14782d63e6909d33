"""scripts/bad_input_sweep.py: its classifier, its case list, and one real case run end to end."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def sweep():
    spec = importlib.util.spec_from_file_location('bad_input_sweep', ROOT / 'scripts' / 'bad_input_sweep.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['bad_input_sweep'] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop('bad_input_sweep', None)


TRACEBACK = ('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
             'IndexError: list index out of range\n')


@pytest.mark.parametrize('returncode, stderr, timed_out, expected', [
    (2, "error: config train.lr is 'abc'; expected a number\n", False, 'clean'),
    (2, '2026-01-01 WARNING fna_zoo: a log line first\nerror: bad value\n\n', False, 'clean'),  # last line counts
    (1, TRACEBACK, False, 'traceback'),
    (2, TRACEBACK + 'error: after a traceback\n', False, 'traceback'),
    (0, 'retrain: 100%|##########| 1/1\n', False, 'silent'),
    (1, 'error: a gate failed\n', False, 'other'),          # exit 1 is a gate, not a user error
    (2, 'error: first\nsecond line of garbage\n', False, 'other'),
    (None, '', True, 'other'),
])
def test_classifier(sweep, returncode, stderr, timed_out, expected):
    assert sweep.classify(returncode, stderr, timed_out) == expected


def test_case_list_covers_every_command(sweep, tmp_path):
    cases = sweep.build_cases(tmp_path / 'fx')
    assert len(cases) >= 200 and len({c.id for c in cases}) == len(cases)
    assert {c.command for c in cases} == set(sweep.COMMANDS)


def test_a_real_case_is_clean_and_leaves_nothing(sweep, tmp_path):
    case = sweep.Case('fna-retrain:set train.lr=abc', 'fna-retrain', ['-o', '{tmp}/run', '--set', 'train.lr=abc'],
                      ['{tmp}/run'])
    r = sweep.run_case(case, tmp_path, timeout=120)
    assert r['class'] == 'clean', r['stderr_tail']
    assert r['last_line'] == "error: config train.lr is 'abc'; expected a number"
    assert not r['stub'] and not r['executed']
    md = sweep.summarize([r])
    assert '1 cases: 1 clean, 0 traceback, 0 silent, 0 other; 0 left stub files' in md
    assert '| fna-retrain | 1 | 1 | 0 | 0 | 0 | 0 |' in md and 'Failing cases (0)' in md


def test_a_misleading_line_and_a_left_lock_file_are_counted(sweep, tmp_path):
    """Issue 33: an error line that lacks what the case expects (or echoes an input uncapped) is `misleading`; a lock
    file left in a run folder is a stub."""
    def fake(line: str, leave_lock: bool = False):
        def execute(argv, cwd, cpu, wall):
            if leave_lock:
                (tmp_path / 'run' / '.lock').write_text('pid 1')
            return 2, '', f'error: {line}\n', False
        return execute

    (tmp_path / 'run').mkdir()
    case = sweep.Case('fna-test:checkpoint dir.pth', 'fna-test', [], [str(tmp_path / 'run')], 'is a directory')
    said = sweep.run_case(case, tmp_path, execute=fake("checkpoint 'dir.pth' does not exist"))
    assert said['class'] == 'clean' and said['misleading'] and not said['stub']
    assert not sweep.run_case(case, tmp_path, execute=fake("checkpoint 'dir.pth' is a directory"))['misleading']
    long = sweep.run_case(sweep.Case('x:y', 'fna-test', []), tmp_path, execute=fake('[' * 5000))
    assert long['misleading'] and long['line_chars'] == 5007
    locked = sweep.run_case(case, tmp_path, execute=fake('is a directory', leave_lock=True))
    assert locked['stub'] and locked['stub_paths'] == ['<work>/run']  # recorded with no absolute path
    md = sweep.summarize([said, locked])
    assert '1 left stub files; 0 ran a payload; 1 misleading error lines.' in md and 'MISLEADING (' in md


def test_what_a_case_records_names_no_absolute_path(sweep, tmp_path):
    """sweep.json / sweep.md name the case's folder `<case>`, the sweep's `<work>`, this checkout's files relative to
    it; the class is judged on the real text."""
    def execute(argv, cwd, cpu, wall):
        tb = (f'Traceback (most recent call last):\n  File "{sweep.ROOT}/fna_zoo/cli/test.py", line 1, in <module>\n'
              f"FileNotFoundError: {cwd}/d.json and {tmp_path}/fixtures/ok.pth\n")
        return 1, '', tb, False

    case = sweep.Case('fna-test:set x=1 / y', 'fna-test', ['-o', '{tmp}/d.json', '--checkpoint',
                                                          str(tmp_path / 'fixtures' / 'ok.pth')], ['{tmp}/d.json'])
    r = sweep.run_case(case, tmp_path, execute=execute)
    assert r['class'] == 'traceback' and r['args'] == ['-o', '<case>/d.json', '--checkpoint', '<work>/fixtures/ok.pth']
    assert r['last_line'] == 'FileNotFoundError: <case>/d.json and <work>/fixtures/ok.pth'
    assert 'File "fna_zoo/cli/test.py"' in r['stderr_tail'] and str(tmp_path) not in str(r)

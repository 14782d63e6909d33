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

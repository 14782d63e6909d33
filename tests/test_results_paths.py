"""Committed results hold no machine's own absolute path (every text file under benchmarks/results), and the one
helper the writers use for it (`fna_zoo.fileio.portable_path` / `portable_text` / `portable_data`)."""
import csv
import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from fna_zoo.fileio import ELIDED, portable_data, portable_path, portable_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
TEXT_SUFFIXES = {'.json', '.csv', '.md', '.log', '.txt'}
# NOTE: an absolute path of a machine: under one of these top folders, or a Windows drive path (`C:\`, `C:/`; in
# JSON the backslash is doubled). Where a path starts: not inside a relative path or after a placeholder
# (`<tmp>/.../work/x.pth` names no machine's folder)
ABSOLUTE = re.compile(r'(?<![\w.>-])/(work|root|tmp|home|opt|usr|mnt|var)/'
                      r'|(?<![A-Za-z0-9])[A-Za-z]:(\\\\|\\|/)[\w.]')


def _result_files() -> list[Path]:
    return sorted(p for p in RESULTS.rglob('*') if p.is_file() and p.suffix in TEXT_SUFFIXES)


@pytest.mark.parametrize('path', _result_files(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_no_result_file_holds_an_absolute_path(path):
    lines = path.read_text(errors='replace').splitlines()
    found = [f'line {n}: {line.strip()[:200]}' for n, line in enumerate(lines, 1) if ABSOLUTE.search(line)]
    assert not found, (f'{path.relative_to(ROOT)} holds absolute paths (write them with '
                       'fna_zoo.fileio.portable_path):\n' + '\n'.join(found[:10]))


@pytest.mark.parametrize('path', [p for p in _result_files() if p.suffix == '.json'],
                         ids=lambda p: str(p.relative_to(RESULTS)))
def test_result_json_files_parse(path):
    json.loads(path.read_text())


def test_the_scan_sees_what_it_must_refuse():
    for bad in ('/tmp/democlone/runs/demo_search/arch.yaml', '"/work/wt20b/runs/x/final.pth"',
                '(/root/out/gpu_check)', 'C:\\Users\\me\\x.pth', '"C:\\\\Users\\\\me"', 'D:/data/coco'):
        assert ABSOLUTE.search(bad), bad
    for good in ('runs/demo_search/arch.yaml', '<tmp>/.../runs/demo_search/arch.yaml', '<out>/summary.md',
                 '2026-11-29T13:40:23Z', 'https://docs.pytorch.org/docs/main/x.html', 'img/s', '/proc/fna_sweep_run'):
        assert not ABSOLUTE.search(good), good
    assert not ABSOLUTE.search(f'<home>/work/x.pth <tmp>/{ELIDED}/tmp/a.onnx runs/tmp/b.json')  # portable already


# ------------------------------------------------------------------------------------------- the helper
def test_a_path_inside_the_root_is_relative(tmp_path, monkeypatch):
    assert portable_path(tmp_path / 'runs' / 'demo' / 'arch.yaml', root=tmp_path) == 'runs/demo/arch.yaml'
    assert portable_path(str(tmp_path), root=tmp_path) == '.'
    assert portable_path(f'{tmp_path}/runs/../runs/a.pth', root=tmp_path) == 'runs/a.pth'  # normalised
    monkeypatch.chdir(tmp_path)  # default root: the working folder
    assert portable_path(tmp_path / 'final.pth') == 'final.pth'
    # a sibling whose name starts with the root's is not inside it
    assert portable_path(f'{tmp_path}x/a.pth', root=tmp_path) != 'x/a.pth'


def test_a_name_or_a_relative_path_is_kept():
    for value in ('runs/demo/arch.yaml', 'efficientnet_b0', 'timm:mobilenetv2_100', 'asset:neon_trees',
                  '[[k3_e3, k5_e6], [skip]]', '', '../other/arch.yaml'):
        assert portable_path(value) == value


def test_a_path_elsewhere_is_a_placeholder_and_its_last_names(tmp_path):
    tmp = tempfile.gettempdir()
    root = tmp_path / 'checkout'
    assert portable_path(f'{tmp}/democlone/runs/demo_search/arch.yaml', root=root) == \
        f'<tmp>/{ELIDED}/runs/demo_search/arch.yaml'
    assert portable_path(f'{tmp}/deploy2/onnx/final.onnx', root=root) == '<tmp>/deploy2/onnx/final.onnx'
    assert portable_path(f'{tmp}/a/b/c/d.pth', root=root, tail=1) == f'<tmp>/{ELIDED}/d.pth'
    # NOTE: never the first name of a path elsewhere (`/work`, `/opt`): the machine-specific part
    assert portable_path('/work/wt20b/runs/demo_retinanet/final.pth', root=root) == \
        f'<abs>/{ELIDED}/runs/demo_retinanet/final.pth'
    assert portable_path('/srv/shared/coco', root=root) == f'<abs>/{ELIDED}/shared/coco'
    assert portable_path('/weights.pth', root=root) == '<abs>/weights.pth'
    home = os.path.expanduser('~')
    if os.path.dirname(home) != home and not str(root).startswith(home + os.sep):
        assert portable_path(os.path.join(home, 'data', 'coco'), root=root) == '<home>/data/coco'
    assert portable_path('/opt/torch/.venv/lib/python3.12/site-packages/torch/_dynamo/eval_frame.py', root=root) \
        == '<site-packages>/torch/_dynamo/eval_frame.py'
    assert portable_path('C:\\Users\\me\\runs\\demo\\final.pth', root=root) == f'<abs>/{ELIDED}/runs/demo/final.pth'
    for system in ('/dev/null', '/proc/fna_sweep_run', '/sys/fna_sweep.onnx'):  # the same on every machine
        assert portable_path(system, root=root) == system


def test_named_bases_come_first(tmp_path):
    out, python = tmp_path / 'out', '/opt/torch/.venv/bin/python3'
    names = {'<out>': out, '<python>': python}
    assert portable_path(out / 'summary.md', root=tmp_path, names=names) == '<out>/summary.md'  # not 'out/...'
    assert portable_path(out, root=tmp_path, names=names) == '<out>'
    assert portable_path(python, root=tmp_path, names=names) == '<python>'
    # the longest base wins
    inner = {'<work>': tmp_path, '<case>': tmp_path / 'case one.x1'}
    assert portable_path(tmp_path / 'case one.x1' / 'run', names=inner) == '<case>/run'


def test_text_has_every_absolute_path_made_portable(tmp_path):
    root, out = '/work/main', '/root/out/gpu_check'
    names = {'<out>': out, '<python>': '/opt/torch/.venv/bin/python3'}
    line = ("W1129 [0/8]    function: 'forward' (/work/main/fna_zoo/export/onnx_export.py:65); see "
            'https://docs.pytorch.org/docs/main/x.html; results in /root/out/gpu_check; /root/out/gpu_check/summary.md '
            'by /opt/torch/.venv/bin/python3 -m x; 1/2 img/s a/b/c /dev/null')
    assert portable_text(line, root, names) == (
        "W1129 [0/8]    function: 'forward' (fna_zoo/export/onnx_export.py:65); see "
        'https://docs.pytorch.org/docs/main/x.html; results in <out>; <out>/summary.md by <python> -m x; '
        '1/2 img/s a/b/c /dev/null')
    # a named base with spaces in it (the sweep's case folders are named after their case)
    case = f'{tmp_path}/fna-search_set data.workers=-1.ab12cd34'
    args = f'-o {case}/run --set data.synthetic.root={tmp_path}/fixtures/data'
    assert portable_text(args, root, {'<case>': case, '<work>': tmp_path}) == \
        '-o <case>/run --set data.synthetic.root=<work>/fixtures/data'
    # not inside another path, and not a longer name
    assert portable_text('/x/work/main/a.py and /work/mainframe/a.py', root) == \
        f'<abs>/{ELIDED}/work/main/a.py and <abs>/{ELIDED}/mainframe/a.py'
    # already portable text is kept as it is
    done = portable_text(line, root, names)
    assert portable_text(done, root, names) == done
    assert not ABSOLUTE.search(done)


def test_data_keeps_keys_and_numbers():
    value = {'model': '/tmp/x/runs/a/arch.yaml', 'p50_ms': 1.25, 'n': 20, 'ok': True, 'none': None,
             'rows': [{'traceback': 'File "/work/main/fna_zoo/nas/supernet.py", line 319'}], 'size': (320, 320),
             '/work/main/key': 1.0}
    got = portable_data(value, '/work/main')
    assert got['p50_ms'] == 1.25 and got['n'] == 20 and got['ok'] is True and got['none'] is None
    assert got['size'] == (320, 320) and got['/work/main/key'] == 1.0  # keys are kept
    assert got['rows'][0]['traceback'] == 'File "fna_zoo/nas/supernet.py", line 319'
    assert not ABSOLUTE.search(json.dumps({k: v for k, v in got.items() if k != '/work/main/key'}))


# ------------------------------------------------------------------------------------------- a writer
def test_bench_results_are_written_portably(tmp_path, monkeypatch):
    from fna_zoo.bench.grid import FIELDS, write_results

    monkeypatch.chdir(tmp_path)
    row = {k: None for k in FIELDS}
    row.update(model=str(tmp_path / 'runs' / 's' / 'arch.yaml'), what='backbone', runtime='torch', p50_ms=1.5,
               note=f'parity checked against {tempfile.gettempdir()}/fna-bench-x1/m.onnx')
    elsewhere = dict(row, model='/work/wt20b/runs/s/arch.yaml')
    csv_path, json_path = write_results([row, elsewhere], tmp_path / 'out')
    rows = json.loads(json_path.read_text())['rows']
    assert [r['model'] for r in rows] == ['runs/s/arch.yaml', f'<abs>/{ELIDED}/runs/s/arch.yaml']
    assert rows[0]['note'] == 'parity checked against <tmp>/fna-bench-x1/m.onnx' and rows[0]['p50_ms'] == 1.5
    with open(csv_path) as f:
        assert [r['model'] for r in csv.DictReader(f)] == [r['model'] for r in rows]
    assert row['model'] == str(tmp_path / 'runs' / 's' / 'arch.yaml')  # the caller's rows are left as they are
    for p in (csv_path, json_path):
        assert not ABSOLUTE.search(p.read_text()) and str(tmp_path) not in p.read_text()

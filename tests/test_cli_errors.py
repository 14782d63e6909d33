"""The error convention of every command line: a user error prints exactly one `error: ...` line naming the
bad value, exits 2 and leaves no file at the output path (search/retrain.py, search/test.py, fna-export).

Every case runs in its own process through the command's real `__main__` (the script file, or
`python -m fna_zoo.export`). Importing torch + timm costs ~3-8 CPU seconds per fresh interpreter, so one
case per command runs in a fresh interpreter and the others in processes forked from a helper that has
imported the project once (`_FORKSERVER`), two at a time; each case fails before any heavy work (tiny data, no
training).
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from fna_zoo import get_arch
from fna_zoo.data import make_synthetic_coco
from fna_zoo.engine import load_config, save_checkpoint
from fna_zoo.detection import build_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'FNA_ZOO_DEBUG': ''}
# NOTE: forked after imports only (no torch ops ran in the helper), so no thread pools are inherited.
_FORKSERVER = r"""
import json, os, runpy, sys, traceback
import fna_zoo, fna_zoo.cli.retrain, fna_zoo.cli.test, fna_zoo.cli.export  # the imports every case shares
results, running = {}, {}
for case in json.load(sys.stdin):
    if len(running) == 2:  # two cases at a time, one per core
        pid, status = os.wait()
        results[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(case['cwd'])
            for fd, name in ((1, 'stdout'), (2, 'stderr')):
                os.dup2(os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            cmd = case['cmd'][1:]
            try:
                if cmd[0] == '-m':
                    sys.argv = [cmd[1], *cmd[2:]]
                    runpy.run_module(cmd[1], run_name='__main__', alter_sys=True)
                else:
                    sys.argv = cmd
                    runpy.run_path(cmd[0], run_name='__main__')
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    running[pid] = case['id']
for pid, case_id in running.items():
    results[case_id] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(results))
"""
FRESH = ('retrain-bad-config-key', 'test-corrupt-checkpoint', 'export-unknown-model')  # fresh interpreters
RETRAIN = [sys.executable, str(ROOT / 'search' / 'retrain.py')]
TEST = [sys.executable, str(ROOT / 'search' / 'test.py')]
EXPORT = [sys.executable, '-m', 'fna_zoo.export']
BENCH = [sys.executable, '-m', 'fna_zoo.cli.bench']
PUBLISH = [sys.executable, '-m', 'fna_zoo.cli.publish']
LATENCY = [sys.executable, '-m', 'fna_zoo.cli.latency_table']
DEMO = [sys.executable, '-m', 'fna_zoo.demo']
PREDICT = [sys.executable, str(ROOT / 'examples' / 'predict_onnx.py')]


def _cases(t: Path) -> dict[str, tuple[list[str], Path | None, str]]:
    """id -> (command, output path that must not exist afterwards (or None), text the error line must hold)."""
    data = [f'data.synthetic.root={t / "data"}', 'data.synthetic.num_train=4', 'data.synthetic.num_val=2',
            'data.synthetic.image_size=64', 'data.synthetic.num_classes=3', 'data.workers=0',
            'model.kwargs={min_size: 64, max_size: 64, head_width: 16}']
    ok, bad_arch, blocker = str(t / 'ok.pth'), str(t / 'bad_arch.yaml'), t / 'blocker'
    return {
        # search/retrain.py
        'retrain-unknown-model': ([*RETRAIN, '--output', str(t / 'r1'), '--set', *data, 'model.backbone=nope'],
                                  t / 'r1', "unknown backbone 'nope'; expected an FNA arch"),
        'retrain-bad-config-key': ([*RETRAIN, '--output', str(t / 'r2'), '--set', *data, 'train.lrr=1'],
                                   t / 'r2', "unknown config key 'train.lrr'; expected one of"),
        'retrain-missing-config': ([*RETRAIN, '--config', str(t / 'none.yaml'), '--output', str(t / 'r3')],
                                   t / 'r3', 'none.yaml\' does not exist'),
        'retrain-missing-data': ([*RETRAIN, '--output', str(t / 'r4'), '--data_path', str(t / 'nodata'), '--set', *data],
                                 t / 'r4', f"data folder '{t / 'nodata'}' does not exist"),
        'retrain-bad-arch': ([*RETRAIN, '--output', str(t / 'r5'), '--arch', bad_arch, '--set', *data],
                             t / 'r5', 'bad_arch.yaml'),
        'retrain-arch-stride-16': ([*RETRAIN, '--output', str(t / 'r6'), '--arch', str(t / 'stride16.yaml'), '--set',
                                    *data], t / 'r6', 'stride16.yaml\' has output stride 16 (stem 2 x stage strides'),
        'retrain-arch-nested': ([*RETRAIN, '--output', str(t / 'r7'), '--arch', str(t / 'nested.json'), '--set', *data],
                                t / 'r7', 'arch JSON is nested too deeply'),
        'retrain-unwritable-output': ([*RETRAIN, '--output', str(blocker / 'run'), '--set', *data],
                                      blocker / 'run', str(blocker)),
        # search/test.py
        'test-missing-checkpoint': ([*TEST, '--checkpoint', str(t / 'none.pth'), '--out', str(t / 'd1.json')],
                                    t / 'd1.json', f"checkpoint '{t / 'none.pth'}' does not exist"),
        'test-corrupt-checkpoint': ([*TEST, '--checkpoint', str(t / 'corrupt.pth'), '--out', str(t / 'd2.json')],
                                    t / 'd2.json', 'is corrupt or not a checkpoint'),
        'test-foreign-checkpoint': ([*TEST, '--checkpoint', str(t / 'foreign.pth'), '--out', str(t / 'd3.json')],
                                    t / 'd3.json', "lacks ['model', 'config']"),
        'test-missing-data': ([*TEST, '--checkpoint', ok, '--data_path', str(t / 'nodata'), '--out', str(t / 'd4.json')],
                              t / 'd4.json', f"data folder '{t / 'nodata'}' does not exist"),
        'test-bad-config-key': ([*TEST, '--checkpoint', ok, '--set', 'eval.batch_sise=2', '--out', str(t / 'd5.json')],
                                t / 'd5.json', "unknown config key 'eval.batch_sise'"),
        # fna-export
        'export-unknown-model': ([*EXPORT, '--model', 'nope', '--output', str(t / 'e1.onnx')],
                                 t / 'e1.onnx', "unknown model 'nope'; expected a zoo arch"),
        'export-missing-checkpoint': ([*EXPORT, '--checkpoint', str(t / 'none.pth'), '--output', str(t / 'e2.onnx')],
                                      t / 'e2.onnx', f"checkpoint '{t / 'none.pth'}' does not exist"),
        'export-corrupt-checkpoint': ([*EXPORT, '--checkpoint', str(t / 'corrupt.pth'), '--output', str(t / 'e3.onnx')],
                                      t / 'e3.onnx', 'is corrupt or not a checkpoint'),
        'export-foreign-checkpoint': ([*EXPORT, '--checkpoint', str(t / 'foreign.pth'), '--output', str(t / 'e4.onnx')],
                                      t / 'e4.onnx', "lacks ['model', 'config']"),
        'export-bad-arch': ([*EXPORT, '--arch', bad_arch, '--output', str(t / 'e5.onnx')], t / 'e5.onnx',
                            'bad_arch.yaml'),
        'export-arch-stride-16': ([*EXPORT, '--arch', str(t / 'stride16.yaml'), '--output', str(t / 'e12.onnx')],
                                   t / 'e12.onnx', 'has output stride 16'),
        'export-arch-nested': ([*EXPORT, '--arch', str(t / 'nested.yaml'), '--output', str(t / 'e13.onnx')],
                               t / 'e13.onnx', 'arch YAML is nested too deeply'),
        'export-missing-arch': ([*EXPORT, '--arch', str(t / 'none.yaml'), '--output', str(t / 'e6.onnx')],
                                t / 'e6.onnx', "arch file '" + str(t / 'none.yaml') + "' does not exist"),
        'export-bad-input-size': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--input-size', '100', '64',
                                   '--output', str(t / 'e7.onnx')], t / 'e7.onnx',
                                  'input size 100 x 64 for the backbone is invalid; expected H W, two positive multiples of 32'),
        'export-unwritable-output': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--output', str(blocker / 'x.onnx')],
                                     blocker / 'x.onnx', 'is not writable'),
        'export-bad-output-suffix': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--output', str(t / 'e8.txt')],
                                     t / 'e8.txt', "has suffix '.txt'; expected a .onnx file"),
        'export-missing-data': ([*EXPORT, '--checkpoint', ok, '--int8', '--data_path', str(t / 'nodata'),
                                 '--output', str(t / 'e9.onnx')], t / 'e9.onnx', f"data folder '{t / 'nodata'}' does not exist"),
        'export-what-needs-checkpoint': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--what', 'nms',
                                          '--output', str(t / 'e10.onnx')], t / 'e10.onnx', '--what nms needs a detector --checkpoint'),
        'export-bad-opset': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--opset', '9', '--output', str(t / 'e11.onnx')],
                             t / 'e11.onnx', '--opset is 9; expected 11..20'),
        'export-usage-error': ([*EXPORT, '--model', 'fna_retinanet_backbone'], None,
                               'the following arguments are required: --output'),
        # found by scripts/bad_input_sweep.py (tracebacks, silent acceptances and stub files before)
        'export-out-indices-9': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--out-indices', '9', '--output',
                                  str(t / 'e14.onnx')], t / 'e14.onnx', '--out-indices 9 is invalid; expected distinct'),
        'export-atol-nan': ([*EXPORT, '--model', 'fna_retinanet_backbone', '--atol', 'nan', '--output',
                             str(t / 'e15.onnx')], t / 'e15.onnx', '--atol is nan; expected a positive tolerance'),
        'export-int8-bad-data': ([*EXPORT, '--checkpoint', ok, '--int8', '--data_path', str(t / 'nested_coco'),
                                  '--output', str(t / 'e16.onnx')], t / 'e16.onnx', 'is nested too deeply to parse'),
        'test-wrong-kind-checkpoint': ([*TEST, '--checkpoint', str(t / 'wrongkind.pth'), '--out', str(t / 'd6.json')],
                                       t / 'd6.json', "has a run config without ['detector', 'model', 'data'"),
        'test-set-model': ([*TEST, '--checkpoint', ok, '--set', 'model.num_classes=9', '--out', str(t / 'd7.json')],
                           t / 'd7.json', "changes the model, which fna-test takes from the checkpoint"),
        'test-set-wrong-type': ([*TEST, '--checkpoint', ok, '--set', 'data.workers=abc', '--out', str(t / 'd8.json')],
                                t / 'd8.json', "config data.workers is 'abc'; expected an integer"),
        'retrain-config-section-scalar': ([*RETRAIN, '--output', str(t / 'r8'), '--set', 'train=5', *data], t / 'r8',
                                          'config train is 5; expected a mapping'),
        'bench-compare-batch-0': ([*BENCH, 'compare', 'mobilenetv2_100', 'mobilenetv2_100@onnxruntime', '--batch', '0',
                                   '-o', str(t / 'b1')], t / 'b1', '--batch is 0; expected a positive integer'),
        'bench-report-bad-rows': ([*BENCH, 'report', '--results', str(t / 'rows.json'), '-o', str(t / 'b2')], t / 'b2',
                                  "rows[0] is 1; expected a fna-bench row with model, batch"),
        'bench-report-deep-results': ([*BENCH, 'report', '--results', str(t / 'nested.json'), '-o', str(t / 'b3')],
                                      t / 'b3', 'is not a fna-bench results.json'),
        'publish-output-under-a-file': ([*PUBLISH, '--checkpoint', ok, '--output', str(blocker / 'pub')],
                                        blocker / 'pub', 'is not writable'),
        'latency-size-too-large': ([*LATENCY, '--runtime', 'onnxruntime', '--input-size', '5000', '5000', '-o',
                                    str(t / 'l1.json')], t / 'l1.json', 'two positive multiples of 32 up to 4096'),
        'demo-output-is-a-file': ([*DEMO, '--output', str(blocker)], None, 'is a file; expected a folder'),
        'demo-garbage-seed': ([*DEMO, '--seed-weights', str(t / 'corrupt.pth'), '--output', str(t / 'demo')],
                              t / 'demo', 'is not a readable state dict'),
        'predict-draw-scale-huge': ([*PREDICT, str(t / 'none.onnx'), str(t / 'none.png'), '--draw-scale', '100000'],
                                    None, '--draw-scale is 100000; expected an integer from 1 to 32'),
        'predict-usage-error': ([*PREDICT, str(t / 'none.onnx')], None,
                                'the following arguments are required: image'),
    }


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    t = tmp_path_factory.mktemp('cli')
    # the built-in data the retrain cases point at, made here so no command logs its creation
    make_synthetic_coco(t / 'data', num_train=4, num_val=2, image_size=64, num_classes=3)
    cfg = load_config(None, ['model.kwargs={min_size: 64, max_size: 64, head_width: 16}', 'model.num_classes=3',
                             f'data.synthetic.root={t / "data"}', 'data.synthetic.num_train=4',
                             'data.synthetic.num_val=2', 'data.synthetic.image_size=64', 'data.synthetic.num_classes=3'])
    save_checkpoint({'model': build_model(cfg, 3, with_seed=False).state_dict(), 'config': cfg, 'num_classes': 3,
                     'step': 0}, t / 'ok.pth')
    (t / 'corrupt.pth').write_bytes((t / 'ok.pth').read_bytes()[:200])
    torch.save({'weights': torch.ones(1)}, t / 'foreign.pth')
    (t / 'bad_arch.yaml').write_text('stem_chs: 32\nstages: [[16, 1, [k4_e6]]]\n')
    seed = get_arch('mobilenetv2_100')
    seed.replace(stages=seed.stages[:5]).save(t / 'stride16.yaml')  # no stride-32 level
    (t / 'nested.json').write_text('[' * 10000 + ']' * 10000)
    (t / 'nested.yaml').write_text('[' * 10000 + ']' * 10000)
    torch.save({'model': {}, 'config': {}}, t / 'wrongkind.pth')
    (t / 'rows.json').write_text('{"rows": [1, 2]}')
    nested_coco = t / 'nested_coco' / 'annotations'
    nested_coco.mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        (nested_coco / f'instances_{split}.json').write_text('[' * 10000 + ']' * 10000)
        (t / 'nested_coco' / split).mkdir()
    (t / 'blocker').write_text('a file where a folder is expected\n')
    cases = _cases(t)

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=t, timeout=300)

    forked = [{'id': k, 'cmd': c[0], 'cwd': str(t), 'stdout': str(t / f'{k}.out'), 'stderr': str(t / f'{k}.err')}
              for k, c in cases.items() if k not in FRESH]
    with ThreadPoolExecutor(max_workers=len(FRESH) + 1) as pool:
        fresh = dict(zip(FRESH, pool.map(run, [cases[k][0] for k in FRESH])))
        server = subprocess.run([sys.executable, '-c', _FORKSERVER], input=json.dumps(forked), capture_output=True,
                                text=True, env=ENV, cwd=t, timeout=600)
    assert server.returncode == 0, server.stderr
    codes = json.loads(server.stdout.strip().splitlines()[-1])
    done = {k: subprocess.CompletedProcess(cases[k][0], codes[k], Path(c['stdout']).read_text(),
                                           Path(c['stderr']).read_text()) for k, c in ((c['id'], c) for c in forked)}
    done.update(fresh)
    return cases, done


@pytest.mark.parametrize('case', list(_cases(Path('/x'))))
def test_user_error_is_one_line_exit_2_no_file(results, case):
    cases, done = results
    _, output, expected = cases[case]
    r = done[case]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    assert expected in lines[0], lines[0]
    assert 'Traceback' not in r.stderr
    if output is not None:
        assert not output.exists()
        assert not list(output.parent.glob(f'.{output.stem}*'))  # no temp files either


def test_a_dataloader_worker_error_is_its_own_line():
    """torch re-raises a worker's error with the worker's traceback as the message; the line is the error itself."""
    from fna_zoo.cli.common import run_cli

    def main(argv):
        raise ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\nValueError: image 'a.png' (image id 1) cannot be "
                         "decoded")

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(main, []) == 2
    assert err.getvalue() == "error: image 'a.png' (image id 1) cannot be decoded\n"


def test_the_error_line_comes_after_a_progress_bar(capsys):
    """A bar in the failing frames closes (and prints its last state) when they are freed: before the error line."""
    from tqdm import tqdm

    from fna_zoo.cli.common import run_cli

    def main(argv):
        bar = tqdm(total=3, desc='retrain')  # noqa: F841  (held by this frame until the error's traceback is gone)
        raise FloatingPointError('loss is nan at step 0')

    assert run_cli(main, []) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1] == 'error: loss is nan at step 0'

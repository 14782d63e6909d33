"""benchmarks/gpu_check.py: its smoke mode end to end on this CPU (so the prepared GPU check cannot rot), a failing
row that loses nothing else, the budget, and the projected cost of FNA's COCO search."""
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '2'}


@pytest.fixture(scope='module')
def gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', ROOT / 'benchmarks' / 'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['gpu_check'] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop('gpu_check', None)


def test_smoke_run_records_every_row(tmp_path, gpu_check):
    out = tmp_path / 'gc'
    r = subprocess.run([sys.executable, 'benchmarks/gpu_check.py', '--smoke', '--device', 'cpu', '--out', str(out),
                        '--models', 'fna_retinanet_backbone', 'nope', '--detectors', 'ssdlite'],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'gpu_check (smoke) on cpu' in r.stdout and 'done: ' in r.stdout  # progress lines
    assert sorted(p.name for p in out.iterdir()) == ['gpu_check.log', 'latency_table_torch-cpu_32x32.json',
                                                     'results.json', 'rows.csv', 'summary.md']
    # what it printed is its log, with no path of this machine: the results folder is `<out>`
    log = (out / 'gpu_check.log').read_text()
    assert 'gpu_check (smoke) on cpu' in log and 'results in <out>' in log and str(tmp_path) not in log
    written = (out / 'results.json').read_text()
    assert str(tmp_path) not in written and str(ROOT) not in written
    data = json.loads((out / 'results.json').read_text())
    assert data['smoke'] and data['machine']['torch'] and data['machine']['timm'] and data['wall_s'] > 0
    rows = {row['name']: row for row in data['rows'] if row['section'] == 'eager'}
    rows.update({row['name']: row for row in data['rows'] if row['section'] in ('search', 'table')})
    # eager: fp32 and bf16 timed, fp16 skipped on a CPU; the unknown model fails on its own rows only
    assert rows['fna_retinanet_backbone 32x32 b1 fp32']['status'] == 'ok'
    assert rows['fna_retinanet_backbone 32x32 b1 bf16']['p50_ms'] > 0
    assert rows['fna_retinanet_backbone 32x32 b1 fp16']['status'].startswith('skipped: fp16 on the CPU')
    assert rows['nope 32x32 b1 fp32']['status'] == 'failed' and "unknown model 'nope'" in rows['nope 32x32 b1 fp32']['error']
    assert rows['ssdlite(fna_ssdlite_backbone) 64x64 b1 fp32']['status'] == 'ok'
    # the search steps, the table and its MAPE, compile; TensorRT where it imports
    assert rows['FNA RetinaNet search steps']['status'] == 'ok'
    s = data['sections']['search']
    assert s['weight_median_ms'] > 0 and s['arch_median_ms'] > 0 and s['projection']['iterations_per_epoch'] == 7393
    # every precision setting this CPU runs (no fp16), fp32 first, each with its projected COCO search cost
    from fna_zoo.engine.config import load_config
    from fna_zoo.nas.config import SEARCH_DEFAULTS

    cfg = load_config(str(gpu_check.SEARCH_CONFIG), gpu_check.SMOKE_SPACE, defaults=SEARCH_DEFAULTS)
    sp = data['sections']['search_precision']
    assert [r['label'] for r in sp['rows']] == ['fp32', 'bf16', 'fp32 + channels_last', 'bf16 + channels_last']
    assert sp['rows'][0]['weight_speedup'] == sp['rows'][0]['arch_speedup'] == 1.0
    for r in sp['rows']:
        assert r['weight_ms'] > 0 and r['arch_steps_per_s'] == pytest.approx(1e3 / r['arch_ms'])
        assert r['projection']['gpu_hours'] == gpu_check.project_search(cfg, r['weight_ms'], r['arch_ms'])['gpu_hours']
        row = rows[f"search steps {r['label']}"]
        assert row['status'] == 'ok' and row['p50_ms'] == r['weight_ms'] and 'GPU-hours' in row['note']
    assert rows['search steps bf16 + channels_last']['memory_format'] == 'channels_last'
    assert rows['latency table torch-cpu 32x32']['status'] == 'ok' and data['sections']['table']['complete']
    assert data['sections']['table_accuracy']['mape'] >= 0
    compiled = [row for row in data['rows'] if row['section'] in ('compile', 'compile-fp32')]
    assert compiled and all(row['status'] == 'ok' and row['compile_s'] is not None for row in compiled)
    if importlib.util.find_spec('tensorrt') is None:
        assert data['sections']['tensorrt'].startswith('not run: tensorrt does not import')
    # the CSV and the summary say the same
    with open(out / 'rows.csv') as f:
        assert len(list(csv.DictReader(f))) == len(data['rows'])
    md = (out / 'summary.md').read_text()
    assert md.startswith('# GPU check (smoke): ') and '## Latency (p50 ms' in md and "FNA's COCO search schedule" in md
    assert 'MAPE' in md and '- eager nope 32x32 b1 fp32: failed: ValueError' in md
    assert '| setting | weight step ms | steps/s | vs fp32 |' in md and '| bf16 + channels_last |' in md


def test_budget_skips_rows_and_a_running_row_stops(gpu_check, tmp_path):
    out = tmp_path / 'gc'
    assert gpu_check.main(['--smoke', '--device', 'cpu', '--out', str(out), '--budget-s', '0.001', '--models',
                           'fna_retinanet_backbone', '--detectors', '--sections', 'eager', 'search']) == 0
    data = json.loads((out / 'results.json').read_text())
    # 3 eager rows, the search steps and the search steps by precision
    assert len(data['rows']) == 5 and all(r['status'].startswith('skipped: budget') for r in data['rows'])
    tic = time.perf_counter()
    with pytest.raises(gpu_check.RowTimeout, match='stopped at the budget'):
        with gpu_check._deadline(0.2):
            time.sleep(5)
    assert time.perf_counter() - tic < 2
    with pytest.raises(SystemExit):  # no GPU here and no --smoke: a usage error
        gpu_check.main(['--device', 'cpu', '--out', str(tmp_path / 'x')])


def test_search_projection_follows_fna_schedule(gpu_check):
    from fna_zoo.engine.config import load_config
    from fna_zoo.nas.config import SEARCH_DEFAULTS

    cfg = load_config(str(gpu_check.SEARCH_CONFIG), [], defaults=SEARCH_DEFAULTS)
    p = gpu_check.project_search(cfg, weight_ms=100.0, arch_ms=300.0)
    iters = math.ceil(round(118287 * 0.5) / 8)
    assert p['iterations_per_epoch'] == iters == 7393 and p['weight_steps_per_gpu'] == 14 * iters
    assert p['arch_steps_per_gpu'] == 6 * iters  # from epoch 8 of 14, one arch step per weight step
    assert p['gpu_hours'] == pytest.approx(8 * (14 * iters * 0.1 + 6 * iters * 0.3) / 3600)
    assert p['paper_gpu_hours'] == 144.0


def test_every_compile_row_compiles_and_an_eager_fallback_fails(gpu_check, tmp_path, monkeypatch):
    import torch._dynamo

    args = gpu_check._parser().parse_args(['--smoke', '--device', 'cpu', '--out', str(tmp_path / 'gc')])
    args.budget_s = 300.0
    check = gpu_check.Check(args)
    # dynamo's per-code-object graph limit at 1: without a fresh dynamo per row the second row would run eager
    monkeypatch.setattr(torch._dynamo.config, 'recompile_limit', 1)
    for batch in (1, 2):
        assert check.compiled('fna_retinanet_backbone', 'backbone', (32, 32), batch, 'fp32')['p50_ms'] > 0
    monkeypatch.setattr(torch._dynamo, 'reset', lambda: None)
    with pytest.raises(RuntimeError, match='compiled no graph'):
        check.compiled('fna_retinanet_backbone', 'backbone', (32, 32), 3, 'fp32')

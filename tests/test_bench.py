"""fna-bench: the timing core, runtime names, a tiny grid, compare, report and the error convention (tiny inputs,
< 60 s)."""
import json
import time
from pathlib import Path

import pytest

from fna_zoo.cli.bench import main
from fna_zoo.bench.grid import FIELDS
from fna_zoo.runtime.timing import paired_ratio, stats_from_times, time_callable, time_interleaved

ROOT = Path(__file__).resolve().parents[1]


def test_time_callable_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    syncs = []
    st = time_callable(fn, warmup=2, runs=7, sync=lambda: syncs.append(1), batch=4)
    assert st.n == 7 and len(calls) == 9
    assert len(syncs) >= 7  # synced before every clock read
    assert 2.0 <= st.p50 <= st.p90 <= st.p99 < 200.0
    assert st.mean >= 2.0 and st.std >= 0.0
    assert st.throughput == pytest.approx(4 * 1000.0 / st.p50)


def test_time_callable_min_time_and_errors():
    st = time_callable(lambda: time.sleep(0.001), warmup=0, min_time=0.03)
    assert st.n >= 5  # at least 30 ms of ~1 ms calls
    with pytest.raises(ValueError):
        time_callable(lambda: None, warmup=0)
    with pytest.raises(ValueError):
        time_callable(lambda: None, runs=0)


def test_stats_and_ratio_values():
    st = stats_from_times([0.001 * i for i in range(1, 101)], batch=1)
    assert st.p50 == pytest.approx(50.5) and st.p90 == pytest.approx(90.1) and st.p99 == pytest.approx(99.01)
    r = paired_ratio([0.02, 0.04, 0.06], [0.01, 0.02, 0.03])
    assert r['ratio'] == pytest.approx(2.0) and r['iqr'] == pytest.approx(0.0)
    order = []
    ta, tb = time_interleaved([lambda: order.append('a'), lambda: order.append('b')], warmup=1, runs=3)
    assert order == ['a', 'b'] * 4 and len(ta) == len(tb) == 3


def test_runtime_aliases_resolve_and_an_unknown_name_is_one_line():
    from fna_zoo.runtime.names import ALIASES, RUNTIMES, canonical_runtime

    assert {a: canonical_runtime(a) for a in ALIASES} == {
        'eager': ('torch', 'cpu'), 'eager-fp16': ('torch-fp16', 'cuda'), 'compile': ('torch-compile', 'cpu'),
        'ort': ('onnxruntime', 'cpu'), 'trt': ('tensorrt', 'cuda'), 'trt-fp16': ('tensorrt-fp16', 'cuda'),
        'onnxruntime-cpu': ('onnxruntime', 'cpu'), 'torch-cpu': ('torch', 'cpu'), 'torch-cuda': ('torch', 'cuda'),
        'torch-cuda-fp16': ('torch-fp16', 'cuda')}
    assert list(RUNTIMES) == ['torch', 'torch-fp16', 'torch-compile', 'onnxruntime', 'tensorrt', 'tensorrt-fp16',
                              'openvino']
    for name in RUNTIMES:
        assert canonical_runtime(name, 'cpu') == (name, 'cpu') and canonical_runtime(name, 'cuda') == (name, 'cuda')
    assert canonical_runtime('ort', 'cuda') == ('onnxruntime', 'cuda')
    with pytest.raises(ValueError) as e:
        canonical_runtime('warp')
    assert '\n' not in str(e.value) and str(e.value).startswith("runtime 'warp' is unknown; expected one of torch, ")
    assert all(name in str(e.value) for name in RUNTIMES)
    with pytest.raises(ValueError, match="runtime 'onnxruntime-cpu' runs on cpu, not on device 'cuda'"):
        canonical_runtime('onnxruntime-cpu', 'cuda')


def test_one_onnxruntime_session_recipe_with_io_binding():
    import numpy as np
    import onnxruntime as ort
    import torch

    from fna_zoo.runtime.ort import ort_session, session_record
    from fna_zoo.runtime.runners import onnx_bytes, onnxruntime_runner

    module, x = torch.nn.Conv2d(3, 4, 3).eval(), torch.rand(1, 3, 8, 8)
    model = onnx_bytes(module, [x])
    opts = ort_session(model, threads=2).get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads, opts.execution_mode,
            opts.graph_optimization_level) == (2, 1, ort.ExecutionMode.ORT_SEQUENTIAL,
                                               ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    runner = onnxruntime_runner(model, [x], threads=2)
    assert runner.options == session_record(2) == {
        'graph_optimization': 'all', 'execution': 'sequential', 'inter_op_threads': 1, 'intra_op_threads': 2,
        'intra_op_spinning': False, 'io_binding': True, 'provider': 'CPUExecutionProvider'}
    outputs, _ = runner.fn()  # the outputs are bound buffers, filled in place by every run
    with torch.no_grad():
        assert np.abs(outputs[0].numpy() - module(x).numpy()).max() < 1e-5


def test_old_runtime_names_run_and_are_recorded_canonically():
    from fna_zoo.bench.grid import run_grid

    rows = run_grid(['mobilenetv2_100'], ['eager', 'ort', 'onnxruntime-cpu'], what='backbone', sizes=[(64, 64)],
                    warmup=0, runs=1, threads=1, progress=False)
    assert [(r['runtime'], r['device'], r['status']) for r in rows] == [
        ('torch', 'cpu', 'ok'), ('onnxruntime', 'cpu', 'ok'), ('onnxruntime', 'cpu', 'ok')]
    assert rows[0]['runtime_options'] == {} and rows[1]['runtime_options']['intra_op_threads'] == 1


def test_grid_writes_csv_json(tmp_path, capsys):
    out = tmp_path / 'res'
    rc = main(['mobilenetv2_100', '--runtimes', 'torch', 'onnxruntime', 'torch-fp16', '--input-size', '64', '64',
               '--batch', '1', '2', '--warmup', '1', '--runs', '2', '--threads', '1', '-q', '-o', str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert 'p50 ms' in printed and 'mobilenetv2_100' in printed
    rows = json.loads((out / 'results.json').read_text())['rows']
    assert len(rows) == 6
    csv_lines = (out / 'results.csv').read_text().splitlines()
    assert csv_lines[0].split(',') == FIELDS and len(csv_lines) == 7
    for r in rows:
        for key in ('cpu_model', 'cores', 'threads', 'torch', 'onnxruntime', 'precision', 'runtime', 'model'):
            assert r[key] not in (None, ''), key
        assert (r['input_h'], r['input_w']) == (64, 64) and r['threads'] == 1
    timed = [r for r in rows if r['status'] == 'ok']
    assert {(r['runtime'], r['batch']) for r in timed} == {('torch', 1), ('torch', 2), ('onnxruntime', 1),
                                                           ('onnxruntime', 2)}
    assert all(r['n'] == 2 and 0 < r['p50_ms'] <= r['p99_ms'] for r in timed)
    fp16 = [r for r in rows if r['runtime'] == 'torch-fp16']
    assert fp16 and all(r['status'].startswith('skipped: fp16') and r['p50_ms'] is None for r in fp16)


def test_compare_prints_ratio(tmp_path, capsys):
    rc = main(['compare', 'mobilenetv2_100@torch', 'mobilenetv2_100@onnxruntime', '--input-size', '64', '64',
               '--warmup', '1', '--runs', '3', '--threads', '1', '-o', str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'ratio A/B = ' in out
    r = json.loads((tmp_path / 'compare.json').read_text())
    assert r['n'] == 3 and r['ratio'] > 0 and r['p10'] <= r['ratio'] <= r['p90']
    assert r['a']['runtime'] == 'torch' and r['b']['runtime'] == 'onnxruntime'


def test_report_md_png(tmp_path, capsys):
    row = {k: None for k in FIELDS}
    from fna_zoo.specs import arch_id, resolve_model

    row.update(model='fna_ssdlite_backbone', arch_id=arch_id(resolve_model('fna_ssdlite_backbone')),
               what='backbone', backend='ort', precision='fp32', batch=1, input_h=320, input_w=320, p50_ms=12.5,
               cpu_model='test cpu', cores=2, threads=1)
    res = tmp_path / 'results.json'
    res.write_text(json.dumps({'rows': [row]}))
    run = tmp_path / 'run1'
    run.mkdir()
    (run / 'config.yaml').write_text('detector: ssdlite\nmodel:\n  backbone: fna_ssdlite_backbone\n'
                                     '  kwargs: {image_size: 320}\ndata: {path: null, synthetic: {num_classes: 6}}\n')
    (run / 'metrics.json').write_text(json.dumps({'AP': 0.25}))
    rc = main(['report', '--results', str(res), '--runs-dirs', str(run), '--output', str(tmp_path / 'rep')])
    assert rc == 0
    md = (tmp_path / 'rep' / 'latency_vs_ap.md').read_text()
    png = (tmp_path / 'rep' / 'latency_vs_ap.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    lines = [ln for ln in md.splitlines() if ln.startswith('| SSDLite')]
    assert len(lines) == 3  # MBV2 and FNA (paper) + the run
    fna = [ln for ln in lines if '`FNA`' in ln][0]
    assert '23.3' in fna and 'paper' in fna and '12.5' in fna
    mine = [ln for ln in lines if 'run1' in ln][0]
    assert '25.0' in mine and 'measured here' in mine and 'synthetic' in mine and '12.5' in mine


def test_committed_old_results_load_through_the_aliases():
    from fna_zoo.bench.report import build_report, published_entries

    rows = json.loads((ROOT / 'benchmarks' / 'results' / 'amd-epyc-2c' / 'results.json').read_text())['rows']
    assert {r['backend'] for r in rows} == {'eager', 'compile', 'ort'} and 'runtime' not in rows[0]
    joined = build_report(rows, published_entries())
    assert {k for j in joined for k in j['latency']} == {'torch fp32', 'torch-compile fp32', 'onnxruntime fp32'}
    assert all(len(j['latency']) == 3 for j in joined)


@pytest.mark.parametrize('argv', [
    ['no_such_model_xyz'],
    ['mobilenetv2_100', '--runtimes', 'warp'],
    ['mobilenetv2_100', '--backends', 'warp'],
    ['mobilenetv2_100', '--input-size', '65', '64'],
    ['mobilenetv2_100', '--runs', '0'],
    ['compare', 'mobilenetv2_100@torch', 'mobilenetv2_100@torch'],
    ['compare', 'mobilenetv2_100@eager', 'mobilenetv2_100@torch'],
    ['compare', 'mobilenetv2_100@torch', 'mobilenetv2_100@quantum'],
    ['report', '--results', '/no/such/results.json', '--output', '/tmp/x'],
])
def test_bad_arguments_one_error_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')


def test_onnx_files_fp32_and_int8(tmp_path):
    import numpy as np

    from fna_zoo.export.onnx_export import backbone_target, export_with_gate
    from fna_zoo.export.quantize import quantize_int8

    fp32, _ = export_with_gate(backbone_target('mobilenetv2_100', input_size=(64, 64)), tmp_path / 'b.onnx',
                               check_batches=[1])
    rng = np.random.default_rng(0)
    int8 = quantize_int8(fp32, tmp_path / 'b.int8.onnx', [rng.random((1, 3, 64, 64), dtype=np.float32)])
    from fna_zoo.bench.grid import run_grid

    rows = run_grid([str(fp32), str(int8)], ['onnxruntime', 'torch'], sizes=[(64, 64)], warmup=1, runs=2,
                    threads=1, progress=False)
    got = {(r['model'], r['runtime']): r for r in rows}
    assert got[(str(fp32), 'onnxruntime')]['precision'] == 'fp32' and got[(str(fp32), 'onnxruntime')]['status'] == 'ok'
    assert got[(str(int8), 'onnxruntime')]['precision'] == 'int8' and got[(str(int8), 'onnxruntime')]['p50_ms'] > 0
    assert got[(str(int8), 'torch')]['status'].startswith('skipped: torch needs a PyTorch model')


def test_trt_rows_say_why_they_are_skipped(tmp_path, monkeypatch):
    import sys

    from fna_zoo.bench.grid import run_grid
    from fna_zoo.runtime.tensorrt import EngineRunner, TensorRTUnavailable

    monkeypatch.setitem(sys.modules, 'tensorrt', None)  # as on a machine without TensorRT
    rows = run_grid(['mobilenetv2_100'], ['tensorrt', 'tensorrt-fp16'], sizes=[(64, 64)], warmup=1, runs=2,
                    threads=1, progress=False)
    assert [(r['runtime'], r['precision'], r['status']) for r in rows] == [
        ('tensorrt', 'fp32', 'skipped: tensorrt not installed'),
        ('tensorrt-fp16', 'fp16', 'skipped: tensorrt not installed')]
    with pytest.raises(TensorRTUnavailable, match="timing a TensorRT engine needs the tensorrt Python package"):
        EngineRunner(tmp_path / 'x.engine', None)


def test_trt_engine_matches_onnxruntime(tmp_path):
    # runs where TensorRT and a GPU are (the skip path above runs everywhere)
    pytest.importorskip('tensorrt')
    import torch

    if not torch.cuda.is_available():
        pytest.skip('TensorRT needs a CUDA device')
    import numpy as np
    import onnxruntime as ort

    from fna_zoo.bench.backends import Grid
    from fna_zoo.specs import resolve_model

    grid = Grid(tmp_path, device='cuda')
    src = resolve_model('fna_retinanet_backbone')
    run = grid.build(src, 'tensorrt', 'backbone', 2, (64, 64))
    assert run.skip == '' and run.precision == 'fp32'
    outs = run.fn()
    torch.cuda.synchronize()
    path, _ = grid.onnx_file(src, 'backbone', (64, 64))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()
    ref = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'images': x})
    for got, want in zip(outs.values(), ref):
        assert np.abs(got.cpu().numpy() - want).max() < 1e-3

"""Latency tables and the latency objective: table build (onnxruntime), resume, refusal of foreign tables, the
expectation at one-hot probabilities == the table's prediction of the derived arch, gradients, the target
hinge, the search summary and the command line. Timing values are never asserted, only their bookkeeping."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fna_zoo import load_arch
from fna_zoo.runtime.timing import stats_from_times
from fna_zoo.cli.common import run_cli
from fna_zoo.engine.config import load_config
from fna_zoo.nas.config import SEARCH_DEFAULTS
from fna_zoo.nas import SearchSpace, build_objective, madds_table
from fna_zoo.nas import latency as lat
from fna_zoo.cli.latency_table import latency_table_main
from fna_zoo.nas.latency_runtime import get_runtime
from fna_zoo.nas.searcher import search
from fna_zoo.nas.space import ArchPath

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 64)
# the last two MobileNetV2 stages searched (4x4 and 2x2 maps at 64x64): a few dozen parts
TINY = dict(SEARCH_DEFAULTS['search']['space'], fixed_stages=5, layers=[3, 1], first_ops=['k3_e3', 'k5_e6'],
            ops=['k3_e3', 'k5_e6', 'skip'], width_mults=[0.5, 1.0])
TINY_SET = ['search.space.fixed_stages=5', 'search.space.layers=[3, 1]', 'search.space.first_ops=[k3_e3, k5_e6]',
            'search.space.ops=[k3_e3, k5_e6, skip]', 'search.space.width_mults=[0.5, 1.0]']


def tiny_space(detector: str = 'retinanet', **changes) -> SearchSpace:
    return SearchSpace.from_config({**TINY, **changes}, detector)


def fake_measure(calls: list):
    """A stand-in for `measure_module`: a deterministic latency from the part's size, counting its calls."""
    def measure(runtime, module, inputs, warmup, repeats):
        calls.append(1)
        ms = 0.02 + 1e-6 * sum(p.numel() for p in module.parameters()) + 1e-7 * sum(x.numel() for x in inputs)
        return stats_from_times([ms / 1000.0] * repeats)
    return measure


@pytest.fixture(scope='module')
def ort_table(tmp_path_factory):
    """A real onnxruntime table of the tiny space (1 warm-up, 2 timed runs per part)."""
    path = tmp_path_factory.mktemp('lat') / 'tiny.json'
    data = lat.build_latency_table(tiny_space(), SIZE, get_runtime('onnxruntime', 1), path, warmup=1, repeats=2,
                                   progress=False)
    return path, data


def prediction(data: dict, arch, size=SIZE, fixed: int = 5) -> float:
    """The table's latency of an arch, summed layer by layer from the file (independently of `CostTable`):
    the stem as timed, then every block and the head conv minus the overhead and their input's boundary."""
    e = data['entries']
    overhead = e['overhead']['ms']

    def part(key: str, c: int, hw: tuple) -> float:
        probe = [e[f'probe{n}|{c}|{hw[0]}x{hw[1]}']['ms'] for n in (1, 2)]
        return max(e[key]['ms'] - overhead - max(2 * probe[0] - probe[1] - overhead, 0.0), 0.0)

    total = e[f'stem+{fixed}|{size[0]}x{size[1]}']['ms']
    hw = tuple((v + 1) // 2 for v in size)
    for si, _, op, c_in, c_out, stride in arch.iter_layers():
        if si >= fixed:
            total += part(f'{op.name}|{c_in}>{c_out}|s{stride}|{hw[0]}x{hw[1]}', c_in, hw)
        hw = tuple((v + 1) // 2 for v in hw) if stride == 2 else hw
    if arch.head_chs:
        total += part(f'head|{arch.out_chs}>{arch.head_chs}|{hw[0]}x{hw[1]}', arch.out_chs, hw)
    return total


def random_paths(space: SearchSpace, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield ArchPath(tuple(tuple(int(torch.randint(len(slot), (1,), generator=g)) for slot in st.slots)
                             for st in space.stages),
                       tuple(int(torch.randint(len(st.widths), (1,), generator=g)) for st in space.stages))


def test_table_builds_and_round_trips(ort_table):
    path, data = ort_table
    space = tiny_space()
    saved = json.loads(path.read_text())
    assert saved['entries'] == data['entries'] and saved['complete'] is True
    assert saved['format'] == 'fna_zoo.latency_table' and saved['input_size'] == list(SIZE)
    assert saved['runtime']['name'] == 'onnxruntime' and saved['runtime']['version'].startswith('onnxruntime ')
    rt = saved['runtime']
    assert (rt['threads'], rt['precision'], rt['device'], rt['options']['intra_op_spinning']) == \
        (1, 'fp32', 'cpu', False)
    assert saved['machine']['cpu_model'] and saved['space'] == lat.space_fingerprint(space)
    plan = lat.table_plan(space, SIZE)
    assert set(saved['entries']) == set(plan.parts)
    assert all(v['ms'] > 0 and v['n'] == 2 for v in saved['entries'].values())
    # shared measurements: stage 5's later slots read the same blocks, and so does stage 6's first slot where it
    # is the same (op, 160, 160, stride 1, 2x2) block: 14 blocks serve 20 cells; plus 2 probes for each of the
    # 3 input shapes of blocks (96x4x4, 80x2x2, 160x2x2), the stem and the overhead
    assert plan.rest[0][0] == plan.rest[0][1]
    assert plan.first[1][1][1][0] == plan.rest[0][0][1][1] == 'k5_e6|160>160|s1|2x2'
    assert len(plan.parts) == 22 and sum(p.kind == 'probe' for p in plan.parts.values()) == 6
    table = lat.latency_table(space, SIZE, path)
    madds = madds_table(space, SIZE)  # the same layout as the MAdds objective's table
    assert [t.shape for t in table.first] == [t.shape for t in madds.first] and table.unit == 'ms'
    assert [[t.shape for t in r] for r in table.rest] == [[t.shape for t in r] for r in madds.rest]
    again = lat.latency_table(space, SIZE, path)
    assert all(torch.equal(a, b) for a, b in zip(table.first, again.first)) and table.constant == again.constant


def test_one_hot_expectation_is_the_table_prediction(ort_table, tmp_path, monkeypatch):
    path, data = ort_table
    space = tiny_space()
    table = lat.latency_table(space, SIZE, path)
    plan = lat.table_plan(space, SIZE)
    for p in random_paths(space, 8):
        assert table.of_path(p) == pytest.approx(prediction(data, space.derive(p)), rel=1e-9, abs=1e-12)
        keys = plan.keys_of(p)  # the parts the path is made of, as the accuracy benchmark re-times them
        assert len(keys) == 1 + sum(st.depth for st in space.derive(p).stages[5:])
        assert keys[0] == plan.stem and all(plan.parts[k].kind == 'block' for k in keys[1:])
    # SSDLite (head conv per last width, the tapped e6 layer) at another size, with a stand-in timer
    monkeypatch.setattr(lat, 'measure_module', fake_measure([]))
    ssd = tiny_space('ssdlite', first_ops=['k3_e3', 'k5_e6', 'k3_e6'])
    ssd_data = lat.build_latency_table(ssd, (96, 64), get_runtime('onnxruntime', 1), tmp_path / 's.json',
                                       warmup=0, repeats=1, progress=False)
    ssd_table = lat.latency_table(ssd, (96, 64), tmp_path / 's.json')
    assert ssd_table.head is not None and ssd_table.head.shape == (2,)
    for p in random_paths(ssd, 8, seed=1):
        arch = ssd.derive(p)
        assert arch.head_chs == 1280
        assert ssd_table.of_path(p) == pytest.approx(prediction(ssd_data, arch, (96, 64)), rel=1e-9, abs=1e-12)


def test_gradients_reach_the_probabilities_and_the_target_hinge(ort_table):
    path, _ = ort_table
    space = tiny_space()
    cfg = {'type': 'latency', 'lambda': 0.5, 'input_size': list(SIZE), 'target': None, 'table': str(path)}
    objective = build_objective(space, cfg)
    assert (objective.unit, objective.scale) == ('ms', 1.0)
    op_logits = [torch.randn(len(slot), requires_grad=True) for st in space.stages for slot in st.slots]
    width_logits = [torch.randn(len(st.widths), requires_grad=True) for st in space.stages]
    expected = objective.expected([a.softmax(0) for a in op_logits], [a.softmax(0) for a in width_logits])
    objective.loss(expected).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in op_logits + width_logits)
    # hinge: no penalty at or below the target (ms), lambda * log10(E / target) above it
    e = float(expected.detach())
    hinge = build_objective(space, {**cfg, 'target': 2 * e})
    assert hinge.loss(expected.detach()).item() == 0.0
    hinge = build_objective(space, {**cfg, 'target': e / 10})
    assert hinge.loss(expected.detach()).item() == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize('change, message', [
    (dict(space=dict(width_mults=[0.5, 0.75])),
     r"built for another search space \(space\.stages\[0\]\.widths: \[80, 160\] vs \[80, 120\]"),
    (dict(space=dict(ops=['k3_e3', 'k7_e6', 'skip'])),
     r'another search space \(space\.stages\[0\]\.slots\[1\]: \["k3_e3", "k5_e6", "skip"\] vs \["k3_e3", "k7_e6"'),
    (dict(size=[96, 96]), 'was measured at input size 64x64, the search objective uses 96x96'),
    (dict(runtime='torch-cpu'),
     r"was measured on runtime 'onnxruntime' \(device 'cpu'\); the search objective expects 'torch-cpu'"),
])
def test_a_foreign_table_is_refused_in_one_line(ort_table, change, message):
    path, _ = ort_table
    space = tiny_space(**change.get('space', {}))
    cfg = {'type': 'latency', 'lambda': 0.1, 'input_size': change.get('size', list(SIZE)), 'target': None,
           'table': str(path), 'runtime': change.get('runtime')}
    with pytest.raises(ValueError, match=message) as e:
        build_objective(space, cfg)
    assert '\n' not in str(e.value)
    with pytest.raises(ValueError, match=message):  # a table given beside the MAdds objective is checked too
        lat.objective_latency_table(space, {**cfg, 'type': 'madds'})


def test_bench_rows_and_tables_record_one_onnxruntime_session_recipe(ort_table):
    from fna_zoo.bench.grid import run_grid

    path, _ = ort_table
    table_options = json.loads(path.read_text())['runtime']['options']
    assert table_options == {'graph_optimization': 'all', 'execution': 'sequential', 'inter_op_threads': 1,
                             'intra_op_threads': 1, 'intra_op_spinning': False, 'io_binding': True,
                             'provider': 'CPUExecutionProvider'}
    rows = run_grid(['mobilenetv2_100'], ['onnxruntime'], sizes=[(64, 64)], warmup=0, runs=1, threads=1,
                    progress=False)
    assert rows[0]['status'] == 'ok' and rows[0]['runtime_options'] == table_options


def test_a_table_with_old_runtime_names_still_loads_and_resumes(ort_table, tmp_path, monkeypatch):
    path, data = ort_table
    old = json.loads(path.read_text())  # as written before the runtime names were unified
    old['runtime'] = dict(old['runtime'], name='onnxruntime-cpu',
                          options={'graph_optimization': 'all', 'intra_op_spinning': False, 'io_binding': True})
    old_path = tmp_path / 'old.json'
    old_path.write_text(json.dumps(old))
    space = tiny_space()
    reference = lat.latency_table(space, SIZE, path)
    for runtime in (None, 'onnxruntime', 'onnxruntime-cpu', 'ort'):
        table = lat.latency_table(space, SIZE, old_path, runtime)
        assert table.constant == reference.constant and all(torch.equal(a, b) for a, b in zip(table.first,
                                                                                            reference.first))
    with pytest.raises(ValueError, match=r"measured on runtime 'onnxruntime' \(device 'cpu'\); the search objective "
                                         "expects 'torch-cuda'"):
        lat.latency_table(space, SIZE, old_path, 'torch-cuda')
    calls: list = []
    monkeypatch.setattr(lat, 'measure_module', fake_measure(calls))
    again = lat.build_latency_table(space, SIZE, get_runtime('onnxruntime', 1), old_path, progress=False)
    assert calls == [] and again['runtime']['name'] == 'onnxruntime'
    assert again['runtime']['options'] == data['runtime']['options'] and again['entries'] == data['entries']


def test_default_table_names_keep_the_old_runtime_names():
    from fna_zoo.cli.latency_table import default_output

    want = Path('runs') / 'latency_tables' / 'fna_ssdlite_search_onnxruntime-cpu_320x320.json'
    assert default_output('configs/fna_ssdlite_search.yaml', 'onnxruntime', (320, 320)) == want
    assert default_output('configs/fna_ssdlite_search.yaml', 'onnxruntime-cpu', (320, 320)) == want
    assert default_output(None, 'torch-cuda', (64, 64)).name == 'default_search_torch-cuda_64x64.json'
    assert default_output(None, 'torch', (64, 64), 'cuda').name == 'default_search_torch-cuda_64x64.json'


def test_latency_objective_needs_a_table():
    with pytest.raises(ValueError, match='search objective type latency needs search.objective.table'):
        build_objective(tiny_space(), {'type': 'latency', 'lambda': 0.1, 'input_size': list(SIZE), 'table': None})


def test_resume_measures_only_the_missing_parts(tmp_path, monkeypatch):
    space, path = tiny_space(), tmp_path / 'r.json'
    runtime = get_runtime('onnxruntime', 1)
    total = len(lat.table_plan(space, SIZE).parts)
    calls: list = []
    measure = fake_measure(calls)

    def killed_after_7(*args):
        if len(calls) == 7:
            raise KeyboardInterrupt
        return measure(*args)

    monkeypatch.setattr(lat, 'measure_module', killed_after_7)
    with pytest.raises(KeyboardInterrupt):
        lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, save_every=3, progress=False)
    first = json.loads(path.read_text())
    assert len(first['entries']) == 7 and first['complete'] is False
    with pytest.raises(ValueError, match=r'is incomplete \(7 of 22 parts measured\)'):
        lat.latency_table(space, SIZE, path)
    calls.clear()
    monkeypatch.setattr(lat, 'measure_module', measure)
    data = lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, save_every=3, progress=False)
    assert len(calls) == total - 7 and data['complete'] is True
    assert all(data['entries'][k] == v for k, v in first['entries'].items())  # kept, not re-measured
    calls.clear()
    lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False)
    assert calls == []
    # a table of another space or runtime setting is never resumed into (and left as it was)
    before = path.read_bytes()
    with pytest.raises(ValueError, match='existing latency table .* built for another search space'):
        lat.build_latency_table(tiny_space(width_mults=[1.0]), SIZE, runtime, path, progress=False)
    with pytest.raises(ValueError, match='measured with runtime threads 1, this run uses 2'):
        lat.build_latency_table(space, SIZE, get_runtime('onnxruntime', 2), path, progress=False)
    assert path.read_bytes() == before and calls == []


def test_search_summary_reports_the_predicted_latency(tmp_path, monkeypatch):
    monkeypatch.setattr(lat, 'measure_module', fake_measure([]))
    table = tmp_path / 'table.json'
    data = lat.build_latency_table(tiny_space(), SIZE, get_runtime('onnxruntime', 1), table, warmup=0, repeats=1,
                                   progress=False)
    overrides = [f'output={tmp_path / "run"}', f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=4',
                 'data.synthetic.num_val=2', 'data.synthetic.image_size=64', 'data.workers=0',
                 'model.kwargs={min_size: 64, max_size: 64, head_width: 16}', 'train.batch_size=2', 'train.epochs=1',
                 'train.warmup_iters=1', 'train.optimizer=adamw', 'train.max_iters=1', 'search.arch_update_epoch=0',
                 'search.relaxation=gumbel', 'search.eval_derived=false', *TINY_SET,
                 'search.objective={type: latency, lambda: 0.3, input_size: [64, 64], target: 5.0, '
                 f'table: {table}, runtime: onnxruntime-cpu}}']
    result = search(load_config(None, overrides, defaults=SEARCH_DEFAULTS))
    arch = load_arch(tmp_path / 'run' / 'arch.yaml')
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['cost_unit'] == 'ms' and summary['objective']['table'] == str(table)
    assert summary['predicted_latency_ms'] == result['predicted_latency_ms'] == pytest.approx(prediction(data, arch),
                                                                                              abs=1e-4)
    assert 'predicted latency' in (tmp_path / 'run' / 'search.log').read_text()
    # beside the MAdds objective a table still gives the prediction; without one there is none
    space, madds_cfg = tiny_space(), {'type': 'madds', 'input_size': list(SIZE), 'table': str(table)}
    p = next(random_paths(space, 1))
    assert lat.predicted_latency_ms(space, madds_cfg, p) == pytest.approx(prediction(data, space.derive(p)), abs=1e-9)
    assert lat.predicted_latency_ms(space, {**madds_cfg, 'table': None}, p) is None


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = run_cli(latency_table_main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_builds_resumes_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    out = tmp_path / 'cli.json'
    base = ['--set', *TINY_SET, '--input-size', '64', '64', '--threads', '1', '--warmup', '0', '--repeats', '1',
            '--no-detector', '--no-progress']
    code, stdout, _ = cli(['--runtime', 'onnxruntime', '--output', str(out), *base], capsys)
    assert code == 0 and f'latency table: {out}' in stdout and '22 parts (14 blocks)' in stdout
    built = json.loads(out.read_text())
    assert built['complete'] and built['space'] == lat.space_fingerprint(tiny_space())
    before = out.read_bytes()
    bad = tmp_path / 'bad.json'
    for argv, message, target in (
            (['--runtime', 'tensorrt', '--output', str(bad), *base], "error: runtime 'tensorrt' needs the tensorrt "
             r'Python package, which is not installed here', bad),
            (['--runtime', 'cuda', '--output', str(bad), *base], "error: runtime 'cuda' is unknown; expected one of "
             'torch, torch-fp16, torch-compile, onnxruntime, tensorrt, tensorrt-fp16', bad),
            (['--runtime', 'onnxruntime', '--output', str(tmp_path / 'bad.csv'), *base],
             r"error: output path .*bad.csv' has suffix '.csv'; expected a .json file", tmp_path / 'bad.csv'),
            (['--runtime', 'onnxruntime', '--output', str(bad), *base, '--runs', '0'],
             'error: --runs is 0; expected an integer >= 1', bad),
            (['--runtime', 'onnxruntime', '--output', str(bad), *base, '--set', 'search.space.ops=[k4_e6]'],
             "error: op 'k4_e6' has kernel 4", bad),
            (['--runtime', 'onnxruntime', '--output', str(out), *base, '--input-size', '96', '96'],
             "error: existing latency table .* was measured at input size 64x64, the search objective uses 96x96", out),
    ):
        code, _, err = cli(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert re.match(message, lines[0]), lines[0]
        assert (not target.exists()) if target != out else out.read_bytes() == before


def test_torch_cpu_runtime_times_a_part_and_restores_threads():
    runtime = get_runtime('torch', 1)
    assert runtime.describe()['version'].startswith('torch ') and runtime.describe()['options'] == {}
    plan = lat.table_plan(tiny_space(), SIZE)
    module, inputs = lat.part_module(tiny_space(), plan.parts[plan.first[0][1][0][1]])
    before = torch.get_num_threads()
    stats = lat.measure_module(runtime, module, inputs, warmup=1, repeats=3)
    assert stats.n == 3 and stats.p50 > 0 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match='threads is 0; expected a positive integer'):
        get_runtime('torch', 0)


def test_missing_runtime_is_one_line_from_the_script(tmp_path):
    out = tmp_path / 't.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'search' / 'latency_table.py'), '--runtime', 'tensorrt',
                           '--output', str(out)], env=dict(os.environ, HF_HUB_OFFLINE='1'), capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: runtime 'tensorrt' needs the tensorrt Python package") and not out.exists()

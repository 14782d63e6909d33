"""Latency tables and the latency objective: table build (onnxruntime), resume, refusal of foreign tables, the
expectation at one-hot probabilities == the table's prediction of the derived arch, gradients, the target
hinge, the search summary and the command line. Timing values are never asserted, only their bookkeeping."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

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
                                   progress=False, calibration_random=2, calibration_rounds=3, passes=2)
    return path, data


def prediction(data: dict, arch, size=SIZE, fixed: int = 5, calibrated: bool = True) -> float:
    """The table's latency of an arch, summed layer by layer from the file (independently of `CostTable`):
    the stem as timed, then every block and the head conv minus the overhead and their input's boundary; times
    the calibration's scale plus its offset when the table has one."""
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
    cal = data.get('calibration') if calibrated else None
    return total * cal['scale'] + cal['offset_ms'] if cal else total


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
    assert all(v['ms'] > 0 and v['n'] == 2 and len(v['passes']) == 2 for v in saved['entries'].values())
    assert all(v['ms'] == pytest.approx(sum(v['passes']) / 2, abs=1e-5) for v in saved['entries'].values())
    assert saved['measurement']['passes'] == 2
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


def test_the_table_is_calibrated_on_whole_backbones(ort_table):
    path, data = ort_table
    space = tiny_space()
    cal = json.loads(path.read_text())['calibration']
    named = lat.calibration_paths(space, random_count=2)
    # the seed, the seed at width 0.5 (at 1.0 it is the seed: dropped), then the random draws, no path twice
    assert [n for n, _ in named][:2] == ['seed', 'seed_width0'] and len({p for _, p in named}) == len(named)
    assert named[1][1].ops == space.seed_path().ops and named[1][1].widths == (0, 0)
    assert [a['name'] for a in cal['archs']] == [n for n, _ in named]
    assert [a['arch'] for a in cal['archs']] == [space.derive(p).to_fna_string() for _, p in named]
    assert cal['scale'] > 0 and cal['fit'] in ('affine', 'scale') and cal['rounds'] == 3
    raw = lat.latency_table(space, SIZE, path, calibrated=False)
    table = lat.latency_table(space, SIZE, path)
    for a, (_, p) in zip(cal['archs'], named):
        assert a['measured_ms'] > 0 and raw.of_path(p) == pytest.approx(a['sum_ms'], abs=1e-4)
        assert a['calibrated_ms'] == pytest.approx(cal['scale'] * a['sum_ms'] + cal['offset_ms'], abs=1e-3)
        assert table.of_path(p) == pytest.approx(cal['scale'] * raw.of_path(p) + cal['offset_ms'], rel=1e-9)
        assert table.of_path(p) == pytest.approx(prediction(data, space.derive(p)), rel=1e-9)
        assert raw.of_path(p) == pytest.approx(prediction(data, space.derive(p), calibrated=False), rel=1e-9)


def test_the_calibration_fit_recovers_an_affine_law_and_refuses_a_bad_one():
    import numpy as np

    sums = np.array([1.0, 2.0, 3.0, 5.0])
    scale, offset, how = lat._fit(sums, 0.8 * sums + 0.5, fixed=0.5)
    assert (scale, offset, how) == (pytest.approx(0.8), pytest.approx(0.5), 'affine')
    # sums that do not spread, or too few backbones to fit two numbers through their noise: a scale alone (the
    # least-squares one in relative error)
    assert lat._fit(np.array([2.0, 2.0, 2.0, 2.0]), np.full(4, 3.0), fixed=1.0) == (pytest.approx(1.5), 0.0, 'scale')
    assert lat._fit(sums[:3], 0.8 * sums[:3] + 0.5, fixed=0.5)[2] == 'scale'
    # an offset that would make the fixed parts (in every network) cost less than half or more than twice their
    # plain cost: a scale alone
    for measured, fixed in ((2.0 * sums - 1.0, 0.4), (sums + 3.0, 1.0)):
        scale, offset, how = lat._fit(sums, measured, fixed=fixed)
        r = sums / measured
        assert (offset, how) == (0.0, 'scale') and scale == pytest.approx(r.sum() / (r * r).sum())
    # noisy backbones: the fit is never worse, in relative error, than the plain sum or the scale alone
    rng, affine = np.random.default_rng(0), 0
    for _ in range(20):
        sums = rng.uniform(5.0, 25.0, 8)
        measured = (0.9 * sums + 0.6) * rng.uniform(0.95, 1.05, 8)
        scale, offset, how = lat._fit(sums, measured, fixed=4.0)
        rel = lambda pred: float((((pred - measured) / measured) ** 2).sum())  # noqa: E731
        r = sums / measured
        if how == 'affine':
            affine += 1
            assert rel(scale * sums + offset) <= min(rel(sums), rel(r.sum() / (r * r).sum() * sums))
        else:  # refused only for an offset outside the band
            assert not 2.0 <= scale * 4.0 + offset <= 8.0 or scale <= 0
    assert affine >= 15


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
    monkeypatch.setattr(lat, 'calibrate_table', lambda *a, **k: calls.append('calibration'))
    again = lat.build_latency_table(space, SIZE, get_runtime('onnxruntime', 1), old_path, progress=False, passes=2)
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
        lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, save_every=3, progress=False,
                                passes=1)
    first = json.loads(path.read_text())
    assert len(first['entries']) == 7 and first['complete'] is False and 'calibration' not in first
    with pytest.raises(ValueError, match=r'is incomplete \(7 of 22 parts measured\)'):
        lat.latency_table(space, SIZE, path)
    calls.clear()
    monkeypatch.setattr(lat, 'measure_module', measure)
    data = lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, save_every=3, progress=False,
                                   passes=1)
    assert len(calls) == total - 7 and data['complete'] is True and data['calibration']['scale'] > 0
    assert all(data['entries'][k] == v for k, v in first['entries'].items())  # kept, not re-measured
    calls.clear()
    lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1)
    assert calls == []
    # a table of another space or runtime setting is never resumed into (and left as it was)
    before = path.read_bytes()
    with pytest.raises(ValueError, match='existing latency table .* built for another search space'):
        lat.build_latency_table(tiny_space(width_mults=[1.0]), SIZE, runtime, path, progress=False)
    with pytest.raises(ValueError, match='measured with runtime threads 1, this run uses 2'):
        lat.build_latency_table(space, SIZE, get_runtime('onnxruntime', 2), path, progress=False)
    assert path.read_bytes() == before and calls == []
    # nor one measured on a CPU of another instruction set behind the same model name; a table written before the
    # instruction set was recorded resumes on its model name
    other, legacy = json.loads(before), json.loads(before)
    other['machine']['cpu_isa'] = 'isa-of-another-machine'
    del legacy['machine']['cpu_isa']
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="measured on another machine \\(cpu_isa 'isa-of-another-machine'"):
        lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1)
    path.write_text(json.dumps(legacy))
    resumed = lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1)
    assert calls == [] and 'cpu_isa' not in resumed['machine']  # its entries' instruction set stays unknown
    del legacy['machine']
    path.write_text(json.dumps(legacy))  # no machine record at all: refused, as before
    with pytest.raises(ValueError, match="measured on another machine \\(cpu_model None"):
        lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1)


def test_passes_in_shuffled_orders_keep_the_median_and_a_one_pass_table_gains_passes(tmp_path, monkeypatch):
    space, path = tiny_space(), tmp_path / 'p.json'
    runtime = get_runtime('onnxruntime', 1)
    keys = list(lat.table_plan(space, SIZE).parts)
    order: list = []
    measure = fake_measure([])

    def timed(runtime_, module, inputs, warmup, repeats):
        order.append(len(order) // len(keys))          # the pass this call belongs to
        base = measure(runtime_, module, inputs, warmup, repeats)
        k = (1.0, 3.0, 2.0)[order[-1]]                 # pass 0 x1, pass 1 x3, pass 2 x2: the median is x2
        return stats_from_times([base.p50 * k / 1000.0] * repeats)

    monkeypatch.setattr(lat, 'measure_module', timed)
    one = lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1,
                                  calibrate=False)
    assert len(order) == len(keys) and all(len(e['passes']) == 1 for e in one['entries'].values())
    three = lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=3,
                                    calibrate=False)
    assert len(order) == 3 * len(keys) and three['complete'] and three['measurement']['passes'] == 3
    for key, e in three['entries'].items():
        assert len(e['passes']) == 3 and e['passes'][1] == pytest.approx(3 * e['passes'][0], rel=1e-3)
        assert e['ms'] == pytest.approx(2 * e['passes'][0], rel=1e-3)   # the median of x1, x3, x2
    # each pass visits every part once, in its own order
    calls: list = []
    monkeypatch.setattr(lat, 'measure_module', lambda rt, module, *a: calls.append(module) or measure(rt, module, *a))
    lat.build_latency_table(space, SIZE, runtime, tmp_path / 'q.json', warmup=0, repeats=1, progress=False, passes=2,
                            calibrate=False)
    first, second = calls[:len(keys)], calls[len(keys):]
    shapes = lambda ms: [tuple(p.shape for p in m.parameters()) for m in ms]  # noqa: E731
    assert len(second) == len(keys) and sorted(map(str, shapes(first))) == sorted(map(str, shapes(second)))
    assert shapes(first) != shapes(second)
    with pytest.raises(ValueError, match='passes is 0; expected an integer >= 1'):
        lat.build_latency_table(space, SIZE, runtime, tmp_path / 'r.json', passes=0)


def test_an_old_one_pass_table_gains_passes_and_a_calibration_and_unfinished_passes_are_refused(tmp_path,
                                                                                                   monkeypatch, caplog):
    space, path = tiny_space(), tmp_path / 'old.json'
    runtime = get_runtime('onnxruntime', 1)
    calls: list = []
    monkeypatch.setattr(lat, 'measure_module', fake_measure(calls))
    lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1, calibrate=False)
    old = json.loads(path.read_text())  # as written before passes and the calibration: one `ms` per part
    for e in old['entries'].values():
        del e['passes']
    del old['measurement']['passes']
    path.write_text(json.dumps(old))
    plain = lat.latency_table(space, SIZE, path)
    assert all(torch.equal(a, b) for a, b in zip(plain.first, lat.latency_table(space, SIZE, path,
                                                                                calibrated=False).first))
    n = len(old['entries'])   # 22: the old table needs passes 2 and 3 of each, one pass after the other

    def killed_in_pass_2(*args):
        if len(calls) == n + 5:
            raise KeyboardInterrupt
        return fake_measure(calls)(*args)

    calls.clear()
    monkeypatch.setattr(lat, 'measure_module', killed_in_pass_2)
    with pytest.raises(KeyboardInterrupt):
        lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=3)
    stopped = json.loads(path.read_text())
    assert stopped['complete'] is False and 'calibration' not in stopped and stopped['measurement']['passes'] == 3
    with pytest.raises(ValueError, match=r'is incomplete \(17 of 22 parts have fewer than its 3 passes\); expected a '
                                         'finished table'):
        lat.latency_table(space, SIZE, path)
    # resumed with fewer passes asked: the table keeps its 3, finishes them and is calibrated
    calls.clear()
    monkeypatch.setattr(lat, 'measure_module', fake_measure(calls))
    done = lat.build_latency_table(space, SIZE, runtime, path, warmup=0, repeats=1, progress=False, passes=1,
                                   calibration_random=1, calibration_rounds=3)
    assert len(calls) == 2 * n - (n + 5) and done['complete'] and done['measurement']['passes'] == 3
    for key, e in done['entries'].items():
        assert len(e['passes']) == 3 and e['passes'][0] == old['entries'][key]['ms']
        assert e['ms'] == pytest.approx(sorted(e['passes'])[1])
    assert done['calibration']['scale'] > 0

    # a calibration that cannot be timed leaves the table usable as the plain sum, with a warning
    def cannot(*a, **k):
        raise ValueError("runtime 'x' cannot time this module: no whole backbones here")

    monkeypatch.setattr(lat, 'calibrate_table', cannot)
    fresh = lat.build_latency_table(space, SIZE, runtime, tmp_path / 'uncal.json', warmup=0, repeats=1,
                                    progress=False, passes=1)
    assert fresh['complete'] and 'calibration' not in json.loads((tmp_path / 'uncal.json').read_text())
    assert "left uncalibrated: the whole backbones could not be timed (runtime 'x' cannot time" in caplog.text
    assert '--no-calibration' in caplog.text
    lat.latency_table(space, SIZE, tmp_path / 'uncal.json')


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
            '--no-detector', '--no-progress', '--passes', '2']
    code, stdout, _ = cli(['--runtime', 'onnxruntime', '--output', str(out), *base, '--calibration-archs', '1',
                           '--calibration-rounds', '3'], capsys)
    assert code == 0 and f'latency table: {out}' in stdout and '22 parts (14 blocks)' in stdout
    built = json.loads(out.read_text())
    assert built['complete'] and built['space'] == lat.space_fingerprint(tiny_space())
    assert re.search(r'calibrated on 3 whole backbones: measured = [0-9.]+ x sum of parts [+-][0-9.]+ ms', stdout)
    # a finished, calibrated table: rerunning times nothing; --recalibrate times the calibration again
    calls: list = []
    real = lat.calibrate_table
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lat, 'calibrate_table', lambda *a, **k: calls.append(1) or real(*a, **k))
        assert cli(['--runtime', 'onnxruntime', '--output', str(out), *base], capsys)[0] == 0 and calls == []
        assert json.loads(out.read_text())['calibration'] == built['calibration']
        assert cli(['--runtime', 'onnxruntime', '--output', str(out), *base, '--recalibrate',
                    '--calibration-archs', '0', '--calibration-rounds', '3'], capsys)[0] == 0 and calls == [1]
        again = json.loads(out.read_text())
        assert [a['name'] for a in again['calibration']['archs']] == ['seed', 'seed_width0']
        plain = tmp_path / 'plain.json'
        assert cli(['--runtime', 'onnxruntime', '--output', str(plain), *base, '--no-calibration'], capsys)[0] == 0
        assert calls == [1] and 'calibration' not in json.loads(plain.read_text())
        # --no-calibration on a calibrated table drops its calibration: the search then uses the plain sum
        shutil.copy(out, plain)
        assert cli(['--runtime', 'onnxruntime', '--output', str(plain), *base, '--no-calibration'], capsys)[0] == 0
        assert calls == [1] and 'calibration' not in json.loads(plain.read_text())
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
            (['--runtime', 'onnxruntime', '--output', str(bad), *base, '--passes', '0'],
             'error: --passes is 0; expected an integer >= 1', bad),
            (['--runtime', 'onnxruntime', '--output', str(bad), *base, '--calibration-rounds', '2'],
             'error: --calibration-rounds is 2; expected an integer >= 3', bad),
            (['--runtime', 'onnxruntime', '--output', str(bad), *base, '--recalibrate', '--no-calibration'],
             'error: --recalibrate with --no-calibration; expected one of them', bad),
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


def test_accuracy_benchmark_reports_ratios_of_the_table_and_of_the_plain_sum(ort_table, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location('latency_table_accuracy',
                                                  ROOT / 'benchmarks' / 'latency_table_accuracy.py')
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path, data = ort_table
    space = tiny_space()
    seed = tmp_path / 'seed.yaml'
    space.derive(space.seed_path()).save(seed)
    summary = bench.main(['--table', str(path), '--set', *TINY_SET, '--random', '2', '--arch', str(seed),
                          '--ratio-to', str(seed), '--rounds', '3', '--warmup', '0'])
    out = capsys.readouterr().out
    assert summary['calibrated'] is True and 'largest ratio error: table' in out
    rows = {r['name']: r for r in summary['rows']}
    assert rows[str(seed)]['predicted_ratio'] == rows[str(seed)]['predicted_sum_ratio'] == 1.0
    for r in rows.values():
        arch = space.derive(ArchPath(tuple(map(tuple, r['path'][:-1])), tuple(r['path'][-1])))
        assert r['predicted_sum'] == pytest.approx(prediction(data, arch, calibrated=False), rel=1e-9)
        assert r['predicted'] == pytest.approx(prediction(data, arch), rel=1e-9)
    worst = max(abs(r['predicted_ratio'] - r['ratio_to_ref']['ratio']) for r in rows.values())
    assert summary['max_abs_ratio_error'] == pytest.approx(worst)


def test_ratio_comparison_reads_tables_and_runs_and_refuses_a_run_without_ratios(ort_table, tmp_path, monkeypatch):
    import importlib.util

    sys.path.insert(0, str(ROOT / 'benchmarks'))
    spec = importlib.util.spec_from_file_location('latency_table_ratios', ROOT / 'benchmarks' / 'latency_table_ratios.py')
    ratios = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ratios)
    path, data = ort_table
    space = tiny_space()
    monkeypatch.chdir(tmp_path)   # the archs named by relative paths, as the committed runs name them
    seed, other = Path('seed.yaml'), Path('other.yaml')
    space.derive(space.seed_path()).save(seed)
    space.derive(space.width_seed_paths()[0]).save(other)
    config = tmp_path / 'tiny.yaml'
    config.write_text(yaml.safe_dump({'detector': 'retinanet', 'search': {'space': TINY}}))
    runs = []
    for i in range(2):   # two measured runs, made up: the seed at 1, the other at 0.5 and 0.7
        rows = [{'name': str(seed), 'ratio_to_ref': {'ratio': 1.0}},
                {'name': str(other), 'ratio_to_ref': {'ratio': 0.5 + 0.2 * i}},
                {'name': 'random0', 'ratio_to_ref': {'ratio': 9.0}}]
        runs.append(tmp_path / f'run{i}.json')
        runs[-1].write_text(json.dumps({'input_size': list(SIZE), 'rows': rows}))
    half = json.loads(path.read_text())   # a second table: every part but the stem at half its time
    for e in half['entries'].values():
        e['ms'] /= 2
        e['passes'] = [e['ms']] * 2
    stem = lat.table_plan(space, SIZE).stem
    half['entries'][stem] = data['entries'][stem]
    (tmp_path / 'half.json').write_text(json.dumps(half))
    out = ratios.main(['--config', str(config), '--tables', str(path), str(tmp_path / 'half.json'),
                       '--measured', *map(str, runs), '--json', str(tmp_path / 'r.json')])
    raw = [lat.latency_table(space, SIZE, t, calibrated=False) for t in (path, tmp_path / 'half.json')]
    want = [t.of_path(space.width_seed_paths()[0]) / t.of_path(space.seed_path()) for t in raw]
    assert out['measured'][str(other)] == pytest.approx(0.6) and 'random0' not in out['measured']
    assert [t['predicted'][str(other)] for t in out['tables'][:2]] == pytest.approx(want)
    assert out['tables'][0]['mean_abs_error'] == pytest.approx(abs(want[0] - 0.6))
    assert out['tables'][2]['table'] == 'median of the tables' and json.loads((tmp_path / 'r.json').read_text())
    runs[0].write_text(json.dumps({'input_size': list(SIZE), 'rows': [{'name': str(seed)}]}))
    with pytest.raises(ValueError, match='has no measured ratios; expected the --json of latency_table_accuracy.py'):
        ratios.main(['--config', str(config), '--tables', str(path), '--measured', *map(str, runs)])

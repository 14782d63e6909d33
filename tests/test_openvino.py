"""OpenVINO as a runtime plugin and an export format: runners, IR export (fp32 and NNCF INT8), grid rows and
latency tables (tiny models; skipped where `openvino` is not installed)."""
import sys

import numpy as np
import pytest
import torch

ov = pytest.importorskip('openvino')
pytest.importorskip('onnxruntime')

from fna_zoo.runtime.registry import PLUGINS  # noqa: E402
from fna_zoo.runtime.runners import onnx_bytes  # noqa: E402

SIZE = 32


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, stride=2, groups=8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 1)).eval()


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp('ov') / 'tiny.onnx'
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    path.write_bytes(onnx_bytes(_tiny(), [x]))
    return path, x.numpy()


def _calibration(n: int = 8) -> list[np.ndarray]:
    return [np.random.default_rng(i).random((1, 3, SIZE, SIZE), dtype=np.float32) for i in range(n)]


def _reference(path, x) -> np.ndarray:
    return next(iter(PLUGINS['onnxruntime'].session(path, 1, 'cpu')({'in0': x}).values()))


def test_openvino_runs_an_onnx_file_as_onnxruntime_does(tiny_onnx):
    path, x = tiny_onnx
    plugin = PLUGINS['openvino']
    got = plugin.session(path, 1, 'cpu')({'in0': x})
    want = _reference(path, x)
    assert np.abs(next(iter(got.values())) - want).max() < 1e-4
    runner = plugin.file_runner(path, [x], 1, 'cpu')
    runner.fn()
    assert runner.precision == 'fp32' and runner.options['INFERENCE_NUM_THREADS'] == 1
    assert runner.options['INFERENCE_PRECISION_HINT'] == 'f32'  # not bf16 on a CPU that has it
    assert plugin.module_runner(_tiny(), [torch.from_numpy(x)], 1, 'cpu').fn is not None


def test_export_openvino_fp32_writes_xml_and_bin_that_reproduce_the_onnx(tiny_onnx, tmp_path):
    from fna_zoo.export.openvino import export_openvino
    from fna_zoo.runtime.openvino import ir_precision, read_model

    path, x = tiny_onnx
    xml = export_openvino(path, tmp_path / 'tiny.xml')
    assert xml == tmp_path / 'tiny.xml' and xml.with_suffix('.bin').is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['tiny.bin', 'tiny.xml']  # no temporary left
    assert ir_precision(read_model(xml)) == 'fp32'
    got = next(iter(PLUGINS['openvino'].session(xml, 1, 'cpu')({'in0': x}).values()))
    assert np.abs(got - _reference(path, x)).max() < 1e-4


def test_export_openvino_int8_is_quantized_and_close(tiny_onnx, tmp_path):
    from fna_zoo.export.openvino import export_openvino
    from fna_zoo.runtime.openvino import read_model

    path, x = tiny_onnx
    xml = export_openvino(path, tmp_path / 'tiny.int8.xml', precision='int8', calibration=_calibration())
    ops = {op.get_type_name() for op in read_model(xml).get_ops()}
    assert 'FakeQuantize' in ops
    runner = PLUGINS['openvino'].file_runner(xml, [x], 1, 'cpu')
    assert runner.precision == 'int8'
    got = next(iter(PLUGINS['openvino'].session(xml, 1, 'cpu')({'in0': x}).values()))
    want = _reference(path, x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_accuracy_control_records_the_reverted_quantizers_in_the_ir(tiny_onnx, tmp_path, monkeypatch):
    import fna_zoo.runtime.openvino as rov
    from fna_zoo.export.int8_fallback import kept_float_of
    from fna_zoo.export.openvino import export_openvino

    path, _ = tiny_onnx
    plain = export_openvino(path, tmp_path / 'plain.xml', precision='int8', calibration=_calibration())
    assert kept_float_of(plain) == []  # no accuracy control: nothing recorded
    names = rov.quantizer_names(rov.read_model(plain))
    real, calls = rov.nncf_quantize, []

    def without_search(model, calibration, preset='mixed', accuracy=None):  # NNCF's AC that reverts nothing
        calls.append(accuracy)
        return real(model, calibration, preset=preset)

    monkeypatch.setattr(rov, 'nncf_quantize', without_search)
    # the plain IR had one more quantizer than the accuracy control's IR: that one is the reverted one
    ac = rov.AccuracyControl([], lambda c, i: (None, []), 0.01, frozenset(names | {'/conv/Conv/fq_weights_1'}))
    xml = export_openvino(path, tmp_path / 'ac.xml', precision='int8', calibration=_calibration(), accuracy=ac)
    assert calls == [ac] and rov.quantizer_names(rov.read_model(xml)) == names
    assert kept_float_of(xml) == ['/conv/Conv/fq_weights_1']


def test_openvino_runs_onnxruntimes_qdq_int8_file(tiny_onnx, tmp_path):
    from fna_zoo.export.quantize import quantize_int8

    path, x = tiny_onnx
    qdq = quantize_int8(path, tmp_path / 'tiny.int8.onnx', _calibration())
    runner = PLUGINS['openvino'].file_runner(qdq, [x], 1, 'cpu')
    assert runner.precision == 'int8'
    got = next(iter(PLUGINS['openvino'].session(qdq, 1, 'cpu')({'in0': x}).values()))
    assert np.abs(got - _reference(qdq, x)).max() < 0.05 * np.abs(_reference(path, x)).max()


@pytest.mark.parametrize('kwargs, message', [
    (dict(precision='int4'), "OpenVINO precision 'int4' is unknown; expected one of fp32, int8"),
    (dict(precision='int8'), 'OpenVINO INT8 needs calibration inputs'),
])
def test_export_openvino_bad_input_is_one_line(tiny_onnx, tmp_path, kwargs, message):
    from fna_zoo.export.openvino import export_openvino

    with pytest.raises(ValueError, match=message) as e:
        export_openvino(tiny_onnx[0], tmp_path / 'x.xml', **kwargs)
    assert '\n' not in str(e.value)
    with pytest.raises(ValueError, match='has no .xml suffix'):
        export_openvino(tiny_onnx[0], tmp_path / 'x.bin')


def test_a_grid_row_for_openvino_records_its_version_and_options(tiny_onnx):
    from fna_zoo.bench.grid import run_grid

    path, _ = tiny_onnx
    rows = run_grid([str(path)], ['openvino', 'onnxruntime'], sizes=[(SIZE, SIZE)], warmup=1, runs=2, threads=1,
                    progress=False)
    ovr, ortr = rows
    assert (ovr['runtime'], ovr['precision'], ovr['status']) == ('openvino', 'fp32', 'ok') and ovr['p50_ms'] > 0
    assert ovr['openvino'] == ov.__version__ and ortr['openvino'] == ov.__version__
    assert ovr['runtime_options'] == {'device': 'CPU', 'INFERENCE_NUM_THREADS': 1, 'PERFORMANCE_HINT': 'LATENCY',
                                      'NUM_STREAMS': 1, 'INFERENCE_PRECISION_HINT': 'f32',
                                      'ENABLE_CPU_PINNING': False, 'io_binding': True}


def test_grid_and_check_say_openvino_is_missing(tiny_onnx, monkeypatch):
    from fna_zoo.bench.grid import run_grid
    from fna_zoo.nas.latency_runtime import get_runtime

    monkeypatch.setitem(sys.modules, 'openvino', None)
    rows = run_grid([str(tiny_onnx[0])], ['openvino'], sizes=[(SIZE, SIZE)], warmup=1, runs=1, threads=1,
                    progress=False)
    assert rows[0]['status'] == "skipped: openvino is not installed (pip install 'fna-zoo[openvino]')"
    with pytest.raises(ValueError, match=r"^openvino is not installed \(pip install 'fna-zoo\[openvino\]'\)$"):
        get_runtime('openvino', 1)


def test_latency_tables_can_target_openvino():
    from fna_zoo.nas.latency_runtime import get_runtime, measure_module

    rt = get_runtime('openvino', threads=1)
    rec = rt.describe()
    assert rec['name'] == 'openvino' and rec['version'] == f'openvino {ov.__version__}' and rec['device'] == 'cpu'
    assert rec['options']['INFERENCE_NUM_THREADS'] == 1 and rt.label == 'openvino-cpu'
    st = measure_module(rt, _tiny(), [torch.rand(1, 3, SIZE, SIZE)], warmup=1, repeats=2)
    assert st.n == 2 and st.p50 > 0

"""`fna_zoo.export.export`: the Python API over the format table (files written, gates recorded, bad names)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

from fna_zoo.export import (FORMATS, ExportGateError, ExportResult, ExportSettings, export, format_table,  # noqa: E402
                            get_format, metadata_of, run_onnx)
from fna_zoo.export.formats import Format  # noqa: E402

from test_export import _checkpoint  # noqa: E402

GATES = {'parity', 'fp16 parity', 'ap', 'none'}


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from fna_zoo.data import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp('data') / 'synthetic', num_train=4, num_val=6, image_size=64,
                               num_classes=3, seed=0)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, data_root):
    return _checkpoint(tmp_path_factory.mktemp('ckpt') / 'retinanet.pth', 'retinanet', data_root)


def _calibration(n: int = 2, size: int = 64) -> list[np.ndarray]:
    return [np.random.default_rng(i).random((1, 3, size, size), dtype=np.float32) for i in range(n)]


def test_format_table_entries():
    assert {'onnx', 'onnx-fp16', 'onnx-int8', 'tensorrt', 'openvino', 'openvino-int8'} <= set(FORMATS)
    for name, f in FORMATS.items():
        assert isinstance(f, Format) and f.name == name and callable(f.writer)
        assert f.suffix.startswith('.') and f.needs and f.gate in GATES and f.precision in ('fp32', 'fp16', 'int8')
        assert f.source is None or f.source in FORMATS
    assert FORMATS['tensorrt'].gpu and FORMATS['tensorrt'].needs == ('tensorrt',) and not FORMATS['onnx'].gpu
    assert FORMATS['onnx-int8'].gate == 'ap' and FORMATS['onnx'].gate == 'parity'
    assert FORMATS['tensorrt-int8'].source == 'onnx-int8' and FORMATS['openvino'].suffix == '.xml'
    rows = format_table()
    assert [r['format'] for r in rows] == list(FORMATS) and rows[3]['needs'] == 'tensorrt, a GPU'


@pytest.mark.parametrize('kwargs, message', [
    (dict(formats=['onnx', 'onxx']), "export format 'onxx' is unknown; expected one of onnx, onnx-fp16, onnx-int8"),
    (dict(formats='tflite'), "export format 'tflite' is unknown; expected one of onnx"),
    (dict(formats=['onnx'], precision='int4'), "precision 'int4' is unknown; expected some of fp32, fp16, int8"),
    (dict(formats=['openvino'], precision='fp16'), "format 'openvino' has no fp16 form"),
    (dict(formats=['onnx'], batch_size=2), "export option 'batch_size' is unknown; expected one of what, input_size"),
    (dict(formats=['onnx'], opset=9), '--opset is 9; expected 11..20'),
    (dict(formats=['onnx'], what='nms'), "what='nms' needs a detector"),
])
def test_bad_arguments_are_one_clear_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as e:
        export('fna_retinanet_backbone', output=tmp_path / 'x.onnx', **kwargs)
    assert message in str(e.value) and '\n' not in str(e.value)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="export format 'nope' is unknown"):
        get_format('nope')


def test_backbone_onnx_and_int8(tmp_path):
    res = export('fna_retinanet_backbone', formats=['onnx'], precision=['fp32', 'int8'], output=tmp_path / 'bb.onnx',
                 input_size=(64, 64), calibration=_calibration())
    assert isinstance(res, ExportResult) and res.what == 'backbone' and res.passed
    assert [f.format for f in res.files] == ['onnx', 'onnx-int8']
    assert res.paths == {'onnx': tmp_path / 'bb.onnx', 'onnx-int8': tmp_path / 'bb.int8.onnx'}
    assert all(p.is_file() for p in res.paths.values())
    parity = res['onnx'].gate('parity')
    assert parity.passed and parity.value < 1e-3 and parity.tolerance == 1e-3
    assert [b for b, _ in parity.details['reports']] == [1, 3]
    ap = res['onnx-int8'].gate('ap')
    assert ap.passed is None and 'a backbone export has none' in ap.note  # no detections to score: recorded, not run
    assert res['onnx-int8'].source == tmp_path / 'bb.onnx' and res['onnx-int8'].size_mb < res['onnx'].size_mb
    assert res.settings['input_size'] == (64, 64) and res.settings['formats'] == ['onnx', 'onnx-int8']
    assert res.settings['int8_flavor'] == 'onnxruntime' and res.settings['gate'] is True
    assert 'quantization' in metadata_of(res.paths['onnx-int8'])
    assert 'onnx: ' in res.summary() and 'parity PASSED' in res.summary()


def test_backbone_module_and_gate_off(tmp_path):
    from fna_zoo.detection import create_backbone

    body = create_backbone('fna_retinanet_backbone', None, features_only=True, out_indices=(2, 3, 4))
    lines = []
    res = export(body, 'onnx-fp16', output=tmp_path / 'm.onnx', input_size=(64, 64), gate=['onnx'],
                 report=lines.append)
    assert [f.format for f in res.files] == ['onnx', 'onnx-fp16']  # the fp16 file's source first
    assert res['onnx'].gate('parity').passed and res['onnx-fp16'].gate('fp16 parity').passed is None
    assert any(line.startswith('batch 1: parity PASSED') for line in lines)
    out = run_onnx(res.paths['onnx-fp16'], np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
    assert list(out) == ['feat_s8', 'feat_s16', 'feat_s32']


def test_detector_checkpoint_onnx_int8_with_ap_gate(tmp_path, checkpoint):
    res = export(checkpoint, ['onnx', 'onnx-int8'], output=tmp_path / 'det.onnx', calib_images=2, ap_drop_max=1.0)
    assert res.what == 'nms' and res.passed and res['onnx'].gate('parity').passed
    gate = res['onnx-int8'].gate('ap')
    assert gate.passed and gate.ap_before['AP'] > 0 and 0 <= gate.ap_after['AP'] <= 1
    assert gate.value == pytest.approx(gate.ap_before['AP'] - gate.ap_after['AP']) and gate.tolerance == 1.0
    assert res['onnx-int8'].kept_float == [] and res['onnx-int8'].info['calibration_images'] == 2
    ops = {n.op_type for n in onnx.load(str(res.paths['onnx-int8'])).graph.node}
    assert {'QuantizeLinear', 'NonMaxSuppression'} <= ops


def test_an_int8_file_that_does_not_run_is_a_failed_gate_not_a_traceback(tmp_path, checkpoint, monkeypatch):
    from fna_zoo.export import quantize

    real = quantize.onnx_ap

    def flaky(path, *args, **kwargs):  # the quantized file fails in onnxruntime (as Lite0's TopK did)
        if '.int8' in Path(path).name:
            raise RuntimeError('[ONNXRuntimeError] : 1 : FAIL : TopK k argument [81] should not be greater than 0')
        return real(path, *args, **kwargs)

    monkeypatch.setattr(quantize, 'onnx_ap', flaky)
    with pytest.raises(ExportGateError, match='the INT8 file does not run in onnxruntime .*TopK'):
        export(checkpoint, ['onnx', 'onnx-int8'], output=tmp_path / 'det.onnx', calib_images=2, ap_drop_max=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['det.onnx']  # the fp32 file; no INT8 file, no temp


def test_detector_module_raw(tmp_path):
    from fna_zoo.detection import build_retinanet

    torch.manual_seed(0)
    det = build_retinanet(backbone='fna_retinanet_backbone', num_classes=3, min_size=64, max_size=64, head_width=16)
    res = export(det, 'onnx', what='raw', output=tmp_path / 'raw.onnx')
    assert res.what == 'raw' and res['onnx'].gate('parity').passed
    meta = metadata_of(res.paths['onnx'])
    assert meta['detector'] == 'retinanet' and meta['num_classes'] == '3' and meta['input_size'] == '64,64'


def test_gate_failure_strict_and_recorded(tmp_path):
    with pytest.raises(ExportGateError, match='onnxruntime differs from PyTorch beyond the tolerance 1e-12') as e:
        export('fna_retinanet_backbone', ['onnx', 'onnx-fp16'], output=tmp_path / 'bb.onnx', input_size=(64, 64),
               atol=1e-12, dynamic=False)
    assert e.value.result['onnx'].path is None and e.value.result['onnx'].gate('parity').passed is False
    assert not list(tmp_path.iterdir())
    res = export('fna_retinanet_backbone', ['onnx', 'onnx-fp16'], output=tmp_path / 'bb.onnx', input_size=(64, 64),
                 settings=ExportSettings(atol=1e-12, dynamic=False), strict=False)
    assert not res.passed and res['onnx'].path is None and res['onnx-fp16'].path is None
    assert 'its source failed' in res['onnx-fp16'].info['skipped'] and not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='tensorrt is installed')
def test_tensorrt_missing_names_the_commands(tmp_path):
    from fna_zoo.export import FormatUnavailable

    with pytest.raises(FormatUnavailable) as e:
        export('fna_retinanet_backbone', 'tensorrt', output=tmp_path / 'bb.onnx', input_size=(64, 64), dynamic=False)
    assert e.value.format == 'tensorrt' and e.value.commands[0].startswith(f'trtexec --onnx={tmp_path / "bb.onnx"}')
    assert 'needs the tensorrt Python package' in str(e.value) and (tmp_path / 'bb.onnx').is_file()


def test_openvino_entries(tmp_path):
    assert FORMATS['openvino'].needs == ('openvino',) and FORMATS['openvino-int8'].gate == 'ap'
    pytest.importorskip('openvino')
    pytest.importorskip('fna_zoo.export.openvino')
    res = export('fna_retinanet_backbone', 'openvino', output=tmp_path / 'bb.onnx', input_size=(64, 64))
    xml = res.paths['openvino']
    assert xml == tmp_path / 'bb.xml' and xml.with_suffix('.bin').is_file()
    assert res['openvino'].gate('parity').passed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp folder left


def test_fna_export_format_openvino_writes_the_ir_beside_the_onnx(tmp_path):
    pytest.importorskip('openvino')
    from fna_zoo.cli.export import export_main

    out = export_main(['--model', 'fna_retinanet_backbone', '--input-size', '64', '64', '--format', 'openvino',
                       '--output', str(tmp_path / 'bb.onnx')])
    res = out['export']
    assert [f.format for f in res.files] == ['onnx', 'openvino']
    assert (tmp_path / 'bb.xml').is_file() and (tmp_path / 'bb.bin').is_file()
    assert res['openvino'].gate('parity').passed


def test_openvino_int8_gate_failure_quantizes_again_with_nncf_accuracy_control(tmp_path, checkpoint, monkeypatch):
    pytest.importorskip('openvino')
    pytest.importorskip('nncf')
    from fna_zoo.export import quantize

    real = quantize.onnx_ap
    # the fp32 file scores 5 AP points above what it does: every INT8 IR fails the gate, the accuracy control
    # (which measures the float model itself, unchanged) finds nothing to restore, and the export is refused
    monkeypatch.setattr(quantize, 'onnx_ap', lambda *a, **k: {**(r := real(*a, **k)), 'AP': r['AP'] + 0.05})
    lines: list[str] = []
    with pytest.raises(ExportGateError, match="even with NNCF's accuracy control; nothing written") as e:
        export(checkpoint, ['onnx', 'openvino-int8'], output=tmp_path / 'det.onnx', calib_images=2,
               ap_drop_max=0.002, report=lines.append)
    out = '\n'.join(lines)
    assert 'openvino int8: NNCF quantization with accuracy control (max drop 0.20 AP points' in out
    assert 'quantizers reverted to float -> AP drop' in out
    gate = e.value.result['openvino-int8'].gate('ap')
    assert gate.passed is False and 'NNCF accuracy control' in gate.note and gate.value > 0.002
    assert not (tmp_path / 'det.int8.xml').exists() and not (tmp_path / 'det.int8.bin').exists()

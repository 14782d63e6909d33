"""The INT8 fallback: layers ranked by measured sensitivity, the most sensitive kept float until the AP gate passes."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

import fna_zoo.export.quantize as quantize  # noqa: E402
from fna_zoo.cli.export import main as export_cli  # noqa: E402
from fna_zoo.export import ExportGateError, export, metadata_of  # noqa: E402
from fna_zoo.export.results import GateResult, drop_points  # noqa: E402
from fna_zoo.export.int8_fallback import (  # noqa: E402
    bisect_counts, fallback_schedule, kept_float_of, layer_sensitivity)
from fna_zoo.onnxgraph.quant import count_ops, quantized_layers  # noqa: E402

from test_export import _checkpoint  # noqa: E402


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(checkpoint, fp32 nms file, plain INT8 file, calibration batches) of a tiny RetinaNet."""
    from fna_zoo.data import make_synthetic_coco

    d = tmp_path_factory.mktemp('fallback')
    data = make_synthetic_coco(d / 'synthetic', num_train=4, num_val=6, image_size=64, num_classes=3, seed=0)
    ckpt = _checkpoint(d / 'retinanet.pth', 'retinanet', data)
    batches = [np.random.default_rng(i).random((1, 3, 64, 64), dtype=np.float32) for i in range(2)]
    fp32 = export(ckpt, 'onnx', output=d / 'det.onnx').paths['onnx']
    int8 = quantize.quantize_int8(fp32, d / 'det.int8.onnx', batches)
    return ckpt, fp32, int8, batches


def _fake_ap(path, *args):
    """AP 0.5 for a float file, 0.001 less per quantized layer: the drop is what the fallback must remove."""
    n = len(quantized_layers(onnx.load(str(path))))
    return {k: 0.5 - 0.001 * n for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')}


def test_sensitivity_ranking_is_deterministic_and_covers_the_quantized_layers(tiny):
    _, fp32, int8, batches = tiny
    a = layer_sensitivity(fp32, int8, batches)
    b = layer_sensitivity(fp32, int8, batches)
    assert a == b  # same nodes, same order, same measured values
    assert sorted(r.node for r in a) == sorted(quantized_layers(onnx.load(str(int8))))
    assert all(r.op_type == 'Conv' for r in a) and not any(r.node.startswith('/postprocess') for r in a)
    errors = [r.error for r in a]
    assert errors == sorted(errors, reverse=True) and errors[0] > errors[-1] >= 0 and errors[0] < 1


def test_fallback_schedule():
    assert fallback_schedule(10, 8) == [1, 2, 4, 8, 10]
    assert fallback_schedule(100, 3) == [1, 2, 100]  # the last step: every layer float
    assert fallback_schedule(1, 5) == [1] and fallback_schedule(0, 5) == []


def test_drop_and_limit_print_with_the_digits_that_tell_them_apart():
    assert drop_points(0.004, 0.005) == ('0.40', '0.50')
    assert drop_points(0.00503, 0.005) == ('0.503', '0.500')
    assert drop_points(0.0049993, 0.005) == ('0.4999', '0.5000')
    assert drop_points(0.005, 0.005) == ('0.50', '0.50')
    # the gate's own line (fna-export's summary) as well
    gate = GateResult('ap', False, 0.00503, 0.005, ap_before={'AP': 0.1}, ap_after={'AP': 0.09497})
    assert gate.summary() == 'ap FAILED: AP 10.00 -> 9.50 (drop 0.503 points, max 0.500)'


@pytest.mark.parametrize('smallest', [1, 5, 6, 7, 8])
def test_halving_finds_the_smallest_passing_count_in_log2_steps(smallest):
    tried = []

    def passes(k: int) -> bool:
        tried.append(k)
        return k >= smallest

    assert bisect_counts(4, 8, passes) == max(smallest, 5) and len(tried) <= 2
    assert bisect_counts(0, 1, passes) == 1 and tried[2:] == []  # nothing between: no step
    # a noisy gate (5 passes, 6 fails, 7 passes): it ends next to a failure, at a count that passed
    assert bisect_counts(4, 8, lambda k: k in (5, 7, 8)) in (5, 7)


def test_tight_limit_keeps_the_most_sensitive_layers_float(tiny, tmp_path, monkeypatch):
    ckpt, fp32, int8, _ = tiny
    total = len(quantized_layers(onnx.load(str(int8))))
    monkeypatch.setattr(quantize, 'onnx_ap', _fake_ap)
    assert _fake_ap(fp32)['AP'] == 0.5 and _fake_ap(int8)['AP'] == pytest.approx(0.5 - 0.001 * total)
    # the drop is 0.001 per quantized layer: within 0.001 * (total - 3) once 3 or more layers are float (doubling
    # 1, 2, 4 passes at 4; halving (2, 4] then tries 3, which passes: the fewest float layers)
    lines = []
    res = export(ckpt, 'onnx-int8', output=tmp_path / 'det.onnx', calib_images=2,
                 ap_drop_max=0.001 * (total - 3) + 1e-6, report=lines.append)
    out = '\n'.join(lines)
    f = res['onnx-int8']
    path, kept = f.path, f.kept_float
    assert path == tmp_path / 'det.int8.onnx' and kept_float_of(path) == kept
    assert len(kept) == 3 and 'int8 fallback: 1 of' in out and 'int8 fallback: 4 of' in out
    assert 'int8 fallback: 3 of' in out and 'int8 re-quantized with those 4' not in out
    assert 'int8 re-quantized with those 3 layers excluded' in out and f'int8 kept float: {", ".join(kept)}' in out
    ranking = [node for node, _ in f.info['sensitivity']]
    assert kept == ranking[:3] and len(ranking) == total  # the most sensitive first
    q = onnx.load(str(path))
    assert len(quantized_layers(q)) == total - 3 and not set(kept) & set(quantized_layers(q))
    plain = onnx.load(str(int8))
    # NOTE: weights are stored quantized (a DequantizeLinear each, no QuantizeLinear): a float layer has fewer of
    # those; its input activation's QuantizeLinear stays where another quantized layer reads the same tensor
    assert count_ops(q, 'DequantizeLinear') < count_ops(plain, 'DequantizeLinear')
    assert count_ops(q, 'QuantizeLinear') <= count_ops(plain, 'QuantizeLinear')
    assert '3 layers kept float' in metadata_of(path)['quantization']
    # the result: the layers, AP before (fp32) and after, the plain INT8 AP and the steps
    gate = f.gate('ap')
    assert gate.passed and gate.ap_before['AP'] == 0.5
    assert gate.ap_after['AP'] == pytest.approx(0.5 - 0.001 * (total - 3))
    assert gate.details['ap_int8_plain']['AP'] == pytest.approx(0.5 - 0.001 * total)
    steps = gate.details['fallback_steps']
    assert [s['float_layers'] for s in steps] == [1, 2, 4, 3]
    assert [s['float_layers'] for s in steps if 'AP_requantized' in s] == [3]  # one re-quantization
    assert 'fallback: 3 layers kept float' in gate.note and '3 layers kept float' in res.summary()


def test_a_re_quantization_that_fails_the_gate_goes_on_doubling(tiny, tmp_path, monkeypatch):
    ckpt, fp32, int8, _ = tiny
    total = len(quantized_layers(onnx.load(str(int8))))
    assert total > 8

    def ap(path, *args):
        """As `_fake_ap`, but a re-quantized file (not a fallback step) loses 2 layers' worth more."""
        n = len(quantized_layers(onnx.load(str(path))))
        worse = 0.002 if Path(path).name != 'step.onnx' and 0 < n < total else 0.0
        return {k: 0.5 - 0.001 * n - worse for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')}

    monkeypatch.setattr(quantize, 'onnx_ap', ap)
    # steps pass from 3 float layers, re-quantized files from 5: doubling 1, 2, 4 (passes), halving 3 (passes);
    # its re-quantization fails, and the search doubles on from 4 without halving back: 8 passes and is re-quantized
    lines = []
    res = export(ckpt, 'onnx-int8', output=tmp_path / 'det.onnx', calib_images=2,
                 ap_drop_max=0.001 * (total - 3) + 1e-6, report=lines.append)
    f, gate = res['onnx-int8'], res['onnx-int8'].gate('ap')
    steps = gate.details['fallback_steps']
    assert [s['float_layers'] for s in steps] == [1, 2, 4, 3, 8]
    assert [(s['float_layers'], s['drop_requantized'] <= 0.001 * (total - 3) + 1e-6)
            for s in steps if 'AP_requantized' in s] == [(3, False), (8, True)]
    assert gate.passed and len(f.kept_float) == 8 and kept_float_of(f.path) == f.kept_float
    assert gate.ap_after['AP'] == pytest.approx(0.5 - 0.001 * (total - 8) - 0.002)
    assert 'int8 re-quantized with those 3 layers excluded' in '\n'.join(lines)


def test_fallback_that_cannot_meet_the_limit_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    ckpt, _, int8, _ = tiny
    total = len(quantized_layers(onnx.load(str(int8))))
    monkeypatch.setattr(quantize, 'onnx_ap', lambda path, *a: {k: (0.5 if Path(path).name == 'det.onnx' else 0.1)
                                                               for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')})
    code = export_cli(['--checkpoint', str(ckpt), '--output', str(tmp_path / 'det.onnx'), '--int8', '--calib-images',
                       '2'])
    captured = capsys.readouterr()
    out, err = captured.out, [line for line in captured.err.strip().splitlines() if 'WARNING' not in line]
    assert code == 1 and len(err) == 1, err
    assert err[0] == (f'error: INT8 AP drop 40.00 points exceeds --ap-drop-max 2.00 even with {total} quantized layers '
                      f"kept float; nothing written to {str(tmp_path / 'det.int8.onnx')!r}")
    assert not (tmp_path / 'det.int8.onnx').exists() and not list(tmp_path.glob('.*'))
    assert 'int8 fallback: 1 of' in out and f'int8 fallback: {total} of {total} layers float' in out
    # without the fallback: the plain gate's error, at once; a limit missed by a hair is printed with the digits
    # that tell the two apart
    with pytest.raises(ExportGateError, match=r'drop 40\.000 points exceeds --ap-drop-max 39\.998; nothing written') as e:
        export(ckpt, 'onnx-int8', output=tmp_path / 'det.onnx', calib_images=2, int8_fallback=False,
               ap_drop_max=0.39998)
    assert e.value.result['onnx-int8'].path is None and e.value.result['onnx'].path == tmp_path / 'det.onnx'

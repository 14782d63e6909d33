"""benchmarks/int8_network.py: its quantization variants, the profiler split and the report (tiny model)."""
import sys
from pathlib import Path

import pytest
import torch

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import int8_network as bench  # noqa: E402
from fna_zoo.runtime.runners import onnx_bytes  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv_dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv_pwl = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(torch.relu(self.conv_dw(torch.relu(self.conv_stem(x)))))


@pytest.fixture(scope='module')
def tiny():
    x = torch.rand(1, 3, 32, 32)
    data = onnx_bytes(Tiny().eval(), [x])
    return onnx.load_from_string(data), data, x.numpy()


def test_variants_keep_the_named_convolutions_float(tiny):
    model, _, _ = tiny
    assert bench._variant_args('int8_stem_float', model) == {'exclude': ['/conv_stem/Conv']}
    assert bench._variant_args('int8_dw_float', model) == {'exclude': ['/conv_dw/Conv']}
    assert bench._variant_args('int8_per_tensor', model) == {'per_channel': False}
    assert bench._variant_args('int8_u8_weights', model) == {'weights': 'uint8'}
    assert bench._variant_args('int8_reduce_range', model) == {'reduce_range': True}
    with pytest.raises(ValueError, match="unknown variant 'int4'"):
        bench._variant_args('int4', model)
    plain = onnx.load_from_string(onnx_bytes(torch.nn.Conv2d(3, 4, 1).eval(), [torch.rand(1, 3, 8, 8)]))
    with pytest.raises(ValueError, match="variant 'int8_dw_float' keeps no convolution float in this model"):
        bench._variant_args('int8_dw_float', plain)


def test_weight_options_write_uint8_or_7_bit_weights(tiny, tmp_path):
    import numpy as np
    from onnx import numpy_helper

    from fna_zoo.export.quantize import quantize_int8

    model, _, x = tiny
    fp32 = tmp_path / 'tiny.onnx'
    onnx.save(model, str(fp32))
    batches = [np.random.default_rng(i).random(x.shape, dtype=np.float32) for i in range(4)]

    def weights(path: Path) -> list:
        q = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
        # the quantized weights: the integer inputs of the DequantizeLinear nodes feeding a Conv's weight input
        conv_w = {n.input[1] for n in q.graph.node if n.op_type == 'Conv'}
        return [inits[n.input[0]] for n in q.graph.node if n.op_type == 'DequantizeLinear' and n.output[0] in conv_w]

    plain = weights(quantize_int8(fp32, tmp_path / 'int8.onnx', batches))
    u8 = weights(quantize_int8(fp32, tmp_path / 'u8.onnx', batches, weights='uint8'))
    narrow = weights(quantize_int8(fp32, tmp_path / 'rr.onnx', batches, reduce_range=True))
    assert len(plain) == len(u8) == len(narrow) == 3
    assert all(w.dtype == np.int8 for w in plain + narrow) and all(w.dtype == np.uint8 for w in u8)
    assert max(int(np.abs(w).max()) for w in plain) > 64 >= max(int(np.abs(w).max()) for w in narrow)
    with pytest.raises(ValueError, match="INT8 weights 'uint8' with flavor 'tensorrt'"):
        quantize_int8(fp32, tmp_path / 'x.onnx', batches, flavor='tensorrt', weights='uint8')


def test_profile_splits_the_node_time_by_part_and_op(tiny):
    _, data, x = tiny
    prof = bench.profile(data, x, threads=1, runs=3)
    assert set(prof) == {'part', 'op', 'backbone conv'}
    assert list(prof['part']) == ['other'] and prof['part']['other'] > 0  # no backbone / FPN / head scope here
    assert 'Conv' in prof['op'] or 'FusedConv' in prof['op']
    assert sum(prof['op'].values()) == pytest.approx(sum(prof['part'].values()))


def test_report_has_a_row_per_file_and_thread_count():
    times = {'fp32': {'p50_ms': 20.0, 'x_fp32': 1.0}, 'int8': {'p50_ms': 8.0, 'x_fp32': 2.5}}
    prof = {'part': {'backbone': 4.0, 'head': 3.0}, 'op': {'QLinearConv': 6.0, 'Transpose': 1.0},
            'backbone conv': {'depthwise': 2.0}}
    record = {'checkpoint': 'runs/x/final.pth', 'input_size': [320, 320], 'calibration_images': 32,
              'machine': {'cpu_model': 'CPU', 'cores': 2, 'loadavg_1m': 0.1, 'onnxruntime': '1'},
              'ap': {'fp32': {'AP': 5.0, 'AP50': 18.0}, 'int8': {'AP': 4.9, 'AP50': 17.5}},
              'network': {'1': times, '2': times}, 'profile_1_thread': {'fp32': prof, 'int8': prof}}
    text = bench.report(record)
    assert '| int8 | 4.90 | 17.50 | 8.00 | 2.50 | 8.00 | 2.50 |' in text
    assert '| backbone | 4.00 | 4.00 | 1.00 |' in text and 'QLinearConv 86 %' in text
    assert '--checkpoint runs/x/final.pth' in text and '--variants' not in text
    assert '--variants int8_u8_weights' in bench.report(dict(record, variants=['int8_u8_weights']))

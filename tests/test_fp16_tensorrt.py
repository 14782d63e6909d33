"""fp16 ONNX export (`fna-export --fp16`) and strongly typed TensorRT engines (TensorRT 10 and 11), without TensorRT:
the mixed-precision conversion and its gate, which ONNX file feeds which engine precision, the builder settings
(on a stand-in `tensorrt` module), the trtexec line per version, and the refusals."""
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')
from onnx import TensorProto  # noqa: E402

from fna_zoo.cli.export import export_main, main as export_cli  # noqa: E402
from fna_zoo.export import metadata_of, run_onnx  # noqa: E402
from fna_zoo.export.fp16 import export_fp16  # noqa: E402
from fna_zoo.export.onnx_export import backbone_target, export_with_gate  # noqa: E402
from fna_zoo.export.quantize import quantize_int8  # noqa: E402
from fna_zoo.runtime import tensorrt as rt  # noqa: E402
from fna_zoo.onnxgraph import convert_fp16, convert_fp16_file, is_fp16_model, onnx_precision, tensor_types  # noqa: E402
from fna_zoo.runtime.runners import onnx_bytes  # noqa: E402

from test_export import ENV, ROOT, _checkpoint  # noqa: E402


@pytest.fixture(scope='module')
def backbone(tmp_path_factory):
    """(target, fp32 file) of the FNA RetinaNet backbone at 64x64, dynamic batch and size."""
    d = tmp_path_factory.mktemp('bb')
    target = backbone_target('fna_retinanet_backbone', input_size=(64, 64))
    path, _ = export_with_gate(target, d / 'bb.onnx', check_batches=[1])
    return target, path


@pytest.fixture(scope='module')
def files(tmp_path_factory, backbone):
    """fp32, fp16, TensorRT-flavour QDQ and onnxruntime-flavour QDQ files of the backbone."""
    d = tmp_path_factory.mktemp('files')
    target, fp32 = backbone
    fp16 = export_fp16(target, fp32, d / 'bb.fp16.onnx').path
    batches = [np.random.default_rng(i).random((1, 3, 64, 64), dtype=np.float32) for i in range(2)]
    return {'fp32': fp32, 'fp16': fp16, 'int8': quantize_int8(fp32, d / 'bb.int8.onnx', batches, flavor='tensorrt'),
            'int8-ort': quantize_int8(fp32, d / 'bb.ort.int8.onnx', batches)}


def _reads(model, prefix: str) -> set[int]:
    """Float types the nodes under `prefix` read (besides Casts)."""
    t = tensor_types(model)
    return {t.get(x) for n in model.graph.node if n.name.startswith(prefix) and n.op_type != 'Cast'
            for x in n.input if x and t.get(x) in (TensorProto.FLOAT, TensorProto.FLOAT16)}


# ---------------------------------------------------------------------------------------------- fp16 export
def test_fp16_backbone_export(tmp_path, capsys):
    out = tmp_path / 'bb.onnx'
    res = export_main(['--model', 'fna_retinanet_backbone', '--output', str(out), '--input-size', '64', '96', '--fp16'])
    fp16 = res['fp16']
    assert fp16.path == tmp_path / 'bb.fp16.onnx' and fp16.passed
    assert [b for b, _ in fp16.reports] == [1, 3] and all(r.passed for _, r in fp16.reports)
    assert fp16.mb_fp16 < 0.55 * fp16.mb_fp32  # weights in fp16
    printed = capsys.readouterr().out
    assert 'fp16 batch 3: parity PASSED: max diff / output range' in printed and 'tolerance 0.01' in printed
    assert 'fp16 nodes with fp16 kernels' in printed and 'in float32 behind inserted casts' in printed
    assert f'wrote {fp16.path} (fp16, ' in printed
    m = onnx.load(str(fp16.path))
    assert is_fp16_model(m) and onnx_precision(fp16.path) == 'fp16' and onnx_precision(out) == 'fp32'
    # float32 in and out, the normalisation in float32, the network in fp16
    assert [i.type.tensor_type.elem_type for i in [*m.graph.input, *m.graph.output]] == [TensorProto.FLOAT] * 5
    assert _reads(m, '/normalize/') == {TensorProto.FLOAT} and _reads(m, '/body/') == {TensorProto.FLOAT16}
    meta = metadata_of(fp16.path)
    assert meta['precision'] == 'fp16' and 'kept float32: /normalize/' in meta['fp16'] and meta['arch']
    # another batch and size than the export's, against PyTorch (dynamic batch and size kept)
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        ref = res['target'].module(x)
    for r, o in zip(ref, run_onnx(fp16.path, x.numpy()).values()):
        assert o.dtype == np.float32 and o.shape == tuple(r.shape)
        assert np.abs(o - r.numpy()).max() <= 0.01 * max(1.0, float(r.abs().max()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bb.fp16.onnx', 'bb.onnx']


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    from fna_zoo.data import make_synthetic_coco

    d = tmp_path_factory.mktemp('ckpt')
    root = make_synthetic_coco(d / 'synthetic', num_train=4, num_val=6, image_size=64, num_classes=3, seed=0)
    return {k: _checkpoint(d / f'{k}.pth', k, root) for k in ('retinanet', 'ssdlite')}


@pytest.mark.parametrize('detector', ['retinanet', 'ssdlite'])
def test_fp16_nms_detector_keeps_decoding_and_nms_in_float32(tmp_path, checkpoints, detector):
    res = export_main(['--checkpoint', str(checkpoints[detector]), '--output', str(tmp_path / 'det.onnx'), '--fp16'])
    fp16 = res['fp16']
    assert fp16.passed and all(r.details['detections'] > 0 for _, r in fp16.reports)
    m = onnx.load(str(fp16.path))
    assert _reads(m, '/core/') == {TensorProto.FLOAT16}  # backbone, neck and head
    assert _reads(m, '/postprocess/') == {TensorProto.FLOAT} and _reads(m, '/normalize/') == {TensorProto.FLOAT}
    nms = next(n for n in m.graph.node if n.op_type == 'NonMaxSuppression')
    assert {tensor_types(m)[x] for x in nms.input[:2]} == {TensorProto.FLOAT}
    assert set(fp16.info.fp32_scopes) == {'/normalize/', '/postprocess/'} and fp16.info.casts <= 6
    out = run_onnx(fp16.path, np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    assert out['boxes'].dtype == np.float32 and out['labels'].dtype == np.int64
    # the raw export: the anchors (top level) stay float32, exactly
    raw = export_main(['--checkpoint', str(checkpoints[detector]), '--what', 'raw', '--output',
                       str(tmp_path / 'raw.onnx'), '--fp16'])
    assert raw['fp16'].passed and '(top level)' in raw['fp16'].info.fp32_scopes
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    np.testing.assert_array_equal(run_onnx(raw['fp16'].path, x)['anchors'], run_onnx(raw['output'], x)['anchors'])


def test_fp16_gate_failure_leaves_no_fp16_file(tmp_path, capsys):
    out = tmp_path / 'bb.onnx'
    code = export_cli(['--model', 'fna_retinanet_backbone', '--output', str(out), '--input-size', '64', '64',
                       '--static', '--fp16', '--fp16-tol', '1e-7'])
    assert code == 1
    captured = capsys.readouterr()
    assert 'fp16 batch 1: parity FAILED: max diff / output range' in captured.out
    assert captured.err.startswith('error: the fp16 file differs from PyTorch beyond --fp16-tol 1e-07; nothing written '
                                   f"to {str(tmp_path / 'bb.fp16.onnx')!r}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bb.onnx']  # the fp32 file passed its own gate


@pytest.mark.parametrize('extra, message', [
    (['--fp16-output', 'x.fp16.onnx'], '--fp16-output needs --fp16'),
    (['--fp16-tol', '0.05'], '--fp16-tol needs --fp16'),
    (['--fp16', '--fp16-tol', '0'], '--fp16-tol is 0.0; expected a fraction in (0, 1)'),
    (['--fp16', '--fp16-tol', 'nan'], '--fp16-tol is nan; expected a fraction in (0, 1)'),
    (['--fp16', '--fp16-output', '{out}'], 'is the float32 or INT8 output; expected another file'),
    (['--fp16', '--fp16-output', 'x.txt'], '.onnx'),
])
def test_fp16_usage_errors(tmp_path, extra, message):
    out = tmp_path / 'bb.onnx'
    extra = [e.replace('{out}', str(out)) if '{out}' in e else (str(tmp_path / e) if e.startswith('x.') else e)
             for e in extra]
    with pytest.raises(ValueError) as e:
        export_main(['--model', 'fna_retinanet_backbone', '--output', str(out), '--input-size', '64', '64', *extra])
    assert message in str(e.value) and not list(tmp_path.iterdir())


def test_convert_fp16_refusals_and_parts(files):
    m32 = onnx.load(str(files['fp32']))
    with pytest.raises(ValueError, match='already holds fp16 tensors'):
        convert_fp16(onnx.load(str(files['fp16'])))
    with pytest.raises(ValueError, match=r'quantized \(DequantizeLinear, QuantizeLinear\)'):
        convert_fp16(onnx.load(str(files['int8'])))
    with pytest.raises(ValueError, match=r'no node of the model is under /nowhere/; expected an export of'):
        convert_fp16(m32, ['/nowhere/'])
    everything, info = convert_fp16(m32, None)  # e.g. a latency-table part: every node fp16
    assert info.fp32_nodes == 0 and _reads(everything, '/normalize/') == {TensorProto.FLOAT16}
    assert not is_fp16_model(m32)  # the input model is not modified
    # a latency-table part (no fna_zoo scopes): 'auto' converts all of it, io float32
    block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU6()).eval()
    src = files['fp32'].parent / 'part.onnx'
    src.write_bytes(onnx_bytes(block, [torch.rand(1, 8, 16, 16)]))
    info = convert_fp16_file(src, src.with_suffix('.fp16.onnx'))
    assert info.scopes is None and info.fp32_nodes == 0 and info.fp16_nodes >= 2
    x = np.random.default_rng(0).random((1, 8, 16, 16), dtype=np.float32)
    a, b = run_onnx(src, x), run_onnx(src.with_suffix('.fp16.onnx'), x)
    np.testing.assert_allclose(list(b.values())[0], list(a.values())[0], atol=1e-2)


def test_fp16_clips_to_the_fp16_range(tmp_path):
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.array([1e6, -1e6, 1e-9, 0.5], np.float32), 'w')
    node = helper.make_node('Mul', ['x', 'w'], ['y'], name='/body/Mul')
    graph = helper.make_graph([node], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [4])], [w])
    m16, info = convert_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)]))
    assert (info.clipped, info.flushed, info.casts) == (2, 1, 2)
    assert numpy_helper.to_array(m16.graph.initializer[0]).tolist() == [65504.0, -65504.0, 0.0, 0.5]


# ------------------------------------------------------------------------------------ engine precision matrix
MATRIX = [('fp32', 'fp32'), ('fp16', 'fp16'), ('int8', 'int8')]


@pytest.mark.parametrize('major', [10, 11])
@pytest.mark.parametrize('precision, file', MATRIX)
def test_engine_plan_matrix(files, major, precision, file):
    plan = rt.engine_plan(files[file], precision, trt_major=major)
    assert plan.precision == precision and plan.onnx_path == files[file] and plan.builder_flags == ()
    assert plan.network_flags == (('STRONGLY_TYPED',) if major == 10 else ())
    cmd = rt.trtexec_command(files[file], 'e.engine', (64, 64), batch=1, max_batch=8, trt_major=major)
    assert cmd.startswith(f'trtexec --onnx={files[file]} --saveEngine=e.engine --minShapes=images:1x3x64x64 '
                          '--optShapes=images:1x3x64x64 --maxShapes=images:8x3x64x64 --timingCacheFile=e.timing.cache')
    assert cmd.endswith(' --stronglyTyped') == (major == 10)
    assert not {'--fp16', '--int8', '--best', '--bf16', '--calib'} & set(cmd.split())


@pytest.mark.parametrize('precision, file, message', [
    ('fp16', 'fp32', "a fp16 engine needs the fp16 export (fna-export --fp16 writes <stem>.fp16.onnx); '{path}' is a "
                     'fp32 ONNX file'),
    ('int8', 'fp32', "a int8 engine needs the QDQ export"),
    ('fp32', 'fp16', "a fp32 engine needs the float32 export"),
    ('int8', 'fp16', "is a fp16 ONNX file"),
    ('fp16', 'int8', "is a int8 ONNX file"),
    ('int8', 'int8-ort', 'TensorRT cannot build the Q/DQ of'),
    ('bf16', 'fp32', "engine precision 'bf16' is unknown; expected one of fp32, fp16, int8"),
])
def test_engine_plan_refuses_what_the_file_cannot_give(files, precision, file, message):
    with pytest.raises(ValueError) as e:
        rt.engine_plan(files[file], precision, trt_major=11)
    assert message.replace('{path}', str(files[file])) in str(e.value)


def test_qdq_flavours(files):
    assert rt.qdq_problems(files['int8']) == []  # TensorRT's: symmetric int8, float biases
    problems = rt.qdq_problems(files['int8-ort'])  # onnxruntime's CPU flavour
    assert any('uint8 zero points' in p for p in problems) and any('int32 DequantizeLinear' in p for p in problems)
    assert onnx_precision(files['int8']) == 'int8' and onnx_precision(files['int8-ort']) == 'int8'
    # onnxruntime runs the TensorRT flavour too
    x = np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)
    a, b = run_onnx(files['fp32'], x), run_onnx(files['int8'], x)
    assert all(np.corrcoef(a[k].ravel(), b[k].ravel())[0, 1] > 0.9 for k in a)


def test_trtexec_version_and_static(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)  # none installed: TensorRT 11's form
    assert rt.tensorrt_major() is None
    cmd = rt.trtexec_command('m.onnx', 'm.engine', (320, 320), batch=2, dynamic=False)
    assert cmd == 'trtexec --onnx=m.onnx --saveEngine=m.engine --timingCacheFile=m.timing.cache'  # static: no shapes
    monkeypatch.setitem(sys.modules, 'tensorrt', types.SimpleNamespace(__version__='10.13.0.35'))
    assert rt.tensorrt_major() == 10 and rt.trtexec_command('m.onnx', 'm.engine', (320, 320)).endswith('--stronglyTyped')
    with pytest.raises(ValueError, match='TensorRT 8 is too old; expected TensorRT 10 or 11'):
        rt.trtexec_command('m.onnx', 'm.engine', (320, 320), trt_major=8)


class _FakeTensorRT(types.ModuleType):
    """A stand-in `tensorrt` recording how the engine is built (no precision flags exist on it: TensorRT 11)."""

    def __init__(self, version: str) -> None:
        super().__init__('tensorrt')
        self.__version__ = version
        self.calls: list = []
        calls = self.calls

        class Logger:
            WARNING = 2

            def __init__(self, *a):
                pass

        class _Input:
            name, shape = 'images', (-1, 3, 64, 64)

        class _Network:
            def get_input(self, i):
                return _Input()

        class _Cache:
            def serialize(self):
                return b'cache'

        class _Config:
            def __getattr__(self, name):  # e.g. set_flag / int8_calibrator: not in TensorRT 11
                raise AttributeError(f'IBuilderConfig has no {name} (TensorRT 11)')

            def set_memory_pool_limit(self, *a):
                calls.append(('set_memory_pool_limit',))

            def add_optimization_profile(self, p):
                calls.append(('profile', p.shapes))

            def create_timing_cache(self, data):
                return _Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                pass

            def get_timing_cache(self):
                return _Cache()

        class _Profile:
            def set_shape(self, name, lo, opt, hi):
                self.shapes = (name, lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls.append(('create_network', flags))
                return _Network()

            def create_builder_config(self):
                return _Config()

            def create_optimization_profile(self):
                return _Profile()

            def build_serialized_network(self, network, config):
                calls.append(('build',))
                return b'engine'

        class OnnxParser:
            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                calls.append(('parse', Path(path).name))
                return True

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)


@pytest.mark.parametrize('version, flags', [('10.13.0.35', 1), ('11.4.0.106', 0)])
@pytest.mark.parametrize('precision, file', MATRIX)
def test_build_engine_settings_on_a_stand_in_tensorrt(tmp_path, monkeypatch, files, version, flags, precision, file):
    import json

    fake = _FakeTensorRT(version)
    monkeypatch.setitem(sys.modules, 'tensorrt', fake)
    engine = rt.build_engine(files[file], tmp_path / 'e.engine', (64, 64), precision, batch=2, max_batch=4)
    assert engine.read_bytes() == b'engine'
    assert fake.calls[0] == ('create_network', flags)  # STRONGLY_TYPED bit on 10, nothing on 11
    assert ('parse', files[file].name) in fake.calls and fake.calls[-1] == ('build',)
    assert ('profile', ('images', (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))) in fake.calls
    info = json.loads((tmp_path / 'e.engine.json').read_text())
    assert info['precision'] == precision and info['builder_flags'] == [] and info['tensorrt'] == version
    assert info['network_flags'] == (['STRONGLY_TYPED'] if version.startswith('10') else [])


def test_engine_cli_without_tensorrt_names_every_engine(tmp_path, checkpoints):
    """--fp16 --int8 --format engine: both files written and gated, then one trtexec line per engine (exit 2)."""
    out = tmp_path / 'det.onnx'
    r = subprocess.run([sys.executable, '-m', 'fna_zoo.export', '--checkpoint', str(checkpoints['retinanet']),
                        '--output', str(out), '--fp16', '--int8', '--calib-images', '2', '--format', 'engine'],
                       capture_output=True, text=True, env={**ENV, 'PYTHONPATH': str(ROOT)}, cwd=ROOT, timeout=600)
    if 'tensorrt' in sys.modules or r.returncode == 0:
        pytest.skip('tensorrt is installed here')
    assert r.returncode == 2, r.stderr
    line = [x for x in r.stderr.strip().splitlines() if 'WARNING' not in x][-1]
    assert line.startswith('error: --format engine needs the tensorrt Python package') and 'files are written' in line
    for stem in ('det.fp16', 'det.int8'):
        assert f'trtexec --onnx={tmp_path / stem}.onnx --saveEngine={tmp_path / stem}.engine ' in line
    assert '--fp16 ' not in line.replace('.fp16', '') and '--int8' not in line.replace('.int8', '')
    assert rt.qdq_problems(tmp_path / 'det.int8.onnx') == []  # TensorRT's flavour, gated by AP
    assert rt.engine_plan(tmp_path / 'det.fp16.onnx', 'fp16').precision == 'fp16'
    assert not list(tmp_path.glob('*.engine'))

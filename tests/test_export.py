"""fna-export: ONNX backbone / raw / NMS exports with the parity gate, INT8, TensorRT, predict_onnx.py."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

from fna_zoo.arch import load_arch  # noqa: E402
from fna_zoo.data import make_synthetic_coco  # noqa: E402
from fna_zoo.engine import load_config, save_checkpoint  # noqa: E402
from fna_zoo.detection import build_model  # noqa: E402
from fna_zoo.export import compare_detections, load_detector, metadata_of, postprocess_for, run_onnx  # noqa: E402
from fna_zoo.cli.export import export_main, main as export_cli  # noqa: E402
from fna_zoo.export.postprocess import detector_anchors  # noqa: E402

from conftest import randomize_bn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
KWARGS = {
    'retinanet': 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.05}',
    'ssdlite': 'model.kwargs={image_size: 64, score_thresh: 0.05}',
}


def _spread_head(model: torch.nn.Module) -> None:
    """Random BN statistics and wider head weights: distinct scores (no exact ties) and real detections."""
    randomize_bn(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.head.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.05, generator=g)
        cls = getattr(model.head.classification_head, 'cls_logits', None)
        if cls is not None:  # RetinaNet: from the 0.01 prior to scores around 0.5
            cls.bias.zero_()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    return make_synthetic_coco(tmp_path_factory.mktemp('data') / 'synthetic', num_train=4, num_val=6, image_size=64,
                               num_classes=3, seed=0)


def _checkpoint(path: Path, detector: str, data_root: Path, *overrides: str, spread: bool = True) -> Path:
    cfg = load_config(None, [f'detector={detector}', KWARGS[detector], f'data.synthetic.root={data_root}',
                             'data.synthetic.num_train=4', 'data.synthetic.num_val=6', 'data.synthetic.image_size=64',
                             'data.synthetic.num_classes=3', 'model.num_classes=3', *overrides])
    torch.manual_seed(0)
    model = build_model(cfg, 3, with_seed=False)
    if spread:
        _spread_head(model)
    return save_checkpoint({'model': model.state_dict(), 'config': cfg, 'num_classes': 3, 'step': 0}, path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory, data_root) -> dict[str, Path]:
    d = tmp_path_factory.mktemp('ckpt')
    return {k: _checkpoint(d / f'{k}.pth', k, data_root) for k in ('retinanet', 'ssdlite')}


@pytest.fixture(scope='module')
def nms_exports(tmp_path_factory, checkpoints) -> dict[str, Path]:
    d = tmp_path_factory.mktemp('onnx')
    out = {}
    for k, ckpt in checkpoints.items():
        res = export_main(['--checkpoint', str(ckpt), '--output', str(d / f'{k}.onnx')])
        out[k] = res['output']
    return out


def _padded(dets: list[dict], k: int) -> list[np.ndarray]:
    """torchvision's per-image detection dicts as padded arrays like the exported outputs."""
    pad = lambda a, n: np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:], a.dtype)])  # noqa: E731
    return [np.stack([pad(d[key].numpy(), k) for d in dets]) for key in ('boxes', 'scores', 'labels')] + \
        [np.array([len(d['boxes']) for d in dets])]


def test_backbone_export_parity_dynamic_batch_and_size(tmp_path, capsys):
    out = tmp_path / 'bb.onnx'
    res = export_main(['--model', 'fna_retinanet_backbone', '--output', str(out), '--input-size', '64', '96'])
    assert [b for b, _ in res['parity']] == [1, 3]  # exported at batch 1, checked at batch 3 too
    assert all(r.passed and r.max_abs_diff < 1e-3 for _, r in res['parity'])
    printed = capsys.readouterr().out
    assert 'batch 3: parity PASSED: max abs diff' in printed and 'tolerance 0.001' in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bb.onnx']  # one file: no external data, no temp
    meta = metadata_of(out)
    assert meta['fna_zoo.what'] == 'backbone' and meta['opset'] == '18' and meta['dynamic_size'] == 'true'
    assert meta['arch'] == load_arch('fna_retinanet_backbone').to_fna_string()
    assert meta['seed_network'] == 'mobilenetv2_100'  # the arch's recorded seed (default: MobileNetV2)
    assert json.loads(meta['mean']) == pytest.approx([0.485, 0.456, 0.406])
    # another batch and image size than the export's, against PyTorch
    x = torch.rand(2, 3, 128, 160)
    ort_out = run_onnx(out, x.numpy())
    with torch.no_grad():
        ref = res['target'].module(x)
    assert list(ort_out) == ['feat_s4', 'feat_s8', 'feat_s16', 'feat_s32']
    for r, o in zip(ref, ort_out.values()):
        assert o.shape == tuple(r.shape) and np.abs(o - r.numpy()).max() < 1e-3


def test_arch_file_and_timm_backbones(tmp_path):
    arch_file = load_arch('fna_ssdlite_backbone').save(tmp_path / 'arch.yaml')
    res = export_main(['--arch', str(arch_file), '--output', str(tmp_path / 'a.onnx'), '--input-size', '64', '64',
                       '--static', '--out-indices', '3', '4'])
    assert [b for b, _ in res['parity']] == [1] and res['parity'][0][1].passed
    meta = metadata_of(tmp_path / 'a.onnx')
    assert meta['arch'] == load_arch('fna_ssdlite_backbone').to_fna_string() and meta['dynamic_batch'] == 'false'
    with pytest.raises(Exception, match='(?i)dimension|shape'):  # --static: the batch is fixed
        run_onnx(tmp_path / 'a.onnx', np.zeros((2, 3, 64, 64), np.float32))
    res = export_main(['--model', 'timm:mobilenetv2_100', '--output', str(tmp_path / 't.onnx'), '--input-size', '64', '64'])
    assert all(r.passed for _, r in res['parity'])
    assert metadata_of(tmp_path / 't.onnx')['arch'] == 'timm:mobilenetv2_100'
    assert metadata_of(tmp_path / 't.onnx')['seed_network'] == 'mobilenetv2_100'


def test_lite0_backbone_export_records_its_normalisation(tmp_path):
    # TF "same" padding exports (its pads follow the input size: checked at another, odd size) and the file records
    # the Lite0 seed's (x - 0.5) / 0.5, which the graph applies and the deployment pre-processing reads
    res = export_main(['--model', 'tf_efficientnet_lite0', '--output', str(tmp_path / 'l.onnx'),
                       '--input-size', '64', '64'])
    assert all(r.passed for _, r in res['parity'])
    meta = metadata_of(tmp_path / 'l.onnx')
    assert json.loads(meta['mean']) == json.loads(meta['std']) == [0.5, 0.5, 0.5]
    assert meta['seed_network'] == 'tf_efficientnet_lite0'
    x = torch.rand(1, 3, 97, 131)
    with torch.no_grad():
        ref = res['target'].module(x)
    for r, o in zip(ref, run_onnx(tmp_path / 'l.onnx', x.numpy()).values()):
        assert o.shape == tuple(r.shape) and np.abs(o - r.numpy()).max() < 1e-3


@pytest.mark.parametrize('detector', ['retinanet', 'ssdlite'])
def test_postprocess_equals_torchvision(checkpoints, detector):
    """The export-friendly postprocess gives torchvision's eval detections (non-default thresholds too)."""
    model, _ = load_detector(checkpoints[detector])
    model.score_thresh, model.nms_thresh, model.detections_per_img = 0.2, 0.3, 7
    core = model.backbone, model.head
    pp = postprocess_for(model, (64, 64))
    assert (pp.score_thresh, pp.iou_thresh, pp.max_dets) == (0.2, 0.3, 7)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(list(x))
        xn = (x - torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)) / torch.tensor(
            model.transform.image_std).view(1, 3, 1, 1)
        head = core[1](list(core[0](xn).values()))
        out = [t.numpy() for t in pp(head['cls_logits'], head['bbox_regression'])]
    assert out[0].shape == (3, 7, 4) and out[3].dtype == np.int64
    assert out[3].sum() > 0 and (out[2][out[1] == 0] == -1).all()  # padding is labelled -1
    report = compare_detections(_padded(ref, 7), out, 1e-6, 0.2, 0.3)
    assert report.passed and report.details['near-tie swaps'] == 0, report.summary()


@pytest.mark.parametrize('detector', ['retinanet', 'ssdlite'])
def test_detector_raw_export(tmp_path, checkpoints, detector):
    out = tmp_path / 'raw.onnx'
    res = export_main(['--checkpoint', str(checkpoints[detector]), '--what', 'raw', '--output', str(out)])
    assert all(r.passed for _, r in res['parity']) and [b for b, _ in res['parity']] == [1, 3]
    model, _ = load_detector(checkpoints[detector])
    anchors, _ = detector_anchors(model, (64, 64))
    ort_out = run_onnx(out, np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    classes = 3 if detector == 'retinanet' else 4  # SSD: background + 3
    assert ort_out['cls_logits'].shape == (2, anchors.shape[0], classes)
    np.testing.assert_allclose(ort_out['anchors'][1], anchors.numpy(), atol=1e-4)
    meta = metadata_of(out)
    assert meta['detector'] == detector and meta['num_classes'] == '3' and meta['input_size'] == '64,64'
    assert json.loads(meta['class_names']) == ['red_disc', 'green_square', 'blue_triangle']  # the built-in set's


@pytest.mark.parametrize('detector', ['retinanet', 'ssdlite'])
def test_detector_nms_export_matches_torchvision(nms_exports, checkpoints, detector):
    """The batch-1 export at batch 3 against torchvision's own eval output on the same input."""
    path = nms_exports[detector]
    meta = metadata_of(path)
    assert meta['fna_zoo.what'] == 'nms' and meta['resize'] == ('letterbox' if detector == 'retinanet' else 'stretch')
    model, _ = load_detector(checkpoints[detector])
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(list(x))
    k = int(meta['max_dets'])
    out = run_onnx(path, x.numpy())
    assert out['boxes'].shape == (3, k, 4) and out['num_detections'].shape == (3,)
    assert out['num_detections'].sum() > 0
    report = compare_detections(_padded(ref, k), [out[n] for n in ('boxes', 'scores', 'labels', 'num_detections')],
                                1e-3, float(meta['score_thresh']), float(meta['iou_thresh']))
    assert report.passed, report.summary()


def test_compare_detections_matching():
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.8, 0.0]], np.float32)
    labels = np.array([[1, 0, 0, -1]])
    num = np.array([3])
    ref = [boxes, scores, labels, num]
    swapped = [boxes[:, [0, 2, 1, 3]], scores[:, [0, 2, 1, 3]], labels[:, [0, 2, 1, 3]], num]  # tied scores reordered
    assert compare_detections(ref, swapped, 1e-4, 0.05, 0.5).passed
    moved = [boxes.copy(), scores, labels, num]
    moved[0][0, 1] += 2.0
    assert not compare_detections(ref, moved, 1e-4, 0.05, 0.5).passed
    missing = [boxes, scores, labels, np.array([2])]  # a detection well above the cut-off is missing
    report = compare_detections(ref, [a.copy() for a in missing], 1e-4, 0.05, 0.5)
    assert not report.passed and report.details['unexplained'] == 1


def test_parity_gate_failure_leaves_nothing(tmp_path, capsys):
    out = tmp_path / 'bb.onnx'
    code = export_cli(['--model', 'fna_retinanet_backbone', '--output', str(out), '--input-size', '64', '64',
                       '--atol', '1e-12', '--static'])
    assert code == 1
    captured = capsys.readouterr()
    assert 'parity FAILED: max abs diff' in captured.out and 'tolerance 1e-12' in captured.out
    assert captured.err.startswith('error: onnxruntime differs from PyTorch beyond the tolerance 1e-12')
    assert list(tmp_path.iterdir()) == []


def test_simplify(tmp_path):
    args = ['--model', 'fna_retinanet_backbone', '--input-size', '64', '64', '--static']
    if importlib.util.find_spec('onnxslim') is None:
        with pytest.raises(ValueError, match='--simplify needs onnxslim'):
            export_main([*args, '--simplify', '--output', str(tmp_path / 's.onnx')])
        return
    export_main([*args, '--output', str(tmp_path / 'plain.onnx')])
    res = export_main([*args, '--simplify', '--output', str(tmp_path / 's.onnx')])
    assert res['parity'][0][1].passed
    nodes = lambda p: len(onnx.load(str(p)).graph.node)  # noqa: E731
    assert nodes(tmp_path / 's.onnx') <= nodes(tmp_path / 'plain.onnx')


def test_int8_quantization_and_ap_gate(tmp_path, checkpoints, capsys, monkeypatch):
    out = tmp_path / 'det.onnx'
    res = export_main(['--checkpoint', str(checkpoints['retinanet']), '--output', str(out), '--int8',
                       '--calib-images', '3'])
    int8 = res['int8']
    assert int8['path'] == tmp_path / 'det.int8.onnx' and int8['path'].is_file()
    assert int8['mb_int8'] < 0.6 * int8['mb_fp32']
    assert int8['ap_fp32']['AP'] - int8['ap_int8']['AP'] <= 0.02  # the gate (a random model: AP near 0)
    q = onnx.load(str(int8['path']))
    ops = {n.op_type for n in q.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear', 'NonMaxSuppression'} <= ops
    assert not any(n.op_type == 'QuantizeLinear' and n.name.startswith('/postprocess') for n in q.graph.node)
    assert 'quantization' in metadata_of(int8['path'])
    assert 'int8 AP drop' in capsys.readouterr().out
    # the gate: a (simulated) AP drop beyond --ap-drop-max writes no INT8 file (the fallback that follows a failed
    # gate by default: tests/test_int8_fallback.py)
    import fna_zoo.export.quantize as quantize

    monkeypatch.setattr(quantize, 'onnx_ap', lambda path, *a: {k: (0.5 if Path(path) == tmp_path / 'g.onnx' else 0.1)
                                                               for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')})
    code = export_cli(['--checkpoint', str(checkpoints['retinanet']), '--output', str(tmp_path / 'g.onnx'), '--int8',
                       '--calib-images', '2', '--ap-drop-max', '0.1', '--no-int8-fallback'])
    assert code == 1 and 'exceeds --ap-drop-max' in capsys.readouterr().err
    assert not (tmp_path / 'g.int8.onnx').exists() and not list(tmp_path.glob('.*'))


@pytest.mark.parametrize('how', ['untrained', 'score threshold above every score'])
def test_int8_gate_refuses_a_model_that_finds_nothing(tmp_path, data_root, capsys, how):
    # an AP drop from 0 to 0 would pass the gate whatever INT8 does: refused, exit 1, no INT8 file
    if how == 'untrained':  # RetinaNet's 0.01 class prior: every score under the 0.05 threshold
        ckpt, extra = _checkpoint(tmp_path / 'untrained.pth', 'retinanet', data_root, spread=False), []
    else:
        ckpt, extra = _checkpoint(tmp_path / 'spread.pth', 'retinanet', data_root), ['--score-thresh', '0.999']
    out = tmp_path / 'det.onnx'
    code = export_cli(['--checkpoint', str(ckpt), '--output', str(out), '--int8', '--calib-images', '2', *extra])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if 'WARNING' not in line]  # the log's warning
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith('error: the fp32 model finds nothing on the gate data (AP 0.0, AP50 0.0 on 6 images of '), err
    assert 'so the AP gate cannot check INT8; nothing written to' in err[0] and 'train the detector longer' in err[0]
    assert out.is_file() and not (tmp_path / 'det.int8.onnx').exists() and not list(tmp_path.glob('.*'))


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='tensorrt is installed: engine test below')
def test_tensorrt_missing_is_one_error_line(tmp_path):
    out = tmp_path / 'bb.onnx'
    r = subprocess.run([sys.executable, '-m', 'fna_zoo.export', '--model', 'fna_retinanet_backbone', '--output',
                        str(out), '--input-size', '64', '64', '--format', 'engine', '--fp16', '--static'],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: --format engine needs the tensorrt Python package')
    # strongly typed (TensorRT 11's form, none installed): the fp16 engine from the fp16 file, no precision flag,
    # no shapes for a static file
    fp16 = tmp_path / 'bb.fp16.onnx'
    assert lines[0].endswith(f'build the engine with: trtexec --onnx={fp16} --saveEngine={tmp_path / "bb.fp16.engine"} '
                             f'--timingCacheFile={tmp_path / "bb.fp16.timing.cache"}'), lines[0]
    assert out.is_file() and fp16.is_file() and not list(tmp_path.glob('*.engine'))


def test_tensorrt_engine(tmp_path):
    pytest.importorskip('tensorrt')
    from fna_zoo.export.tensorrt import build_engine

    res = export_main(['--model', 'fna_retinanet_backbone', '--output', str(tmp_path / 'bb.onnx'),
                       '--input-size', '64', '64', '--fp16'])
    engine = build_engine(res['fp16'].path, tmp_path / 'bb.engine', (64, 64), 'fp16', max_batch=4)
    info = json.loads((tmp_path / 'bb.engine.json').read_text())
    assert engine.stat().st_size > 0 and info['precision'] == 'fp16' and info['tensorrt'] and info['max_shape'][0] == 4
    assert info['builder_flags'] == [] and (tmp_path / 'bb.timing.cache').is_file()


def test_predict_onnx_script_without_torch(tmp_path, nms_exports, data_root):
    image = data_root / 'val2017' / '000001.png'
    out = tmp_path / 'det.png'
    code = ('import runpy, sys\n'
            f'sys.argv = ["predict_onnx.py", {str(nms_exports["retinanet"])!r}, {str(image)!r}, "-o", {str(out)!r},'
            ' "--score-thresh", "0", "--draw-scale", "2"]\n'
            'try:\n    runpy.run_path("examples/predict_onnx.py", run_name="__main__")\n'
            'except SystemExit as e:\n    assert not e.code, e.code\n'
            'print("TORCH IMPORTED" if "torch" in sys.modules else "NO TORCH")\n')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith('NO TORCH') and 'detections (score >= 0.0)' in r.stdout
    assert 'red_disc' in r.stdout or 'green_square' in r.stdout or 'blue_triangle' in r.stdout  # names from metadata
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (128, 128)
    # --truth: the image's ground truth beside the detections, each panel enlarged x2, a caption line above
    ann = data_root / 'annotations' / 'instances_val2017.json'
    r = subprocess.run([sys.executable, 'examples/predict_onnx.py', str(nms_exports['retinanet']), str(image), '-o',
                        str(out), '--draw-scale', '2', '--truth', str(ann)], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    truth = [a for a in json.loads(ann.read_text())['annotations'] if a['image_id'] == 1]
    with Image.open(image) as src, Image.open(out) as im:
        side = 2 * src.width
        assert im.size == (2 * side + 8, 2 * src.height + 16) and truth
        # each ground-truth box is drawn in green on the left panel, at twice its size
        px = np.asarray(im)
        for a in truth:
            x, y = round(2 * a['bbox'][0]), round(2 * a['bbox'][1]) + 16
            assert tuple(px[y, min(x, side - 1)]) == (60, 220, 60)
    r = subprocess.run([sys.executable, 'examples/predict_onnx.py', str(nms_exports['retinanet']), str(image), '-o',
                        str(out), '--truth', str(ROOT / 'pyproject.toml')], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: --truth") and 'not a readable COCO annotation file' in r.stderr
    r = subprocess.run([sys.executable, 'examples/predict_onnx.py', str(tmp_path / 'none.onnx'), str(image)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"error: model {str(tmp_path / 'none.onnx')!r} does not exist; " \
                                                    'expected an ONNX file from fna-export'
    for flag, value, message in (('--score-thresh', '5', "error: --score-thresh is 5.0; expected a value in [0, 1)"),
                                 ('--draw-scale', '-3', 'error: --draw-scale is -3; expected an integer from 1 to 32'),
                                 ('--draw-scale', '100000',
                                  'error: --draw-scale is 100000; expected an integer from 1 to 32')):
        r = subprocess.run([sys.executable, 'examples/predict_onnx.py', str(nms_exports['retinanet']), str(image), flag,
                            value, '-o', str(tmp_path / 'bad.png')], capture_output=True, text=True, env=ENV,
                           cwd=ROOT, timeout=120)
        assert r.returncode == 2 and r.stderr.strip() == message and not (tmp_path / 'bad.png').exists()


def test_ssdlite_fna_head_form_exports(tmp_path, data_root):
    """FNA's SSDLite head ends (1x1 conv + BN, model.kwargs.head_norm) export raw and with NMS like torchvision's."""
    ckpt = _checkpoint(tmp_path / 'fna_head.pth', 'ssdlite', data_root, 'model.kwargs.head_norm=true')
    model, _ = load_detector(ckpt)
    assert isinstance(model.head.classification_head.module_list[0][2], torch.nn.BatchNorm2d)
    raw = export_main(['--checkpoint', str(ckpt), '--what', 'raw', '--output', str(tmp_path / 'raw.onnx')])
    assert all(r.passed for _, r in raw['parity'])
    res = export_main(['--checkpoint', str(ckpt), '--output', str(tmp_path / 'nms.onnx')])
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(list(x))
    meta = metadata_of(res['output'])
    out = run_onnx(res['output'], x.numpy())
    k = int(meta['max_dets'])
    assert out['num_detections'].sum() > 0
    report = compare_detections(_padded(ref, k), [out[n] for n in ('boxes', 'scores', 'labels', 'num_detections')],
                                1e-3, float(meta['score_thresh']), float(meta['iou_thresh']))
    assert report.passed, report.summary()


def test_int8_calibration_uses_training_tiles(data_root):
    from fna_zoo.export.quantize import calibration_images, eval_dataset

    cfg = load_config(None, [f'data.synthetic.root={data_root}', 'data.synthetic.num_train=4',
                             'data.synthetic.num_val=6', 'data.synthetic.image_size=64',
                             'data.synthetic.num_classes=3'])
    train = eval_dataset(cfg, split='train2017')
    # whole training images when the run trained on whole images
    images = calibration_images(cfg, 3)
    assert len(images) == 3 and torch.equal(images[0], train[0][0]) and torch.equal(images[-1], train[3][0])
    # 32-px training windows: the 4 images give 4 tiles each; 16 picks are all of them, in order
    cfg['data']['train_crop']['size'] = 32
    tiles = calibration_images(cfg, 100)
    assert len(tiles) == 16 and all(t.shape == (3, 32, 32) for t in tiles)
    assert torch.equal(tiles[0], train[0][0][:, :32, :32]) and torch.equal(tiles[5], train[1][0][:, :32, 32:])
    with pytest.raises(ValueError, match='--calib-images is 0; expected at least 1'):
        calibration_images(cfg, 0)

"""fna-bench --ap: the deployment table (AP and end-to-end latency per runtime and precision), the graph split,
the shared pre-processing and the bad-input convention (a tiny RetinaNet on 6 synthetic 64-px images, ~20 s)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from fna_zoo.bench.deploy import FIELDS, LEGEND, deploy_summary  # noqa: E402
from fna_zoo.cli.bench import main  # noqa: E402
from fna_zoo.data import make_synthetic_coco  # noqa: E402
from fna_zoo.fileio import portable_path  # noqa: E402
from fna_zoo.runtime.preprocess import InputSpec, bilinear, resize_image  # noqa: E402

from test_export import _checkpoint  # noqa: E402  (a tiny RetinaNet with real detections)

CELLS = [('torch', 'fp32'), ('torch-fp16', 'fp16'), ('onnxruntime', 'fp32'), ('onnxruntime', 'int8'),
         ('onnxruntime', 'fp16'), ('tensorrt', 'fp32'), ('tensorrt', 'int8'), ('tensorrt-fp16', 'fp16'),
         ('openvino', 'fp32'), ('openvino', 'int8'), ('openvino', 'int8')]
OPENVINO = importlib.util.find_spec('openvino') is not None
TRT = ('skipped: tensorrt not installed' if importlib.util.find_spec('tensorrt') is None
       else 'skipped: TensorRT runs on CUDA; pass --device cuda')


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('deploy')
    data = make_synthetic_coco(d / 'synthetic', num_train=4, num_val=6, image_size=64, num_classes=3, seed=0)
    return _checkpoint(d / 'retinanet.pth', 'retinanet', data)


@pytest.fixture(scope='module')
def table(ckpt, tmp_path_factory) -> tuple[Path, list[dict], str]:
    out = tmp_path_factory.mktemp('table')
    # NOTE: in its own process, as a user runs it. With the OpenVINO cells in the pytest process, a later torch test
    # of the suite (the super network's BN recalibration) crashed with a segmentation fault: OpenVINO's CPU plugin
    # and torch's OpenMP runtime in one process. The table is made once for the module.
    proc = subprocess.run([sys.executable, '-m', 'fna_zoo.cli.bench', '--ap', str(ckpt), '--warmup', '1', '--runs',
                           '2', '--threads', '1', '-q', '-o', str(out)], capture_output=True, text=True,
                          env={**os.environ, 'HF_HUB_OFFLINE': '1'}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads((out / 'deploy.json').read_text())['rows'], proc.stdout


def test_every_cell_is_a_row_with_its_status(table):
    out, rows, printed = table
    assert [(r['runtime'], r['precision']) for r in rows] == CELLS
    status = {(r['runtime'], r['precision']): r['status'] for r in rows}
    assert [k for k, s in status.items() if s == 'ok'] == [('torch', 'fp32'), ('onnxruntime', 'fp32'),
                                                          ('onnxruntime', 'int8'), ('onnxruntime', 'fp16')] + \
        ([('openvino', 'fp32'), ('openvino', 'int8')] if OPENVINO else [])
    assert status[('torch-fp16', 'fp16')] == 'skipped: fp16 eager PyTorch runs on CUDA only (pass --device cuda)'
    by_cell = {(r['runtime'], r['precision']): r for r in rows}
    half, full = by_cell[('onnxruntime', 'fp16')], by_cell[('onnxruntime', 'fp32')]
    assert half['file'].endswith('.nms.fp16.onnx') and half['size_mb'] < 0.7 * full['size_mb']
    assert all(status[k] == TRT for k in CELLS if k[0].startswith('tensorrt'))
    if OPENVINO:  # fp32 from the fp32 file, INT8 as NNCF's IR and as onnxruntime's QDQ file, each with its options
        ov = [r for r in rows if r['runtime'] == 'openvino']
        assert [(r['format'], r['precision'], r['status']) for r in ov] == [
            ('ONNX', 'fp32', 'ok'), ('OpenVINO IR', 'int8', 'ok'), ('ONNX', 'int8', 'ok')]
        assert ov[0]['AP'] == pytest.approx(full['AP'], abs=2e-3) and ov[0]['file'] == full['file']
        assert ov[1]['file'].endswith('.xml') and ov[2]['file'] == by_cell[('onnxruntime', 'int8')]['file']
        assert all(r['runtime_options']['INFERENCE_NUM_THREADS'] == 1 and r['openvino'] for r in ov)
    for r in rows:
        if r['status'] != 'ok':
            assert r['AP'] is None and r['e2e_p50_ms'] is None
            continue
        assert r['n'] == 6 and r['images'] == 6 and (r['input_h'], r['input_w']) == (64, 64)  # runs 2 < 6 images
        assert all(r[f'{s}_p50_ms'] > 0 for s in ('pre', 'net', 'post'))
        assert r['e2e_p50_ms'] <= r['e2e_p90_ms'] and r['throughput_ips'] == pytest.approx(1000 / r['e2e_p50_ms'])
        # the p50 of the per-image sums lies between the largest stage p50 and the sum of the stage p90s
        assert max(r[f'{s}_p50_ms'] for s in ('pre', 'net', 'post')) < r['e2e_p50_ms'] \
            <= sum(r[f'{s}_p90_ms'] for s in ('pre', 'net', 'post'))
        assert 0 <= r['AP'] <= r['AP50'] <= 1 and r['size_mb'] > 0
        # the pre-processing's share of e2e, and the stream with the pre-processing one image ahead
        assert 0 < r['pre_pct'] < 100 and r['stream_ms'] > 0 and 0 <= r['stream_wait_pct'] < 100
    # the printed table and deploy.md carry the legend; the CSV the fields
    for text in (printed, (out / 'deploy.md').read_text()):
        assert 'e2e p50 ms' in text and all(line in text for line in LEGEND)
        assert all(line in text for line in deploy_summary(rows)) and 'fastest INT8: ' in text
    assert (out / 'deploy.csv').read_text().splitlines()[0].split(',') == FIELDS


def test_ap_agrees_across_runtimes_and_with_fna_export(table, ckpt):
    """onnxruntime fp32 scores exactly what fna-export's AP gate scores for the same file; PyTorch the same AP."""
    from fna_zoo.checkpoint import read_checkpoint
    from fna_zoo.export.quantize import eval_dataset, onnx_ap

    out, rows, _ = table
    got = {(r['runtime'], r['precision']): r for r in rows}
    fp32, int8 = got[('onnxruntime', 'fp32')], got[('onnxruntime', 'int8')]
    # NOTE: deploy.json names the files portably (`<tmp>/.../onnx/<name>` for a temp folder)
    assert fp32['file'] == portable_path(out / 'onnx' / 'retinanet.nms.fp32.onnx')
    assert int8['size_mb'] < 0.6 * fp32['size_mb']
    dataset = eval_dataset(read_checkpoint(ckpt).config)
    for row in (fp32, int8):  # bit for bit the same inputs, so the same AP (INT8 rounding shows any difference)
        gate = onnx_ap(out / 'onnx' / Path(row['file']).name, dataset, (64, 64), 'letterbox', [0.485, 0.456, 0.406])
        assert (row['AP'], row['AP50']) == (gate['AP'], gate['AP50']) and row['AP50'] > 0
    assert got[('torch', 'fp32')]['AP'] == pytest.approx(fp32['AP'], abs=2e-3)
    assert fp32['unsplit_p50_ms'] > 0 and fp32['split_ratio'] > 0


def test_split_nms_graph_runs_as_the_whole_file(table):
    from fna_zoo.bench.pipelines import NMS_OUTPUTS, split_nms_graph
    from fna_zoo.runtime.ort import ort_session

    out, _, _ = table
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    for name in ('retinanet.nms.fp32.onnx', 'retinanet.nms.int8.onnx'):
        net, nms, cut = split_nms_graph(out / 'onnx' / name)
        assert len(cut) == 2 and any('classification_head' in c for c in cut)
        heads = ort_session(net).run(cut, {'images': x})
        split = ort_session(nms).run(NMS_OUTPUTS, dict(zip(cut, heads)))
        whole = ort_session(out / 'onnx' / name).run(NMS_OUTPUTS, {'images': x})
        assert all(np.array_equal(a, b) for a, b in zip(split, whole))
        assert int(whole[3][0]) > 0


def test_given_onnx_files_replace_the_exports(table, ckpt, tmp_path, capsys):
    out, _, _ = table
    fp32 = out / 'onnx' / 'retinanet.nms.fp32.onnx'
    assert main(['--ap', str(ckpt), str(fp32), '--runtimes', 'onnxruntime', '--warmup', '0', '--runs', '1',
                 '--threads', '1', '-q', '-o', str(tmp_path)]) == 0
    rows = json.loads((tmp_path / 'deploy.json').read_text())['rows']
    # NOTE: written portably (`fna_zoo.fileio.portable_path`): these temp files as `<tmp>/.../<last names>`
    assert [(r['precision'], r['file']) for r in rows if r['status'] == 'ok'] == [
        ('fp32', portable_path(fp32)), ('int8', portable_path(tmp_path / 'onnx' / 'retinanet.nms.int8.onnx')),
        ('fp16', portable_path(tmp_path / 'onnx' / 'retinanet.nms.fp16.onnx'))]
    assert rows[0]['model'] == portable_path(ckpt) and str(tmp_path) not in (tmp_path / 'deploy.md').read_text()
    assert not (tmp_path / 'onnx' / 'retinanet.nms.fp32.onnx').exists()  # the given file, not a new export
    assert 'ok' in capsys.readouterr().out


@pytest.fixture(scope='module')
def bad_inputs(ckpt, tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp('bad')
    two = make_synthetic_coco(d / 'two', num_train=1, num_val=2, image_size=64, num_classes=2, seed=0)
    (d / 'file.txt').write_text('x')
    empty = d / 'empty'
    empty.mkdir()
    from fna_zoo.export.onnx_export import detector_target, export_onnx

    raw = export_onnx(detector_target(ckpt, 'raw'), d / 'raw.onnx')
    return {'{ckpt}': str(ckpt), '{two}': str(two), '{file}': str(d / 'file.txt'), '{empty}': str(empty),
            '{raw}': str(raw)}


@pytest.mark.parametrize('argv, message', [
    (['--ap', 'mobilenetv2_100'], '--ap got no checkpoint; expected one detector checkpoint'),
    (['--ap', '{ckpt}', '{ckpt}'], '--ap got 2 checkpoints'),
    (['--ap', '{ckpt}', 'mobilenetv2_100'], "--ap got 'mobilenetv2_100', a zoo arch; expected the detector checkpoint"),
    (['--ap', '{ckpt}', '{raw}'], "is a 'raw' export; expected the detector exported with NMS"),
    (['--ap', '{ckpt}', '--data_path', '/no/such/data'],
     "--data_path '/no/such/data' does not exist; expected a COCO tree"),
    (['--ap', '{ckpt}', '--data_path', '{file}'], 'is a file; expected a COCO tree'),
    (['--ap', '{ckpt}', '--data_path', '{empty}'], 'annotation file'),
    (['--ap', '{ckpt}', '--data_path', '{two}'], 'has 2 categories; the detector has 3 classes'),
    (['--ap', '{ckpt}', '--batch', '2'], '--batch 2 with --ap'),
    (['--ap', '{ckpt}', '--what', 'raw'], '--what raw does not apply to --ap'),
    (['--ap', '{ckpt}', '--min-time', '1'], '--min-time does not apply to --ap'),
    (['--ap', '{ckpt}', '--detector', 'ssdlite'], '--detector ssdlite does not apply to --ap'),
    (['--ap', '{ckpt}', '--input-size', '64', '64', '96', '96'], '--input-size has 4 numbers with --ap'),
    (['--ap', '{ckpt}', '--input-size', '65', '64'], '--input-size'),
    (['--ap', '{ckpt}', '--runtimes', 'torch-compile'], 'no cell of the table runs on them'),
    (['--ap', '{ckpt}', '--runtimes', 'warp'], "runtime 'warp' is unknown"),
    (['--ap', '{ckpt}', '--runs', '0'], '--runs is 0'),
    (['--ap', '{ckpt}', '-o', '{file}'], 'is a file; expected a folder'),
    (['mobilenetv2_100', '--data_path', '{empty}'], '--data_path applies to --ap'),
])
def test_bad_input_is_one_error_line(bad_inputs, argv, message, capsys):
    argv = [bad_inputs.get(a, a) for a in argv]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if ' WARNING ' not in line]
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err


def test_preprocess_letterbox_stretch_and_the_int8_path():
    from fna_zoo.export.quantize import preprocess

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)  # h 40, w 80
    image = Image.fromarray(pixels)
    mean = (0.485, 0.456, 0.406)
    x, scale = resize_image(image, InputSpec((64, 64), 'letterbox', mean))
    assert x.shape == (3, 64, 64) and x.dtype == np.float32 and scale == (0.8, 0.8)
    assert np.allclose(x[:, 32:, :], np.array(mean, dtype=np.float32)[:, None, None])  # padded below the image
    assert 0 <= x[:, :32].min() and x[:, :32].max() <= 1
    strip, _ = resize_image(Image.fromarray(pixels[:1].repeat(3, 0)[:, :80].repeat(25, 1)), InputSpec((64, 64),
                                                                                                   'letterbox', mean))
    assert strip.shape == (3, 64, 64) and not np.allclose(strip[:, 0], np.array(mean)[:, None])  # 3 x 2000: 1 row
    y, scale = resize_image(image, InputSpec((64, 96), 'stretch', mean))
    assert y.shape == (3, 64, 96) and scale == (96 / 80, 64 / 40)
    # fna-export's calibration and AP gate take a dataset tensor: the same pixels give the same input
    from torchvision.transforms.v2.functional import to_dtype

    tensor = to_dtype(torch.from_numpy(pixels).permute(2, 0, 1), torch.float32, scale=True)  # as CocoDetection
    z, _ = preprocess(tensor, (64, 64), 'letterbox', mean)
    assert np.array_equal(z, x)
    # the resize is the training transform's (torch bilinear, no antialiasing), not PIL's, shrinking or growing
    for size in ((32, 64), (91, 70)):
        ref = torch.nn.functional.interpolate(tensor[None], size=size, mode='bilinear', align_corners=False)[0]
        got = bilinear(tensor.permute(1, 2, 0).numpy(), size)
        assert np.abs(got - ref.permute(1, 2, 0).numpy()).max() < 1e-5
    pil = np.asarray(image.resize((64, 32), Image.BILINEAR), dtype=np.float32) / 255
    assert np.abs(pil - bilinear(tensor.permute(1, 2, 0).numpy(), (32, 64))).max() > 1e-2


def test_time_stages_passes_outputs_on_and_times_each_stage():
    import time

    from fna_zoo.runtime.timing import time_stages

    syncs = []
    out, times = time_stages([lambda v: v + 1, lambda v: (time.sleep(0.01), v * 10)[1]], 1,
                             sync=lambda: syncs.append(1))
    assert out == 20 and len(times) == 2 and len(syncs) == 2
    assert times[1] >= 0.009 > times[0]


def test_a_table_with_no_runnable_cell_is_written(ckpt, tmp_path):
    """Every cell skipped (TensorRT only, on a machine without it): the table of reasons, not a crash."""
    assert main(['--ap', str(ckpt), '--runtimes', 'tensorrt', '--warmup', '0', '--runs', '1', '-q',
                 '-o', str(tmp_path)]) == 0
    rows = json.loads((tmp_path / 'deploy.json').read_text())['rows']
    assert rows and all(r['status'].startswith(('skipped', 'failed')) for r in rows)


def _row(runtime: str, precision: str, e2e: float | None, net: float = 0.0, ap: float | None = 0.02,
         fmt: str = 'ONNX', **extra) -> dict:
    ok = e2e is not None
    return {'runtime': runtime, 'precision': precision, 'format': fmt, 'status': 'ok' if ok else 'skipped: why',
            'e2e_p50_ms': e2e, 'net_p50_ms': net if ok else None, 'AP': ap if ok else None, **extra}


def test_summary_reads_the_ratios_off_the_rows():
    """The fastest row and the fastest INT8 row against eager fp32 (e2e) and onnxruntime fp32 (network); each INT8
    row's AP against its own runtime's fp32 row."""
    stream = dict(pre_pct=20.0, pre_p50_ms=3.0, stream_wait_pct=4.0, stream_ms=14.0)
    rows = [_row('torch', 'fp32', 60.0, 50.0, 0.040, 'PyTorch eager'),
            _row('onnxruntime', 'fp32', 40.0, 30.0, 0.041), _row('onnxruntime', 'int8', 20.0, 12.0, 0.037),
            _row('tensorrt', 'int8', None), _row('openvino', 'fp32', 42.0, 31.0, 0.050),
            _row('openvino', 'int8', 15.0, 10.0, 0.046, 'OpenVINO IR', **stream)]
    fastest, int8, ap = deploy_summary(rows)
    assert fastest == ('fastest end to end: openvino int8 (OpenVINO IR) 15.0 ms, 4.00x eager PyTorch fp32 (60.0 ms); '
                       'pre-processing 20 % of it image by image (3.0 ms), the network waiting 4 % of the time '
                       'streaming (14.0 ms per image)')
    assert int8.endswith("its network 10.0 ms, 3.00x onnxruntime fp32's (30.0 ms)")
    # onnxruntime's INT8 against onnxruntime fp32 (4.1), OpenVINO's against OpenVINO fp32 (5.0); TensorRT skipped
    assert ap == ('INT8 AP against fp32: onnxruntime int8 (ONNX) 3.70 vs 4.10 (onnxruntime; -0.40 points); '
                  'openvino int8 (OpenVINO IR) 4.60 vs 5.00 (openvino; -0.40 points)')


def test_summary_says_only_what_the_table_has():
    # an older table (no pre % or stream columns), onnxruntime only: no eager ratio, INT8 against onnxruntime fp32
    rows = [_row('onnxruntime', 'fp32', 40.0, 30.0, 0.041), _row('onnxruntime', 'int8', 25.0, 15.0, 0.041)]
    assert deploy_summary(rows) == [
        'fastest end to end: onnxruntime int8 (ONNX) 25.0 ms',
        "fastest INT8: onnxruntime int8 (ONNX) 25.0 ms; its network 15.0 ms, 2.00x onnxruntime fp32's (30.0 ms)",
        'INT8 AP against fp32: onnxruntime int8 (ONNX) 4.10 vs 4.10 (onnxruntime; +0.00 points)']
    # no onnxruntime fp32 row: no network ratio, the INT8 AP against eager PyTorch's fp32
    rows = [_row('torch', 'fp32', 60.0, 50.0, 0.040, 'PyTorch eager'), _row('onnxruntime', 'int8', 20.0, 12.0, 0.037)]
    assert deploy_summary(rows)[1:] == [
        'fastest INT8: onnxruntime int8 (ONNX) 20.0 ms, 3.00x eager PyTorch fp32 (60.0 ms)',
        'INT8 AP against fp32: onnxruntime int8 (ONNX) 3.70 vs 4.00 (torch; -0.30 points)']
    # eager PyTorch only: no INT8 lines; every cell skipped: no summary
    assert deploy_summary([_row('torch', 'fp32', 60.0, 50.0, fmt='PyTorch eager')]) == [
        'fastest end to end: torch fp32 (PyTorch eager) 60.0 ms']
    assert deploy_summary([_row('torch', 'fp32', None), _row('onnxruntime', 'int8', None)]) == []

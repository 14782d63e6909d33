"""fna-predict: images, folders and videos through a retrain checkpoint (eager PyTorch) and its ONNX export
(onnxruntime): drawn PNGs, COCO results, the same boxes from both, one-line errors (a tiny RetinaNet, ~15 s)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from fna_zoo.cli.predict import main  # noqa: E402
from fna_zoo.data import make_synthetic_coco  # noqa: E402
from fna_zoo.predict import find_inputs, load_model  # noqa: E402

from test_export import _checkpoint  # noqa: E402  (a tiny RetinaNet with real detections)

OPENVINO = importlib.util.find_spec('openvino') is not None


@pytest.fixture(scope='module')
def models(tmp_path_factory) -> dict[str, Path]:
    from fna_zoo.export.onnx_export import detector_target, export_onnx

    d = tmp_path_factory.mktemp('predict')
    data = make_synthetic_coco(d / 'synthetic', num_train=4, num_val=6, image_size=64, num_classes=3, seed=0)
    ckpt = _checkpoint(d / 'retinanet.pth', 'retinanet', data)
    onnx_file = export_onnx(detector_target(ckpt, 'nms'), d / 'retinanet.onnx')
    return {'ckpt': ckpt, 'onnx': onnx_file, 'data': data}


@pytest.fixture(scope='module')
def images(models, tmp_path_factory) -> Path:
    """Three images in a folder tree: a synthetic PNG, a sub-folder JPEG of another shape, a PNG; and non-images."""
    root = tmp_path_factory.mktemp('images') / 'pics'
    (root / 'sub' / 'deeper').mkdir(parents=True)
    (root / '.hidden').mkdir()
    val = sorted((models['data'] / 'val2017').glob('*.png'))
    Image.open(val[0]).save(root / 'a.png')
    Image.open(val[1]).convert('RGB').resize((80, 48)).save(root / 'sub' / 'b.jpg', quality=95)
    Image.open(val[2]).save(root / 'sub' / 'deeper' / 'c.png')
    Image.open(val[3]).save(root / '.hidden' / 'skip.png')
    (root / 'notes.txt').write_text('not an image')
    return root


def _run(model: Path, inputs: list, out: Path, *flags: str) -> tuple[list[dict], dict]:
    assert main([str(model), *map(str, inputs), '-o', str(out), '--score-thr', '0', '--threads', '1', '-q',
                 *flags]) == 0
    return json.loads((out / 'detections.json').read_text()), json.loads((out / 'images.json').read_text())


def test_checkpoint_and_onnx_give_the_same_coco_results_and_drawings(models, images, tmp_path, capsys):
    results = {}
    for kind in ('ckpt', 'onnx'):
        dets, info = _run(models[kind], [images], tmp_path / kind)
        names = [i['file_name'] for i in info['images']]
        assert names == ['pics/a.png', 'pics/sub/b.jpg', 'pics/sub/deeper/c.png']  # recursive, sorted, no hidden
        assert info['file_name_to_image_id'] == {n: i + 1 for i, n in enumerate(names)}
        assert [(i['width'], i['height']) for i in info['images']] == [(64, 64), (80, 48), (64, 64)]
        assert info['runtime'] == ('torch' if kind == 'ckpt' else 'onnxruntime')
        assert [c['id'] for c in info['categories']] == [1, 2, 3]
        assert dets and {d['image_id'] for d in dets} <= {1, 2, 3}
        for d in dets:
            assert set(d) == {'image_id', 'category_id', 'bbox', 'score'} and d['category_id'] in (1, 2, 3)
            x, y, w, h = d['bbox']
            assert w >= 0 and h >= 0 and 0 <= d['score'] <= 1
            assert -1 <= x and x + w <= info['images'][d['image_id'] - 1]['width'] + 1
        for rel in ('pics/a.png', 'pics/sub/b.png', 'pics/sub/deeper/c.png'):
            with Image.open(tmp_path / kind / rel) as im:
                assert im.format == 'PNG'
        assert '3 images' in capsys.readouterr().out
        results[kind] = dets
    # pycocotools reads the results against a ground truth of the same image ids
    coco = pytest.importorskip('pycocotools.coco')
    gt = coco.COCO()
    gt.dataset = {'images': info['images'], 'annotations': [], 'categories': info['categories']}
    gt.createIndex()
    assert len(gt.loadRes(str(tmp_path / 'onnx' / 'detections.json')).anns) == len(results['onnx'])
    # the same boxes (within the export's parity tolerance), matched by image, class and score
    a, b = (sorted(results[k], key=lambda d: (d['image_id'], d['category_id'], -d['score'])) for k in ('ckpt', 'onnx'))
    _close_twins(a, b)
    assert abs(len(a) - len(b)) <= 2  # a detection at the threshold may fall either side


def _close_twins(a: list[dict], b: list[dict], atol: float = 0.05) -> None:
    """Every detection of `a` scoring above 0.1 has a twin in `b`: same image and class, score and box close."""
    strong = [d for d in a if d['score'] > 0.1]
    assert strong
    for d in strong:
        twin = min((e for e in b if e['image_id'] == d['image_id'] and e['category_id'] == d['category_id']),
                   key=lambda e: abs(e['score'] - d['score']) + np.abs(np.subtract(e['bbox'], d['bbox'])).sum())
        assert abs(twin['score'] - d['score']) < 1e-3 and np.allclose(twin['bbox'], d['bbox'], atol=atol), (d, twin)


@pytest.mark.skipif(not OPENVINO,
                    reason="openvino not installed (pip install 'fna-zoo[openvino]')")
def test_openvino_ir_gives_the_onnx_results(models, images, tmp_path):
    # NOTE: fna-export and fna-predict in their own processes, as a user runs them: OpenVINO loaded into the pytest
    # process makes later torch tests crash (tests/test_bench_deploy.py)
    xml = tmp_path / 'retinanet.xml'  # beside the ONNX file fna-export writes first
    for argv in (['fna_zoo.cli.export', '--checkpoint', models['ckpt'], '--what', 'nms', '--format', 'openvino',
                  '-o', xml.with_suffix('.onnx'), '-q'],
                 ['fna_zoo.cli.predict', xml, images, '-o', tmp_path / 'ov', '--score-thr', '0', '--threads', '1',
                  '-q']):
        proc = subprocess.run([sys.executable, '-m', *map(str, argv)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert '3 images' in proc.stdout
    info = json.loads((tmp_path / 'ov' / 'images.json').read_text())
    assert info['runtime'] == 'openvino' and [c['id'] for c in info['categories']] == [1, 2, 3]
    ov = json.loads((tmp_path / 'ov' / 'detections.json').read_text())
    onnx, _ = _run(models['onnx'], [images], tmp_path / 'onnx', '--no-draw')
    _close_twins(onnx, ov)


def test_no_draw_files_video_and_name_clashes(models, images, tmp_path):
    cv2 = pytest.importorskip('cv2')
    video = tmp_path / 'clip.avi'
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5, (64, 64))
    for i in range(2):
        w.write(np.asarray(Image.open(images / 'a.png').convert('RGB'))[..., ::-1].copy())
    w.release()
    (tmp_path / 'other').mkdir()
    Image.open(images / 'a.png').save(tmp_path / 'other' / 'a.jpg')
    dets, info = _run(models['onnx'], [images / 'a.png', tmp_path / 'other' / 'a.jpg', video], tmp_path / 'out')
    assert [i['file_name'] for i in info['images']] == ['a.png', 'a.jpg', 'clip.avi#000000', 'clip.avi#000001']
    assert sorted(p.relative_to(tmp_path / 'out').as_posix() for p in (tmp_path / 'out').rglob('*.png')) == \
        ['a.png', 'a_2.png', 'clip/000000.png', 'clip/000001.png']  # a.png and a.jpg draw apart
    _run(models['onnx'], [images], tmp_path / 'nodraw', '--no-draw')
    assert sorted(p.name for p in (tmp_path / 'nodraw').iterdir()) == ['detections.json', 'images.json']
    # decoding ahead on a second thread (the default) or one after the other: the same results, video frames too
    ahead = _run(models['onnx'], [images / 'a.png', video], tmp_path / 'ahead', '--no-draw', '--prefetch', '3')
    plain = _run(models['onnx'], [images / 'a.png', video], tmp_path / 'plain', '--no-draw', '--prefetch', '0')
    assert ahead == plain and len(ahead[1]['images']) == 3


def test_output_inside_the_input_folder_is_not_an_input(models, images, tmp_path):
    import shutil

    root = tmp_path / 'pics'
    shutil.copytree(images, root)
    _run(models['onnx'], [root], root / 'out', '--no-draw')
    _run(models['onnx'], [root], root / 'out')  # again: the drawings of the first run are not read back
    info = json.loads((root / 'out' / 'images.json').read_text())
    assert len(info['images']) == 3
    assert [i.name for i in find_inputs([root], exclude=root / 'out')] == ['pics/a.png', 'pics/sub/b.jpg',
                                                                            'pics/sub/deeper/c.png']


@pytest.mark.parametrize('argv,message', [
    (['{missing}.onnx', '{images}'], "model '{missing}.onnx' does not exist"),
    (['{notes}', '{images}'], "model '{notes}' has an unknown file type '.txt'; expected one of .onnx"),
    (['{onnx}', '{missing}'], "input '{missing}' does not exist; expected an image"),
    (['{onnx}', '{notes}'], "input '{notes}' has an unknown file type '.txt'"),
    (['{onnx}', '{empty}'], "no images or videos found in '{empty}'"),
    (['{onnx}', '{images}', '-o', '{notes}'], "output '{notes}' is a file; expected a folder"),
    (['{onnx}', '{images}', '--score-thr', '2'], '--score-thr is 2.0; expected a value in [0, 1]'),
    (['{onnx}', '{images}', '--threads', '0'], '--threads is 0; expected a positive integer'),
    (['{onnx}', '{images}', '--prefetch', '-1'], '--prefetch is -1; expected 0 (off) or a positive number'),
    (['{ckpt}.xml', '{images}'], 'is not a readable OpenVINO IR' if OPENVINO else 'OpenVINO IR and openvino is not'),
    (['{data}/annotations/instances_val2017.json', '{images}'], "unknown file type '.json'"),
])
def test_bad_input_is_one_error_line_and_nothing_is_written(models, images, tmp_path, argv, message, capsys):
    (tmp_path / 'empty').mkdir()
    Path(f"{models['ckpt']}.xml").write_text('<net/>')
    subs = {'{missing}': str(tmp_path / 'missing'), '{images}': str(images), '{notes}': str(images / 'notes.txt'),
            '{onnx}': str(models['onnx']), '{empty}': str(tmp_path / 'empty'), '{ckpt}': str(models['ckpt']),
            '{data}': str(models['data'])}

    def fill(text: str) -> str:
        for k, v in subs.items():
            text = text.replace(k, v)
        return text

    out = tmp_path / 'out'
    argv = [fill(a) for a in argv] + ([] if '-o' in argv else ['-o', str(out)])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and fill(message) in err[0], err
    assert not out.exists()


def test_library_call_and_a_run_folder_as_the_model(models, images, tmp_path):
    import shutil

    from fna_zoo.predict import predict_files

    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(models['ckpt'], run / 'final.pth')
    model = load_model(run, threads=1)
    assert model.runtime == 'torch' and model.spec.size == (64, 64) and model.spec.resize == 'letterbox'
    summary = predict_files(model, [images / 'a.png'], tmp_path / 'out', score_thresh=0.5, progress=False)
    assert summary['images'] == 1 and summary['drawings'] == [str(tmp_path / 'out' / 'a.png')]
    dets = json.loads(summary['results'].read_text())
    assert len(dets) == summary['detections'] and all(d['score'] >= 0.5 for d in dets)

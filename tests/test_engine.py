"""Engine: configs, LR schedule, checkpoints, retrain/resume/test entry points, DDP under torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fna_zoo.engine import load_checkpoint, load_config, save_checkpoint
from fna_zoo.cli.retrain import retrain_main
from fna_zoo.cli.test import test_main as evaluate_main
from fna_zoo.engine.evaluate import coco_evaluate
from fna_zoo.engine.train import data_root, lr_factor
from fna_zoo.detection import build_retinanet, model_kwargs

ROOT = Path(__file__).resolve().parents[1]


RETINA_KWARGS = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}'


def tiny_overrides(tmp_path: Path, *extra: str, kwargs: str = RETINA_KWARGS) -> list[str]:
    return [
        f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=16', 'data.synthetic.num_val=6',
        'data.synthetic.image_size=64', 'data.workers=0', 'model.backbone=fna_retinanet_backbone',
        kwargs, 'train.batch_size=4', 'train.warmup_iters=2', 'train.lr=0.01', 'train.log_interval=1',
        'train.ckpt_interval=2', 'train.epochs=2', 'eval.batch_size=6', *extra,
    ]


def test_config_layers_and_errors(tmp_path):
    cfg = load_config(ROOT / 'configs' / 'retinanet_retrain.yaml', ['train.lr=0.01', 'model.kwargs.min_size=320'])
    assert cfg['train']['lr'] == 0.01 and cfg['model']['kwargs']['min_size'] == 320
    assert cfg['train']['epochs'] == 12 and cfg['train']['lr_steps'] == [8, 11]  # the file's values
    with pytest.raises(ValueError, match=r"unknown config key 'train.lrr'; expected one of"):
        load_config(None, ['train.lrr=1'])
    with pytest.raises(ValueError, match='malformed; expected key.sub=value'):
        load_config(None, ['train.lr'])
    cfg = load_config(None, ['model.kwargs.min_sise=3'])
    with pytest.raises(ValueError, match='unknown config key model.kwargs.min_sise for retinanet; expected one of'):
        model_kwargs(cfg, build_retinanet)
    with pytest.raises(ValueError, match='config model.kwargs.min_size is -5; expected a positive integer'):
        model_kwargs(load_config(None, ['model.kwargs.min_size=-5']), build_retinanet)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('data: {pathh: x}\n')
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'data.pathh'"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match='config file .* does not exist'):
        load_config(tmp_path / 'none.yaml')


def test_lr_schedule():
    t = dict(lr_gamma=0.1, lr_steps=[8, 11], warmup_iters=500, warmup_ratio=1 / 3)
    assert lr_factor(0, 0, t) == pytest.approx(1 / 3)
    assert lr_factor(250, 0, t) == pytest.approx(2 / 3)
    assert lr_factor(500, 0, t) == 1.0 and lr_factor(10_000, 8, t) == pytest.approx(0.1)
    assert lr_factor(10_000, 11, t) == pytest.approx(0.01)


def test_checkpoint_atomic_and_corrupt(tmp_path):
    path = save_checkpoint({'model': {'w': torch.ones(2)}, 'config': {}}, tmp_path / 'c.pth')
    assert torch.equal(load_checkpoint(path)['model']['w'], torch.ones(2))
    assert not list(tmp_path.glob('.*.tmp'))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match='is corrupt or not a checkpoint'):
        load_checkpoint(path)
    torch.save({'weights': 1}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match=r"lacks \['model', 'config'\]"):
        load_checkpoint(tmp_path / 'other.pth')


def test_retrain_resume_and_test(tmp_path, capsys):
    # an uninterrupted 6-step run ...
    full = retrain_main(['--output', str(tmp_path / 'full'), '--set', *tiny_overrides(tmp_path, 'train.max_iters=6')])
    assert full['step'] == 6
    # ... equals a run stopped at step 3 (mid-epoch) and resumed
    retrain_main(['--output', str(tmp_path / 'part'), '--set', *tiny_overrides(tmp_path, 'train.max_iters=3',
                                                                                'train.eval_at_end=false')])
    assert load_checkpoint(tmp_path / 'part' / 'last.pth')['step'] == 3
    resumed = retrain_main(['--output', str(tmp_path / 'part'), '--resume',
                            '--set', *tiny_overrides(tmp_path, 'train.max_iters=6')])
    a = load_checkpoint(tmp_path / 'full' / 'final.pth')['model']
    b = load_checkpoint(tmp_path / 'part' / 'final.pth')['model']
    assert resumed['step'] == 6 and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    run = tmp_path / 'full'
    for name in ('config.yaml', 'arch.yaml', 'last.pth', 'final.pth', 'metrics.csv', 'metrics.json', 'detections_val.json'):
        assert (run / name).is_file(), name
    assert len((run / 'metrics.csv').read_text().splitlines()) == 1 + 6
    # test.py: the printed AP is pycocotools' AP on the written detections json
    capsys.readouterr()
    stats = evaluate_main(['--checkpoint', str(run / 'final.pth'), '--out', str(tmp_path / 'dets.json'),
                       '--set', f'data.synthetic.root={tmp_path / "data"}'])
    printed = capsys.readouterr().out
    ann = data_root(load_config(None, tiny_overrides(tmp_path))) / 'annotations' / 'instances_val2017.json'
    assert json.loads((tmp_path / 'dets.json').read_text())
    ref = coco_evaluate(ann, tmp_path / 'dets.json', backend='pycocotools')
    assert stats == pytest.approx(ref, abs=1e-12)
    assert f'AP {100 * ref["AP"]:.1f} | AP50 {100 * ref["AP50"]:.1f}' in printed
    assert stats == pytest.approx({k: full[k] for k in stats}, abs=1e-12)  # same weights, same numbers


def test_faster_coco_eval_matches_pycocotools(tmp_path):
    pytest.importorskip('faster_coco_eval')
    from fna_zoo.data import make_synthetic_coco

    root = make_synthetic_coco(tmp_path / 'd', num_train=1, num_val=12, image_size=64)
    gt = json.loads((root / 'annotations' / 'instances_val2017.json').read_text())
    g = torch.Generator().manual_seed(0)
    dets = []
    for a in gt['annotations']:  # jittered copies of the ground truth, some with wrong classes
        x, y, w, h = a['bbox']
        dx, dy = (torch.rand(2, generator=g) * 6 - 3).tolist()
        cat = a['category_id'] if torch.rand(1, generator=g) < 0.7 else 1
        dets.append({'image_id': a['image_id'], 'category_id': cat, 'bbox': [x + dx, y + dy, w, h],
                     'score': float(torch.rand(1, generator=g))})
    ann = root / 'annotations' / 'instances_val2017.json'
    fast, ref = coco_evaluate(ann, dets, 'faster_coco_eval'), coco_evaluate(ann, dets, 'pycocotools')
    assert ref['AP'] > 0.2 and fast == pytest.approx(ref, abs=1e-9)


def test_ddp_two_cpu_processes(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(ROOT / 'search' / 'retrain.py'), '--output', str(tmp_path / 'ddp'),
           '--set', *tiny_overrides(tmp_path, 'train.max_iters=2', 'train.batch_size=2')]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'val bbox: AP' in proc.stdout and proc.stdout.count('run folder') == 1  # only rank 0 prints
    state = load_checkpoint(tmp_path / 'ddp' / 'final.pth')
    assert state['step'] == 2
    dets = json.loads((tmp_path / 'ddp' / 'detections_val.json').read_text())
    assert {d['image_id'] for d in dets} == set(range(1, 7))  # both ranks' shards gathered


def test_retrain_on_random_windows_resumes_exactly(tmp_path):
    windows = ('data.train_crop.size=48', 'data.train_crop.crops_per_image=2', 'train.eval_at_end=false')
    full = retrain_main(['--output', str(tmp_path / 'full'), '--set',
                             *tiny_overrides(tmp_path, 'train.max_iters=4', *windows)])
    retrain_main(['--output', str(tmp_path / 'part'), '--set', *tiny_overrides(tmp_path, 'train.max_iters=2', *windows)])
    resumed = retrain_main(['--output', str(tmp_path / 'part'), '--resume', '--set',
                                *tiny_overrides(tmp_path, 'train.max_iters=4', *windows)])
    a = load_checkpoint(tmp_path / 'full' / 'final.pth')['model']
    b = load_checkpoint(tmp_path / 'part' / 'final.pth')['model']
    assert full['step'] == resumed['step'] == 4 and all(torch.equal(a[k], b[k]) for k in a)
    # 16 images x 2 windows / batch 4 = 8 steps an epoch: the 4 steps stayed in epoch 0
    assert load_checkpoint(tmp_path / 'full' / 'last.pth')['epoch'] == 0


@pytest.mark.parametrize('override, message', [
    ('data.train_crop.size=0', r"config data.train_crop.size is 0; expected a positive integer \(pixels\) or null"),
    ("data.train_crop.size='400'", r"config data.train_crop.size is '400'; expected a positive integer"),
    ('data.train_crop.crops_per_image=0', 'config data.train_crop.crops_per_image is 0; expected a positive integer'),
    ('data.train_crop.min_visible=1.5', r'config data.train_crop.min_visible is 1.5; expected a share in \(0, 1\]'),
])
def test_train_crop_config_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_ssdlite_retrain_runs(tmp_path):
    result = retrain_main(['--output', str(tmp_path / 'ssd'), '--set', *tiny_overrides(
        tmp_path, 'detector=ssdlite', 'model.backbone=fna_ssdlite_backbone', 'train.optimizer=rmsprop',
        'train.max_iters=2', kwargs='model.kwargs={image_size: 64, score_thresh: 0.0}')])
    assert result['step'] == 2 and 0.0 <= result['AP'] <= 1.0
    assert load_checkpoint(tmp_path / 'ssd' / 'final.pth')['config']['detector'] == 'ssdlite'
    assert (tmp_path / 'ssd' / 'arch.yaml').read_text().startswith('stem_chs: 32')


def test_training_run_scaffolding(tmp_path):
    from torch.utils.data import TensorDataset

    from fna_zoo.engine.distributed import DistInfo
    from fna_zoo.engine.run import MetricsLog, TrainingRun, check_num_classes, epoch_loader, total_steps

    assert total_steps({'epochs': 3, 'max_iters': None}, 4) == 12 and total_steps({'epochs': 3, 'max_iters': 5}, 4) == 5
    with pytest.raises(ValueError, match='config model.num_classes is 3, the training annotations have 2 categories'):
        check_num_classes({'model': {'num_classes': 3}}, type('DS', (), {'num_classes': 2})())
    # a resumed epoch draws exactly the batches the uninterrupted one drew after the skipped ones
    ds = TensorDataset(torch.arange(10), torch.arange(10))
    ref = [[int(i) for i in images] for images, _ in epoch_loader(ds, None, 2, 0, seed=7, epoch=0)]
    tail = [[int(i) for i in images] for images, _ in epoch_loader(ds, None, 2, 0, seed=7, epoch=0, skip_batches=2)]
    assert tail == ref[2:] and sorted(sum(ref, [])) == list(range(10))
    # metrics.csv: the header once, rows appended, only by the main process
    log = MetricsLog(tmp_path / 'm' / 'metrics.csv', ['a', 'b'], enabled=True, fresh=True)
    log.write([1, 'x'])
    MetricsLog(log.path, ['a', 'b'], enabled=True, fresh=False).write([2, 'y'])
    MetricsLog(log.path, ['a', 'b'], enabled=False, fresh=True).write([3, 'z'])
    assert log.path.read_text().splitlines() == ['a,b', '1,x', '2,y']
    # last.pth restores the model, the optimizer and the RNG states; config.yaml is written on a fresh run
    cfg, info = {'output': str(tmp_path / 'run'), 'seed': 0}, DistInfo(0, 1, 0, torch.device('cpu'))
    model = torch.nn.Linear(2, 1)
    opt, gen = torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(1)
    run = TrainingRun(cfg, info, resume=True, num_classes=2)
    assert run.begin(model, {'optimizer': opt}, gen) is None and (tmp_path / 'run' / 'config.yaml').is_file()
    run.save_last(step=4)
    expected = (torch.rand(3), torch.rand(3, generator=gen), model.weight.detach().clone())
    torch.nn.init.zeros_(model.weight)
    again = TrainingRun(cfg, info, resume=True, num_classes=2)
    state = again.begin(model, {'optimizer': opt}, gen)
    assert state['step'] == 4 and state['num_classes'] == 2 and again.resumed
    got = (torch.rand(3), torch.rand(3, generator=gen), model.weight.detach())
    assert all(torch.equal(a, b) for a, b in zip(expected, got))

"""The retrain recipe's pieces: cosine LR, dihedral flips, frozen backbone BatchNorm, the AP-vs-steps curve
(eval.csv, resumed without duplicate rows), the search's entropy fractions and architecture batch size."""
import csv
import math
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from fna_zoo.data import train_transforms
from fna_zoo.data.transforms import flips
from fna_zoo.engine import load_checkpoint, load_config
from fna_zoo.engine.train import freeze_backbone_bn, lr_factor, train_mode
from fna_zoo.nas.searcher import entropy_fraction

from test_engine import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_cosine_lr_schedule():
    t = dict(lr_schedule='cosine', lr_gamma=0.1, lr_steps=[1], warmup_iters=10, warmup_ratio=0.0)
    assert lr_factor(0, 0, t, 100) == 0.0
    assert lr_factor(5, 0, t, 100) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.05)))  # warm-up x cosine
    assert lr_factor(50, 3, t, 100) == pytest.approx(0.5)  # lr_steps are ignored by the cosine
    assert lr_factor(100, 3, t, 100) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match='needs the run'):
        lr_factor(1, 0, t)


@pytest.mark.parametrize('override, message', [
    ("train.lr_schedule=linear", "config train.lr_schedule is 'linear'; expected one of step, cosine"),
    ("data.augment=rot", "config data.augment is 'rot'; expected one of flip, dihedral, none"),
    ('train.eval_interval=0', r'config train.eval_interval is 0; expected an integer >= 1 or null'),
])
def test_recipe_config_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_dihedral_flips_move_boxes_with_the_pixels():
    torch.manual_seed(0)
    image = torch.zeros(3, 40, 60)
    image[:, 5:15, 10:30] = 1.0  # one bright object, its box (10, 5, 30, 15)
    boxes = tv_tensors.BoundingBoxes([[10, 5, 30, 15]], format='XYXY', canvas_size=(40, 60))
    seen = set()
    for _ in range(60):
        img, out = train_transforms('plain', 'dihedral')(tv_tensors.Image(image), {'boxes': boxes})
        x0, y0, x1, y1 = out['boxes'][0].int().tolist()
        assert img[0, y0:y1, x0:x1].min() == 1.0 and img[0].sum() == image[0].sum()  # the box holds the object
        seen.add((tuple(img.shape[-2:]), x0, y0))
    assert len(seen) == 8 and {s[0] for s in seen} == {(40, 60), (60, 40)}  # all 8 symmetries of the rectangle
    assert len(flips('flip')) == 1 and flips('none') == []
    with pytest.raises(ValueError, match="augment is 'x'"):
        flips('x')


def test_frozen_backbone_bn_keeps_the_seed_statistics():
    from fna_zoo.detection import build_retinanet

    model = build_retinanet('mobilenetv2_100', num_classes=2, min_size=64, max_size=64, head_width=16)
    n = freeze_backbone_bn(model)
    bn = model.backbone.body.bn1
    before = (bn.running_mean.clone(), bn.weight.clone())
    train_mode(model, True)
    assert n > 30 and not bn.training and model.head.training and not bn.weight.requires_grad
    images = [torch.rand(3, 64, 64)]
    targets = [{'boxes': torch.tensor([[4.0, 4.0, 30.0, 30.0]]), 'labels': torch.tensor([1])}]
    sum(model(images, targets).values()).backward()
    assert torch.equal(bn.running_mean, before[0]) and bn.weight.grad is None
    train_mode(model, False)
    assert bn.training


def test_eval_curve_and_resume(tmp_path):
    from fna_zoo.cli.retrain import retrain_main

    extra = ('train.lr_schedule=cosine', 'train.eval_interval=2', 'train.freeze_bn=true', 'data.augment=dihedral')
    retrain_main(['--output', str(tmp_path / 'run'), '--set', *tiny_overrides(tmp_path, 'train.max_iters=3', *extra)])
    result = retrain_main(['--output', str(tmp_path / 'run'), '--resume', '--set',
                           *tiny_overrides(tmp_path, 'train.max_iters=6', *extra)])
    rows = list(csv.DictReader((tmp_path / 'run' / 'eval.csv').open()))
    # steps 2 and 4 mid-run, 6 at the end; the first run's end-of-run row (step 3) was dropped on resume
    assert [int(r['step']) for r in rows] == [2, 4, 6] and result['step'] == 6
    assert float(rows[-1]['AP']) == pytest.approx(result['AP'], abs=1e-5)
    ckpt = load_checkpoint(tmp_path / 'run' / 'final.pth')
    assert ckpt['config']['train']['freeze_bn'] is True


def test_entropy_fraction():
    assert entropy_fraction([torch.full((7,), 1 / 7), torch.tensor([0.5, 0.5])]) == pytest.approx(1.0)
    assert entropy_fraction([torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0])]) == pytest.approx(0.0, abs=1e-9)
    half = torch.tensor([0.5, 0.5, 0.0, 0.0])
    assert entropy_fraction([half]) == pytest.approx(math.log(2) / math.log(4))

"""Shared fixtures: an offline random-init MobileNetV2 seed standing in for timm's ImageNet weights, and tiny
hand-made Pascal-VOC files."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import fna_zoo  # noqa: F401  (registers the fna* models)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial affine parameters and running statistics (so remapping errors show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


@pytest.fixture(scope='session')
def seed_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(timm.create_model('mobilenetv2_100')).eval()


@pytest.fixture(scope='session')
def seed_state_dict(seed_model) -> dict:
    return {k: v.clone() for k, v in seed_model.state_dict().items()}


@pytest.fixture(scope='session')
def seed_file(seed_state_dict, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('seed') / 'mobilenetv2_100.pth'
    torch.save(seed_state_dict, path)
    return str(path)


@pytest.fixture
def image() -> torch.Tensor:
    return torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))


VOC = """<annotation><folder>data</folder><filename>{name}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = ('<object><name>{cls}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax>'
       '</bndbox></object>')


def write_voc(folder, stem, size, boxes, classes=None):
    """A tiny VOC pair in `folder`: a random RGB png of `size` (w, h) and its XML; returns their paths."""
    w, h = size
    rng = np.random.default_rng(len(boxes))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f'{stem}.png')
    objects = ''.join(OBJ.format(*b, cls=(classes or ['Tree'] * len(boxes))[i]) for i, b in enumerate(boxes))
    (folder / f'{stem}.xml').write_text(VOC.format(name=f'{stem}.png', w=w, h=h, objects=objects))
    return folder / f'{stem}.png', folder / f'{stem}.xml'

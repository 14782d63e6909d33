"""Shared fixtures: an offline random-init MobileNetV2 seed standing in for timm's ImageNet weights, tiny
hand-made Pascal-VOC files, and command lines run side by side."""
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import fna_zoo  # noqa: F401  (registers the fna* models)


def run_side_by_side(cmds: list[list[str]], **kwargs) -> list[subprocess.CompletedProcess]:
    """Run command lines two at a time (one per core of the project's 2-core machine), outputs captured as text.

    Each process gets one intra-op thread (OMP_NUM_THREADS=1 unless `env` sets it): two processes with a thread
    pool per core each would oversubscribe the cores. The results are in the order of `cmds`.
    """
    env = {**os.environ, **kwargs.pop('env', {})}
    env.setdefault('OMP_NUM_THREADS', '1')
    kwargs = {'capture_output': True, 'text': True, 'timeout': 300, 'env': env, **kwargs}
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda cmd: subprocess.run(cmd, **kwargs), cmds))


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


# EfficientNet-Lite0 blocks as (kernel, stride, expansion, out channels, repeats) per stage (Tan & Le; TF's lite)
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
                (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


def lite0_blocks():
    """(in, out, kernel, stride, expansion) of EfficientNet-Lite0's 16 blocks, in efficientnet_pytorch's order."""
    blocks, in_chs = [], 32
    for k, s, e, out, n in LITE0_STAGES:
        for i in range(n):
            blocks.append((in_chs, out, k, s if i == 0 else 1, e))
            in_chs = out
    return blocks


def lite0_efficientnet_pytorch_state_dict(num_classes: int = 1000, seed: int = 0) -> dict:
    """A random EfficientNet-Lite0 state dict in the `efficientnet_pytorch` layout (`_conv_stem`, `_bn0`,
    `_blocks.0`-`15` with `_expand_conv` / `_bn0` / `_depthwise_conv` / `_bn1` / `_project_conv` / `_bn2`,
    `_conv_head`, `_bn1`, `_fc`), BN statistics non-trivial, written from the network's definition (not from timm)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, out_c, in_c, k):
        sd[f'{name}.weight'] = torch.randn(out_c, in_c, k, k, generator=g) * (2.0 / (in_c * k * k)) ** 0.5

    def bn(name, c):
        sd[f'{name}.weight'] = torch.rand(c, generator=g) + 0.5
        sd[f'{name}.bias'] = torch.randn(c, generator=g) * 0.1
        sd[f'{name}.running_mean'] = torch.randn(c, generator=g) * 0.1
        sd[f'{name}.running_var'] = torch.rand(c, generator=g) * 1.5 + 0.5
        sd[f'{name}.num_batches_tracked'] = torch.tensor(0)

    conv('_conv_stem', 32, 3, 3)
    bn('_bn0', 32)
    for i, (in_c, out_c, k, _, e) in enumerate(lite0_blocks()):
        mid = in_c * e
        if e != 1:
            conv(f'_blocks.{i}._expand_conv', mid, in_c, 1)
            bn(f'_blocks.{i}._bn0', mid)
        conv(f'_blocks.{i}._depthwise_conv', mid, 1, k)
        bn(f'_blocks.{i}._bn1', mid)
        conv(f'_blocks.{i}._project_conv', out_c, mid, 1)
        bn(f'_blocks.{i}._bn2', out_c)
    conv('_conv_head', 1280, 320, 1)
    bn('_bn1', 1280)
    sd['_fc.weight'] = torch.randn(num_classes, 1280, generator=g) * 0.03
    sd['_fc.bias'] = torch.randn(num_classes, generator=g) * 0.01
    return sd

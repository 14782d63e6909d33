"""Shared fixtures: an offline random-init MobileNetV2 seed standing in for timm's ImageNet weights."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest
import timm
import torch

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

"""Registered architectures, stored as YAML data files beside this module.

* `mobilenetv2_100`: the MobileNetV2 seed (timm `mobilenetv2_100`), Sandler et al. - https://arxiv.org/abs/1801.04381
* `efficientnet_b0`: the EfficientNet-B0 seed (timm `efficientnet_b0`: SiLU, squeeze-excitation 0.25), Tan & Le -
  https://arxiv.org/abs/1905.11946
* `fna_retinanet_backbone`, `fna_ssdlite_backbone`: the FNA-derived detection backbones published with
  FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525), `configs/fna_*_retrain.py` of JaminFong/FNA.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..arch import Arch

__all__ = ['get_arch', 'list_archs']

_DIR = Path(__file__).parent


def list_archs() -> list[str]:
    """Names of the registered architectures."""
    return sorted(p.stem for p in _DIR.glob('*.yaml'))


@lru_cache(maxsize=None)
def get_arch(name: str) -> Arch:
    """Return a registered architecture (`Arch` is immutable, so the cached object is safe to share).

    Args:
        name: One of `list_archs()`.
    """
    path = _DIR / f'{name}.yaml'
    if not path.is_file():
        raise ValueError(f'unknown arch {name!r}; expected one of {", ".join(list_archs())}')
    return Arch.load(path)

"""Detectors (torchvision RetinaNet + FPN and SSDLite) around FNA / timm backbones, with FNA's settings."""
from typing import Any

from torch import nn

from .backbones import FPNBackbone, SSDLiteBackbone, create_backbone, resolve_seed
from .core import DetectorCore
from .retinanet import build_retinanet
from .ssdlite import SSDLite, build_ssdlite

DETECTORS = {'retinanet': build_retinanet, 'ssdlite': build_ssdlite}


def build_detector(name: str, **kwargs: Any) -> nn.Module:
    """Build a detector by name ('retinanet' or 'ssdlite').

    Args:
        name: Detector name.
        **kwargs: Passed to the builder.
    """
    if name not in DETECTORS:
        raise ValueError(f'unknown detector {name!r}; expected one of {", ".join(DETECTORS)}')
    return DETECTORS[name](**kwargs)


__all__ = ['DETECTORS', 'build_detector', 'build_retinanet', 'build_ssdlite', 'SSDLite', 'DetectorCore',
           'FPNBackbone', 'SSDLiteBackbone', 'create_backbone', 'resolve_seed']

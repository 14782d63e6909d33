"""Detectors (torchvision RetinaNet + FPN and SSDLite) around FNA / timm backbones, with FNA's settings.

Each detector's file ends in its `DetectorSpec` (its traits) and registers it in `DETECTORS`; importing a detector
file here is what adds it. `build_model` builds the detector a run config describes.
"""
from .backbones import FPNBackbone, SSDLiteBackbone, create_backbone, resolve_seed
from .core import DetectorCore
from .registry import DEFAULT_DETECTOR, DETECTORS, build_detector, get_detector, register_detector, spec_of
from .spec import DetectorSpec
from .retinanet import RETINANET, build_retinanet  # (registers 'retinanet' first: the default)
from .ssdlite import SSDLITE, SSDLite, build_ssdlite  # registers 'ssdlite'
from .factory import build_model, model_kwargs

__all__ = ['DETECTORS', 'DEFAULT_DETECTOR', 'DetectorSpec', 'register_detector', 'get_detector', 'spec_of',
           'build_detector', 'build_model', 'model_kwargs', 'build_retinanet', 'build_ssdlite', 'RETINANET', 'SSDLITE',
           'SSDLite', 'DetectorCore', 'FPNBackbone', 'SSDLiteBackbone', 'create_backbone', 'resolve_seed']

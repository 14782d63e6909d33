"""FNA Zoo: FNA-adapted detection backbones as timm models, with architecture and remapping tools.

Importing the package registers its timm models (`timm.list_models('fna*')`).
"""
from .arch import SKIP, Arch, Op, Stage, is_arch_spec, load_arch
from .archs import get_arch, list_archs
from .complexity import Complexity, count_arch, count_model
from .remap import RemapError, check_state_dict, remap_state_dict
from .builder import DEFAULT_SEED, DETECTION_OUT_INDICES, build_backbone
from . import fna  # noqa: F401  (registers the timm models)

__version__ = '0.1.0'

__all__ = [
    'Arch', 'Op', 'Stage', 'SKIP', 'is_arch_spec', 'load_arch', 'get_arch', 'list_archs',
    'Complexity', 'count_arch', 'count_model',
    'RemapError', 'check_state_dict', 'remap_state_dict',
    'DEFAULT_SEED', 'DETECTION_OUT_INDICES', 'build_backbone',
]

"""Optional mmdetection 3.x integration: FNA / timm backbones in mmdet configs.

    custom_imports = dict(imports=['fna_zoo.mmdet'], allow_failed_imports=False)
    model = dict(backbone=dict(type='FNABackbone', arch='fna_retinanet_backbone', out_indices=(2, 3, 4),
                               seed_weights='mobilenetv2_100.pth'), ...)

Importing this module registers `FNABackbone` in mmdet's MODELS registry and lets torch's weights-only
loading (the default since torch 2.6) read checkpoints written by mmengine's Runner, which pickle numpy
values and `HistoryBuffer`s next to the tensors. mmdet is an optional extra: `scripts/install_mmdet.sh`.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Sequence

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModule

from .detection.backbones import create_backbone

__all__ = ['FNABackbone', 'MMENGINE_SAFE_GLOBALS']


def _numpy_globals() -> list[Any]:
    core = getattr(np, '_core', None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


_HISTORY_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """The only `getattr` an mmengine checkpoint needs: a HistoryBuffer statistics method."""
    if obj is HistoryBuffer and (name in _HISTORY_STATISTICS or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics '
                                 'methods are allowed under weights-only loading')


# NOTE: what mmengine Runner checkpoints hold besides tensors: message-hub history (HistoryBuffer, numpy
# arrays and scalars) and HistoryBuffer's statistics methods, pickled as getattr(HistoryBuffer, 'min').
# The builtin getattr is NOT allowed (it would reopen arbitrary code execution); its pickled name is
# mapped to `_history_buffer_getattr`, so weights-only loading stays safe.
MMENGINE_SAFE_GLOBALS: list[Any] = [
    HistoryBuffer, *_numpy_globals(),
    (_history_buffer_getattr, '__builtin__.getattr'), (_history_buffer_getattr, 'builtins.getattr'),
]
torch.serialization.add_safe_globals(MMENGINE_SAFE_GLOBALS)


@MODELS.register_module()
class FNABackbone(BaseModule):
    """An FNA arch (with remapped seed weights) or any timm model as an mmdet backbone.

    Args:
        arch: A registered FNA arch ('fna_retinanet_backbone'), an arch file, an FNA net_config string, or
            a timm model name.
        out_indices: timm feature indices to return (2, 3, 4: strides 8/16/32 for RetinaNet's FPN).
        seed_weights: Seed weights remapped into the arch: None, 'timm' or a .pth/.safetensors file.
        norm_eval: Keep BN layers in eval mode while training.
        init_cfg: mmengine init config (leave None: the weights come from the seed).
    """

    def __init__(self, arch: str | os.PathLike = 'fna_retinanet_backbone', out_indices: Sequence[int] = (2, 3, 4),
                 seed_weights: str | None = None, norm_eval: bool = False, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg)
        self.model = create_backbone(arch, seed_weights, features_only=True, out_indices=tuple(out_indices))
        self.norm_eval = norm_eval

    @property
    def out_channels(self) -> list[int]:
        return self.model.feature_info.channels()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x))

    def train(self, mode: bool = True) -> 'FNABackbone':
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

"""Turn an `Arch` into a timm EfficientNet / EfficientNetFeatures model, optionally with remapped seed weights.

The models are plain timm models (`timm.models.efficientnet.EfficientNet` built from an arch_def), so
`features_only`, `out_indices`, `feature_info`, `pretrained_cfg` and timm's weight loading all behave as for
timm's own MobileNetV2. Seed weights are remapped by FNA parameter remapping (see `fna_zoo.remap`) through
timm's `pretrained_filter_fn` hook.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import get_act_layer
from timm.models import build_model_with_cfg
from timm.models._builder import pretrained_cfg_for_features
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures

from .arch import Arch, load_arch
from .assets.store import is_asset_spec, resolve_asset, resolve_weights_asset
from .checkpoint import check_weights_file
from .remap import WidthMode, remap_filter_fn

__all__ = ['build_backbone', 'build_part', 'create_fna_model', 'arch_model_kwargs', 'fna_pretrained_cfg',
           'seed_input_cfg', 'DETECTION_OUT_INDICES', 'DEFAULT_SEED']

DEFAULT_SEED = 'mobilenetv2_100'
# NOTE: timm's features are the stage ends at strides 2/4/8/16/32; detection necks take strides 4-32,
# which for MobileNetV2-like archs are the 24/32/96/320-channel maps FNA's RetinaNet FPN consumes.
DETECTION_OUT_INDICES = (1, 2, 3, 4)


# the input fields of a seed's timm pretrained cfg that go with its weights (`seed_input_cfg`)
_INPUT_FIELDS = ('mean', 'std', 'interpolation', 'crop_pct')


def seed_input_cfg(seed: str | None) -> dict[str, Any]:
    """The input pre-processing a seed's weights were trained with, from timm's pretrained cfg of the seed model:
    `mean`, `std` (images in [0, 1] are normalised as (x - mean) / std), `interpolation`, `crop_pct`.

    ImageNet's mean and std for MobileNetV2 and EfficientNet-B0; 0.5 and 0.5 for the TensorFlow-trained
    EfficientNet-Lite0 (inputs scaled to [-1, 1]). Every FNA model records its seed's values in its pretrained cfg
    (`create_fna_model`), and the detectors, the exports and the photo check read them from there.

    Args:
        seed: The timm model the seed weights are for (an arch's `seed`; None: `DEFAULT_SEED`).
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(seed or DEFAULT_SEED)
    out = {'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD, 'interpolation': 'bicubic', 'crop_pct': 0.875}
    if cfg is not None:  # NOTE: a seed that is no timm model keeps ImageNet's values
        out.update({k: getattr(cfg, k) for k in _INPUT_FIELDS if getattr(cfg, k, None) is not None})
    out['mean'], out['std'] = tuple(out['mean']), tuple(out['std'])
    return out


# NOTE: the pretrained cfg of every FNA model (the model file `fna.py` fills in its tags); it lives here so the
# builder never imports the model file. A model built from an unregistered arch (`build_backbone`) gets
# `architecture=fna_custom, num_classes=1000`: its weights, an overlay, are a 1000-class seed.
def fna_pretrained_cfg(seed: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """timm pretrained cfg of an FNA model (its seed's input normalisation, the papers' ids), updated with `kwargs`.

    Args:
        seed: The timm model of the seed weights (None: `DEFAULT_SEED`), whose normalisation the cfg records
            (`seed_input_cfg`).
        **kwargs: Fields to set or override (e.g. `hf_hub_id`, `file`, `description`).
    """
    return {
        'num_classes': 0, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        **seed_input_cfg(seed),
        'first_conv': 'conv_stem', 'classifier': 'classifier',
        'paper_ids': ('arXiv:2001.02525', 'arXiv:2006.12986', 'arXiv:2206.08509'),
        'origin_url': 'https://github.com/JaminFong/FNA', 'license': 'apache-2.0',
        **kwargs,
    }


def _keep_channels(chs: int, **_: Any) -> int:
    """Channel 'rounding' that keeps the arch's widths as written (timm rounds to multiples of 8)."""
    return int(chs)


def arch_model_kwargs(arch: Arch) -> dict[str, Any]:
    """kwargs for timm `EfficientNet` / `EfficientNetFeatures` that build `arch`.

    Args:
        arch: The architecture.
    """
    return dict(
        # NOTE: timm's builder mutates the decoded block dicts, so they are decoded afresh for every model.
        block_args=decode_arch_def(arch.to_timm_arch_def()),
        num_features=arch.head_chs or 0,
        stem_size=arch.stem_chs,
        fix_stem=True,
        round_chs_fn=_keep_channels,
        act_layer=get_act_layer(arch.act),
        # NOTE: timm's tf_* models: BN eps 1e-3 (their `bn_eps`) and TF "same" padding (`pad_type`)
        norm_layer=nn.BatchNorm2d if arch.bn_eps is None else partial(nn.BatchNorm2d, eps=arch.bn_eps),
        pad_type=arch.pad_type,
    )


def create_fna_model(
        variant: str,
        arch: Arch,
        pretrained: bool = False,
        seed_arch: Arch | str | None = None,
        width: WidthMode = 'leading',
        **kwargs: Any,
) -> nn.Module:
    """Build a timm model for `arch` (the timm `_create_effnet` recipe plus seed remapping on load).

    Args:
        variant: Model name used to look up the pretrained cfg.
        arch: The architecture.
        pretrained: Load weights per the pretrained cfg; seed weights are remapped into `arch`, weights
            already made for `arch` load unchanged.
        seed_arch: Architecture of the seed checkpoint (an `Arch` or a registered arch name); None: the
            arch's own `seed` (MobileNetV2 when it names none).
        width: Width selection when remapping, 'leading' or 'bn_gamma'.
        **kwargs: timm model kwargs (features_only, out_indices, num_classes, pretrained_cfg_overlay, ...).
    """
    from .arch import get_arch

    seed_arch = seed_arch if seed_arch is not None else arch.seed or DEFAULT_SEED
    seed = get_arch(seed_arch) if isinstance(seed_arch, str) else seed_arch
    features_mode = ''
    model_cls = EfficientNet
    kwargs_filter = None
    if kwargs.pop('features_only', False):
        if 'feature_cfg' in kwargs or 'feature_cls' in kwargs:
            features_mode = 'cfg'
        else:
            kwargs_filter = ('num_classes', 'num_features', 'head_conv', 'global_pool')
            model_cls = EfficientNetFeatures
            features_mode = 'cls'
    # NOTE: the normalisation the seed weights were trained with goes into the model's pretrained cfg (explicit
    # overlay fields win), so whatever reads the cfg (detectors, exports, timm's transforms) uses it
    seed_input = seed_input_cfg(seed.seed or arch.seed)
    kwargs['pretrained_cfg_overlay'] = {**seed_input, **(kwargs.get('pretrained_cfg_overlay') or {})}
    model_kwargs = arch_model_kwargs(arch)
    model_kwargs.update(kwargs)
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        features_only=features_mode == 'cfg',
        pretrained_strict=features_mode != 'cls',
        pretrained_filter_fn=partial(remap_filter_fn, arch=arch, seed_arch=seed, width=width),
        kwargs_filter=kwargs_filter,
        **model_kwargs,
    )
    if features_mode == 'cls':
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    model.fna_arch = arch
    return model


def build_backbone(
        arch: Arch | str | os.PathLike,
        pretrained_seed: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        seed_arch: Arch | str | None = None,
        width: WidthMode = 'leading',
        **timm_kwargs: Any,
) -> nn.Module:
    """Build a timm model from any architecture, optionally remapping seed weights into it.

    Example::

        arch = fna_zoo.load_arch('runs/search/arch.yaml')
        model = fna_zoo.build_backbone(arch, 'mobilenetv2_100.safetensors', features_only=True,
                                       out_indices=fna_zoo.DETECTION_OUT_INDICES)

    Args:
        arch: An `Arch`, an arch file, a registered arch name or an FNA net_config string.
        pretrained_seed: Seed weights (a .pth/.safetensors file, `asset:<name>` of a fetched one, or a state
            dict) of `seed_arch`, or None for random init. Weights already made for `arch` (e.g. after
            retraining) load unchanged.
        seed_arch: Architecture of the seed weights; None: the seed the arch records (default timm
            `mobilenetv2_100`).
        width: Width selection when remapping, 'leading' (FNA code) or 'bn_gamma' (FNA paper).
        **timm_kwargs: timm model kwargs: features_only, out_indices, num_classes, drop_path_rate, ...
    """
    arch = load_arch(arch)
    overlay = dict(timm_kwargs.pop('pretrained_cfg_overlay', None) or {})
    if isinstance(pretrained_seed, (str, os.PathLike)):
        path = Path(pretrained_seed)
        if is_asset_spec(pretrained_seed):
            # NOTE: a seed given as an Arch object names no timm model to check the weights against
            path = (resolve_asset(pretrained_seed) if isinstance(seed_arch, Arch) else
                    resolve_weights_asset(str(pretrained_seed), seed_arch or arch.seed or DEFAULT_SEED))
        overlay['file'] = str(check_weights_file(path))
    elif pretrained_seed is not None:
        overlay['state_dict'] = dict(pretrained_seed)
    # NOTE: the custom cfg describes a 1000-class seed, so timm keeps the seed classifier only for
    # num_classes=1000 and resets it otherwise; the default is a backbone without classifier.
    timm_kwargs.setdefault('num_classes', 0)
    return create_fna_model(
        'fna_custom',
        arch,
        pretrained=pretrained_seed is not None,
        seed_arch=seed_arch,
        width=width,
        pretrained_cfg=fna_pretrained_cfg(arch.seed, architecture='fna_custom', num_classes=1000),
        pretrained_cfg_overlay=overlay,
        **timm_kwargs,
    )


def build_part(arch: Arch, **timm_kwargs: Any) -> nn.Module:
    """A random-init timm model of a partial arch: a block or a few stages, for timing one part of a network
    (latency tables) or for tests. Unlike `build_backbone` it skips the backbone check (`check_arch`: output
    stride 32), which a part does not meet.

    Args:
        arch: The (partial) architecture.
        **timm_kwargs: timm model kwargs.
    """
    timm_kwargs.setdefault('num_classes', 0)
    cfg = fna_pretrained_cfg(arch.seed, architecture='fna_custom', num_classes=1000)
    return create_fna_model('fna_custom', arch, pretrained_cfg=cfg, **timm_kwargs)

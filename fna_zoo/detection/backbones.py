"""Backbones for torchvision detectors from any timm model or FNA `Arch`.

Detector settings follow FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525): RetinaNet takes
the stride 8/16/32 stage ends into an FPN; SSDLite taps the stride-16 expansion of the first layer of the
stride-32 stage (576 channels for MobileNetV2-like archs) and the 1x1-conv-to-1280 output, then adds
depthwise-separable extra layers.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Mapping

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from ..arch import Arch, is_arch_spec, load_arch
from ..archs import list_archs
from ..assets.store import (ASSET_PATHS, ASSET_PREFIX, hub_offline_hint, is_asset_spec, resolve_weights_asset,
                            seed_asset)
from ..checkpoint import check_weights_file
from ..checks import check_input_file
from ..builder import DEFAULT_SEED, build_backbone

__all__ = ['SeedSpec', 'resolve_seed', 'check_backbone', 'create_backbone', 'input_normalization', 'FPNBackbone',
           'SSDLiteBackbone']

_logger = logging.getLogger(__name__)

SeedSpec = str | os.PathLike | Mapping[str, torch.Tensor] | None


def resolve_seed(seed: SeedSpec, seed_model: str = DEFAULT_SEED) -> Mapping[str, torch.Tensor] | str | None:
    """Seed weights as `build_backbone` takes them: None, a state dict ('timm': the hub weights of
    `seed_model`, loaded through timm) or the path of an existing weights file (`asset:<name>`: a fetched
    one, e.g. 'asset:mobilenetv2_100.tv_in1k', torchvision's ImageNet MobileNetV2).

    Args:
        seed: The seed spec.
        seed_model: timm model whose hub weights 'timm' means.
    """
    if seed is None or isinstance(seed, Mapping):
        return seed
    if str(seed) == 'timm':
        _logger.info('loading seed weights of %s through timm', seed_model)
        asset = seed_asset(seed_model) or seed_asset(DEFAULT_SEED)
        with hub_offline_hint(f"timm's hub weights of {seed_model!r} (seed weights 'timm')",
                              f"seed weights '{ASSET_PREFIX}{asset}'", ASSET_PATHS[asset][0]):
            return timm.create_model(seed_model, pretrained=True).state_dict()
    if is_asset_spec(seed):
        return str(resolve_weights_asset(str(seed), seed_model))
    check_input_file(seed, 'seed weights file', "a .pth/.safetensors file, 'timm', 'asset:mobilenetv2_100.tv_in1k' "
                     'or null')
    return str(seed)


def check_backbone(spec: Arch | str | os.PathLike) -> str:
    """Raise a clear error for a backbone spec that is neither an FNA arch nor a timm model (cheap: builds
    nothing); returns the spec as text.

    Args:
        spec: As for `create_backbone`.
    """
    if is_arch_spec(spec):
        load_arch(spec)
    elif not timm.is_model(str(spec)):
        raise ValueError(f'unknown backbone {str(spec)!r}; expected an FNA arch ({", ".join(list_archs())}, an arch '
                         'file or an FNA net_config string) or a timm model name')
    return str(spec)


def create_backbone(spec: Arch | str | os.PathLike | nn.Module, seed: SeedSpec = None, **timm_kwargs: Any) -> nn.Module:
    """A timm model from an FNA arch (with seed remapping) or from any timm model name (with its own weights).

    Args:
        spec: An `Arch`, arch file, registered arch name or FNA string; or a timm model name ('efficientnet_b0');
            or a ready module (e.g. the search's super network), used as it is.
        seed: Seed weights (see `resolve_seed`); for a plain timm model, 'timm' or a weights file.
        **timm_kwargs: features_only, out_indices, ...
    """
    if isinstance(spec, nn.Module):
        if seed is not None:
            raise ValueError('seed weights are for backbones built here; a ready backbone module brings its own')
        return spec
    if is_arch_spec(spec):
        arch = load_arch(spec)
        return build_backbone(arch, resolve_seed(seed, arch.seed or DEFAULT_SEED), **timm_kwargs)
    name = check_backbone(spec)
    if seed is None:
        return timm.create_model(name, **timm_kwargs)
    overlay = None  # 'timm': the model's own pretrained cfg
    if isinstance(seed, Mapping):
        overlay = dict(state_dict=dict(seed))
    elif str(seed) != 'timm':
        overlay = dict(file=str(check_weights_file(resolve_seed(seed))))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **timm_kwargs)


def input_normalization(body: nn.Module) -> tuple[list[float], list[float]]:
    """(mean, std) a backbone's weights expect of images in [0, 1], as its pretrained cfg records them (every FNA
    model records its seed's, `fna_zoo.builder.seed_input_cfg`; a timm model its weights'; the super network its
    seed's): the detectors normalise with them, and so do their exports. ImageNet's for a module without a cfg.

    Args:
        body: The backbone (a timm model, an FNA model, the search's super network or any module).
    """
    cfg = getattr(body, 'pretrained_cfg', None) or {}
    mean, std = cfg.get('mean') or IMAGENET_DEFAULT_MEAN, cfg.get('std') or IMAGENET_DEFAULT_STD
    return [float(v) for v in mean], [float(v) for v in std]


class FPNBackbone(nn.Module):
    """timm feature extractor + FPN (P3-P5 from C3-C5, P6 from C5, P7 from P6), as FNA's RetinaNet neck.

    Args:
        body: A timm `features_only` model returning the stride 8/16/32 maps.
        out_channels: FPN width.
    """

    def __init__(self, body: nn.Module, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        chs = body.feature_info.channels()
        # NOTE: LastLevelP6P7 takes P6 from C5 when C5's width differs from the FPN's (320 != 256), which is
        # FNA's add_extra_convs on the input; the paper's parameter count (11.49M) confirms it.
        self.fpn = FeaturePyramidNetwork(chs, out_channels, extra_blocks=LastLevelP6P7(chs[-1], out_channels))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> 'OrderedDict[str, torch.Tensor]':
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _extra_block(in_chs: int, out_chs: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """1x1 conv to out/2, depthwise 3x3 stride 2, 1x1 conv to out; each with BN + ReLU6 (FNA/torchvision SSDLite)."""
    mid = out_chs // 2
    return nn.Sequential(
        nn.Conv2d(in_chs, mid, 1, bias=False), norm_layer(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False), norm_layer(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, out_chs, 1, bias=False), norm_layer(out_chs), nn.ReLU6(inplace=True),
    )


class SSDLiteBackbone(nn.Module):
    """SSDLite features from a timm EfficientNet-family model (stem, IR stages, 1x1 head conv).

    Outputs: the expansion (after its BN + act) of the first layer of the stage that goes from stride 16 to
    32, the head-conv output, then one map per extra block (widths `extra_chs`).

    Args:
        body: A timm EfficientNet / MobileNetV2-style model with `conv_head` (features_only=False), or a module
            providing those two maps itself through `ssdlite_features(x)` and `ssdlite_channels` (the search's
            super network).
        extra_chs: Output widths of the extra blocks (FNA/SSDLite: 512, 256, 256, 128).
        norm_layer: Norm for the extra blocks.
    """

    def __init__(self, body: nn.Module, extra_chs: tuple[int, ...] = (512, 256, 256, 128),
                 norm_layer: Callable[..., nn.Module] = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)) -> None:
        super().__init__()
        self.body = body
        if hasattr(body, 'ssdlite_features'):
            self.tap = None
            tap_chs, head_chs = body.ssdlite_channels
        else:
            if not hasattr(body, 'blocks') or not isinstance(getattr(body, 'conv_head', None), nn.Conv2d):
                raise ValueError(f'SSDLite needs a timm EfficientNet-family model with a 1x1 head conv; got '
                                 f'{type(body).__name__} (an FNA arch needs head_chs, e.g. 1280)')
            self.tap = self._find_tap(body)
            tap_chs, head_chs = body.blocks[self.tap][0].conv_pw.out_channels, body.conv_head.out_channels
        self.extras = nn.ModuleList()
        prev = head_chs
        for c in extra_chs:
            self.extras.append(_extra_block(prev, c, norm_layer))
            prev = c
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.03)  # NOTE: FNA/torchvision SSDLite init for new layers
        self.out_channels = [tap_chs, head_chs, *extra_chs]

    @staticmethod
    def _find_tap(body: nn.Module) -> int:
        """Index of the stage whose first layer takes stride 16 to 32."""
        stride = body.conv_stem.stride[0]
        for si, stage in enumerate(body.blocks):
            first = stage[0]
            s = first.conv_dw.stride[0]
            if stride == 16 and s == 2:
                if not hasattr(first, 'conv_pwl'):
                    raise ValueError(f'the first layer of stage {si} has no expansion conv (an e1 op); SSDLite taps '
                                     'its expansion, expected an e3/e6 op there')
                return si
            stride *= s
        raise ValueError('backbone has no stride-16 to stride-32 stage for the SSDLite tap; expected output stride 32')

    def forward(self, x: torch.Tensor) -> 'OrderedDict[str, torch.Tensor]':
        feats = self.body.ssdlite_features(x) if self.tap is None else self._timm_features(x)
        x = feats[-1]
        for extra in self.extras:
            x = extra(x)
            feats.append(x)
        return OrderedDict((str(i), f) for i, f in enumerate(feats))

    def _timm_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[tapped expansion, head conv output] of a timm EfficientNet-family body."""
        m = self.body
        x = m.bn1(m.conv_stem(x))
        feats = []
        for si, stage in enumerate(m.blocks):
            if si != self.tap:
                x = stage(x)
                continue
            first = stage[0]
            # the tap layer, unrolled (timm InvertedResidual.forward) to expose its expansion output
            shortcut = x
            x = first.bn1(first.conv_pw(x))
            feats.append(x)
            x = first.bn3(first.conv_pwl(first.se(first.aa(first.bn2(first.conv_dw(x))))))
            if first.has_skip:
                x = first.drop_path(x) + shortcut
            for block in stage[1:]:
                x = block(x)
        feats.append(m.bn2(m.conv_head(x)))
        return feats

"""SSDLite on any timm EfficientNet-family / FNA backbone, with FNA's settings as defaults.

SSDLite: Sandler et al., `MobileNetV2: Inverted Residuals and Linear Bottlenecks` - https://arxiv.org/abs/1801.04381.
Settings of FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525, `fna_ssdlite_retrain.py`):
320x320 input; features: the 576-channel stride-16 expansion of the 96->160 stage's first layer, the
1x1-conv-to-1280 output and four depthwise-separable extra layers (512, 256, 256, 128); SSDLite heads
(depthwise 3x3 + BN + ReLU6, then 1x1) with 4/6/6/6/4/4 anchors per location, box sizes from 0.2 to 0.95;
softmax over classes + background; test score 0.02, NMS 0.6, 200 detections per image.

The heads' last 1x1 conv comes in two forms (`head_norm`): torchvision's `SSDLiteHead` ends each prediction
block in a biased 1x1 conv; FNA's `SSDLightHead` (kept in the code of Jung et al., ICPR 2022 -
https://arxiv.org/abs/2206.08509) ends it in a bias-free 1x1 conv + BN. At 81 classes and 320x320,
torchvision's form costs +206,040 MAdds (the bias adds) and -2,550 parameters (one bias instead of BN
gamma/beta per output channel) against FNA's; both round to the paper's 0.8B / 4.3M. The FNA configs
(`configs/ssdlite_retrain.yaml`, `configs/fna_ssdlite_search.yaml`) select FNA's form; the builder default
stays torchvision's so that checkpoints written before the option existed still load.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

from ..arch import Arch
from .backbones import SeedSpec, SSDLiteBackbone, create_backbone, input_normalization
from .registry import register_detector
from .spec import DetectorSpec

__all__ = ['SSDLite', 'build_ssdlite', 'SSDLITE']

DEFAULT_BACKBONE = 'fna_ssdlite_backbone'  # FNA's searched SSDLite backbone (with the 1x1 head conv to 1280)
IMAGE_SIZE = 320  # square input side (FNA / torchvision SSDLite320)


def _norm_prediction_convs(head: SSDLiteHead, norm_layer: Callable[..., nn.Module]) -> None:
    """Turn the last (biased) 1x1 conv of every prediction block of `head` into FNA's bias-free 1x1 conv + BN.

    The conv keeps its place (key `...module_list.<i>.1.weight`) and init; the BN is appended as
    `...module_list.<i>.2`, so the head's forward (and ONNX export) is unchanged apart from the BN.

    Args:
        head: A torchvision `SSDLiteHead`.
        norm_layer: The norm after each conv (FNA: BN with eps 1e-3).
    """
    for sub in (head.classification_head, head.regression_head):
        for block in sub.module_list:
            conv = block[1]
            new = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False)
            with torch.no_grad():
                new.weight.copy_(conv.weight)
            block[1] = new
            block.append(norm_layer(conv.out_channels))


class SSDLite(SSD):
    """torchvision SSD whose labels are 0..num_classes-1 like RetinaNet's (background is handled inside)."""

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        if targets is not None:
            targets = [{**t, 'labels': t['labels'] + 1} for t in targets]  # torchvision SSD: 0 is background
        out = super().forward(images, targets)
        if self.training or torch.jit.is_scripting():
            return out
        return [{**d, 'labels': d['labels'] - 1} for d in out]


def build_ssdlite(
        backbone: Arch | str | os.PathLike | nn.Module = DEFAULT_BACKBONE,
        *,
        num_classes: int = 80,
        seed_weights: SeedSpec = None,
        image_size: int = IMAGE_SIZE,
        extra_chs: tuple[int, ...] = (512, 256, 256, 128),
        score_thresh: float = 0.02,
        nms_thresh: float = 0.6,
        detections_per_img: int = 200,
        topk_candidates: int = 400,
        head_norm: bool = False,
        **kwargs: Any,
) -> SSDLite:
    """Build an SSDLite detector around an FNA arch (with a head conv) or a timm EfficientNet-family model.

    Args:
        backbone: An FNA arch (name, file, FNA string or `Arch`), a timm model name, or a ready backbone module.
        num_classes: Object classes, labels 0..num_classes-1 (the head has num_classes + 1 outputs).
        seed_weights: Seed weights remapped into the backbone: None, 'timm', a file or a state dict.
        image_size: Square input size.
        extra_chs: Widths of the extra layers.
        score_thresh: Test score threshold.
        nms_thresh: Test NMS IoU threshold.
        detections_per_img: Detections kept per image.
        topk_candidates: Candidates per class before NMS.
        head_norm: End the prediction blocks in FNA's bias-free 1x1 conv + BN (True) instead of torchvision's
            biased 1x1 conv (False); see the module docstring for the cost difference.
        **kwargs: Passed to torchvision `SSD`.
    """
    body = create_backbone(backbone, seed_weights)
    norm_layer = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)  # NOTE: FNA SSDLite: BN eps 1e-3
    features = SSDLiteBackbone(body, extra_chs, norm_layer)
    anchors = DefaultBoxGenerator([[2]] + [[2, 3]] * 3 + [[2]] * 2, min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(features.out_channels, anchors.num_anchors_per_location(), num_classes + 1, norm_layer)
    if head_norm:
        _norm_prediction_convs(head, norm_layer)
    mean, std = input_normalization(body)  # NOTE: the seed's (Lite0: 0.5, 0.5), so the transform feeds what it expects
    return SSDLite(
        features, anchors, (image_size, image_size), num_classes + 1, image_mean=mean, image_std=std, head=head,
        score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
        topk_candidates=topk_candidates, **kwargs,
    )


class _ExtrasNeck(nn.Module):
    """The extra layers of a built SSDLite on the backbone's two maps (tapped expansion, head conv output): those
    two maps and one more per extra layer, the maps its head reads.

    Args:
        extras: `SSDLiteBackbone.extras`.
    """

    def __init__(self, extras: nn.ModuleList) -> None:
        super().__init__()
        self.extras = extras

    def forward(self, *feats: torch.Tensor) -> list[torch.Tensor]:
        maps, x = list(feats), feats[-1]
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return maps


def _neck(detector: SSD) -> nn.Module:
    """The extra layers of a built SSDLite."""
    return _ExtrasNeck(detector.backbone.extras)


def _neck_inputs(detector: SSD, x: torch.Tensor) -> list[torch.Tensor]:
    """The tapped expansion and the head conv output of the backbone for an image batch."""
    return list(detector.backbone(x).values())[:2]


def _export_size(kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """The square input size (`image_size`)."""
    side = int(kwargs.get('image_size', IMAGE_SIZE))
    return side, side


# NOTE: detector_class is torchvision's SSD, not `SSDLite`, so a plain torchvision SSD post-processes as one too
SSDLITE = register_detector(DetectorSpec(
    name='ssdlite', label='SSDLite', build=build_ssdlite, detector_class=SSD,
    default_backbone=DEFAULT_BACKBONE, input_size=(IMAGE_SIZE, IMAGE_SIZE), size_kwarg='image_size',
    export_size=_export_size, train_recipe='ssd', neck=_neck, neck_inputs=_neck_inputs, score_mode='softmax',
    background_class=0, head_conv=True, taps_expansion=True,
))

"""RetinaNet with FPN on any timm / FNA backbone, with FNA's settings as defaults.

RetinaNet: Lin et al., `Focal Loss for Dense Object Detection` - https://arxiv.org/abs/1708.02002.
Settings of FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525, `fna_retinanet_fpn_retrain.py`):
FPN on strides 8/16/32 with P6 from C5 and P7 (5 levels), 4-conv heads, 9 anchors per location
(octave scale 4, 3 scales, ratios 0.5/1/2), focal loss (gamma 2, alpha 0.25), smooth-L1 (beta 1/9),
test score 0.05, NMS 0.5, 100 detections per image. Built on torchvision's RetinaNet (no compiled extras).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

from ..arch import Arch
from .backbones import FPNBackbone, SeedSpec, create_backbone, input_normalization
from .registry import register_detector
from .spec import DetectorSpec

__all__ = ['build_retinanet', 'RETINANET']

DEFAULT_BACKBONE = 'fna_retinanet_backbone'  # FNA's searched RetinaNet backbone
MAX_SIZE = 1333  # cap on the longer image side after resizing (FNA / torchvision)


def build_retinanet(
        backbone: Arch | str | os.PathLike | nn.Module = DEFAULT_BACKBONE,
        *,
        num_classes: int = 80,
        seed_weights: SeedSpec = None,
        head_width: int = 256,
        min_size: int = 800,
        max_size: int = MAX_SIZE,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
        out_indices: tuple[int, ...] = (2, 3, 4),
        anchor_size: int = 32,
        **kwargs: Any,
) -> RetinaNet:
    """Build a torchvision RetinaNet around an FNA arch or a timm model.

    Example::

        model = build_retinanet('fna_retinanet_backbone', seed_weights='mobilenetv2_100.pth', num_classes=80)
        model.eval(); detections = model([image])  # image: float tensor (3, H, W) in [0, 1]

    Args:
        backbone: An FNA arch (name, file, FNA string or `Arch`), a timm model name, or a ready backbone module.
        num_classes: Object classes (sigmoid outputs, no background class); labels are 0..num_classes-1.
        seed_weights: Seed weights remapped into the backbone: None, 'timm', a file or a state dict.
        head_width: FPN and head width (256 in the paper).
        min_size: Shorter image side after resizing (keeps the aspect ratio).
        max_size: Cap on the longer side.
        score_thresh: Test score threshold.
        nms_thresh: Test NMS IoU threshold.
        detections_per_img: Detections kept per image.
        topk_candidates: Candidates per level before NMS.
        out_indices: timm feature indices for C3-C5 (strides 8/16/32).
        anchor_size: Base anchor size on P3 (32: FNA's and torchvision's octave base scale 4 x stride 8), doubled
            on each further level, each with 3 octave scales and ratios 0.5/1/2. Halve it for objects mostly
            under 32 px after resizing.
        **kwargs: Passed to torchvision `RetinaNet`.
    """
    body = create_backbone(backbone, seed_weights, features_only=True, out_indices=out_indices)
    neck = FPNBackbone(body, head_width)
    # NOTE: the torchvision default (`_default_anchorgen`) at anchor_size 32; a box matches an anchor at IoU >= 0.5,
    # so with 32-px anchors a 20-px box (IoU 0.39 at best) gets no positive anchor and trains as background
    sizes = tuple(tuple(int(anchor_size * 2 ** i * 2 ** (k / 3)) for k in range(3)) for i in range(5))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RetinaNetHead(head_width, anchors.num_anchors_per_location()[0], num_classes)
    head.regression_head._loss_type = 'smooth_l1'  # NOTE: torchvision uses beta=1/9 for it, FNA's 0.11
    mean, std = input_normalization(body)  # NOTE: the seed's (Lite0: 0.5, 0.5), so the transform feeds what it expects
    return RetinaNet(
        neck, num_classes, min_size=min_size, max_size=max_size, image_mean=mean, image_std=std,
        anchor_generator=anchors, head=head, score_thresh=score_thresh, nms_thresh=nms_thresh,
        detections_per_img=detections_per_img, topk_candidates=topk_candidates, **kwargs,
    )


class _FPNNeck(nn.Module):
    """The FPN of a built RetinaNet on the backbone's C3-C5 maps: the P3-P7 maps its head reads.

    Args:
        fpn: `FPNBackbone.fpn`.
    """

    def __init__(self, fpn: nn.Module) -> None:
        super().__init__()
        self.fpn = fpn

    def forward(self, *feats: torch.Tensor) -> list[torch.Tensor]:
        return list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())


def _neck(detector: RetinaNet) -> nn.Module:
    """The FPN (with P6 / P7) of a built RetinaNet."""
    return _FPNNeck(detector.backbone.fpn)


def _neck_inputs(detector: RetinaNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The C3-C5 maps of the timm body for an image batch."""
    return list(detector.backbone.body(x))


def _export_size(kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """max_size rounded up to 32, square: holds any image resized to the min / max size, then letterboxed."""
    side = -(-int(kwargs.get('max_size', MAX_SIZE)) // 32) * 32
    return side, side


RETINANET = register_detector(DetectorSpec(
    name='retinanet', label='RetinaNet', build=build_retinanet, detector_class=RetinaNet,
    default_backbone=DEFAULT_BACKBONE, input_size=(800, 1088), size_kwarg=None, export_size=_export_size,
    train_recipe='plain', neck=_neck, neck_inputs=_neck_inputs, score_mode='sigmoid', background_class=None,
    head_conv=False, taps_expansion=False,
))

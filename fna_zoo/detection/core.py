"""The network part of a torchvision detector: preprocessed image batch in, raw head outputs out.

Used for counting (MAdds/params of backbone + neck + head, as the FNA papers count) and for export.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['DetectorCore']


class DetectorCore(nn.Module):
    """`head(backbone(x))` of a torchvision RetinaNet / SSD, without resizing, anchors or postprocessing.

    Args:
        detector: A torchvision RetinaNet or SSD (e.g. from `build_retinanet` / `build_ssdlite`).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (class logits [N, A, C], box regression [N, A, 4])."""
        out = self.head(list(self.backbone(x).values()))
        return out['cls_logits'], out['bbox_regression']

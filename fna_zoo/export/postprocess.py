"""Export-friendly detection postprocessing: box decoding, per-class NMS and top-k inside the graph.

torchvision's `postprocess_detections` loops over images in Python and keeps a data-dependent number of
boxes, which neither exporter can turn into a batch-dynamic graph. `DetectionPostprocess` computes the same
detections with static shapes everywhere except the NMS output: per-level (RetinaNet) or per-class (SSD)
top-k candidates, box decoding with the detector's `BoxCoder` weights over anchors fixed for one input size,
clipping, one ONNX `NonMaxSuppression` over the whole batch (classes kept apart by coordinate offsets),
then a padded top-`max_dets` per image. Outputs: `boxes [B, K, 4]` (x1, y1, x2, y2 in input-image pixels),
`scores [B, K]`, `labels [B, K]` (int64, -1 for padding) and `num_detections [B]` (int64).
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms

__all__ = ['NonMaxSuppression', 'DetectionPostprocess', 'detector_anchors', 'postprocess_for']

_logger = logging.getLogger(__name__)


class NonMaxSuppression(torch.autograd.Function):
    """ONNX `NonMaxSuppression` (single class, batched) with an eager implementation of the same semantics.

    Eager: per image, keep scores > `score_thresh`, greedy NMS (IoU > `iou_thresh` suppresses), at most
    `max_out` boxes in decreasing score order. Returns `selected [S, 3]` int64 rows (batch, 0, box index),
    as ONNX does.
    """

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_out: int, iou_thresh: float,
                score_thresh: float) -> torch.Tensor:  # noqa: D102
        rows = []
        for b in range(boxes.shape[0]):
            idx = torch.nonzero(scores[b, 0] > score_thresh).flatten()
            keep = idx[nms(boxes[b, idx], scores[b, 0, idx], iou_thresh)[:max_out]]
            rows.append(torch.stack([torch.full_like(keep, b), torch.zeros_like(keep), keep], dim=1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_out: int, iou_thresh: float, score_thresh: float):  # noqa: D102
        return g.op(
            'NonMaxSuppression', boxes, scores,
            g.op('Constant', value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op('Constant', value_t=torch.tensor([iou_thresh], dtype=torch.float32)),
            g.op('Constant', value_t=torch.tensor([score_thresh], dtype=torch.float32)),
            center_point_box_i=0,
        )


@torch.no_grad()
def detector_anchors(detector: nn.Module, image_size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
    """Anchors `[A, 4]` (xyxy, input pixels) of a torchvision RetinaNet / SSD for one input size, and the
    number of anchors per feature level.

    Args:
        detector: The detector (its backbone runs once on a zero image to get the feature map sizes).
        image_size: (H, W) of the network input.
    """
    was_training = detector.training
    detector.eval()
    x = torch.zeros(1, 3, *image_size)
    feats = list(detector.backbone(x).values())
    anchors = detector.anchor_generator(ImageList(x, [tuple(image_size)]), feats)[0]
    detector.train(was_training)
    per_loc = detector.anchor_generator.num_anchors_per_location()
    counts = [f.shape[-2] * f.shape[-1] * n for f, n in zip(feats, per_loc)]
    if sum(counts) != anchors.shape[0]:
        raise ValueError(f'anchor count {anchors.shape[0]} does not match the feature maps ({sum(counts)}); '
                         'expected a torchvision RetinaNet or SSD')
    return anchors, counts


class DetectionPostprocess(nn.Module):
    """Decode + top-k + NMS + pad, with static shapes (see the module docstring).

    Args:
        anchors: Anchors `[A, 4]` for the fixed input size.
        level_counts: Anchors per feature level (RetinaNet's top-k is per level).
        image_size: (H, W) of the network input; boxes are clipped to it.
        box_weights: `BoxCoder` weights (RetinaNet 1, 1, 1, 1; SSD 10, 10, 5, 5).
        bbox_xform_clip: `BoxCoder` clamp on dw / dh.
        score_mode: 'sigmoid' (RetinaNet, labels 0..C-1) or 'softmax' (SSD, logit 0 is the background).
        score_thresh: Keep scores above this.
        iou_thresh: NMS IoU threshold.
        max_dets: Detections per image (K).
        topk_candidates: Candidates per level ('sigmoid') or per class ('softmax') before NMS.
    """

    def __init__(self, anchors: torch.Tensor, level_counts: list[int], image_size: tuple[int, int],
                 box_weights: tuple[float, float, float, float], bbox_xform_clip: float,
                 score_mode: Literal['sigmoid', 'softmax'], score_thresh: float, iou_thresh: float, max_dets: int,
                 topk_candidates: int) -> None:
        super().__init__()
        if score_mode not in ('sigmoid', 'softmax'):
            raise ValueError(f"score_mode is {score_mode!r}; expected 'sigmoid' or 'softmax'")
        if not 0.0 <= score_thresh < 1.0:
            raise ValueError(f'score threshold is {score_thresh}; expected a value in [0, 1)')
        if not 0.0 < iou_thresh <= 1.0:
            raise ValueError(f'IoU threshold is {iou_thresh}; expected a value in (0, 1]')
        if max_dets < 1 or topk_candidates < 1:
            raise ValueError(f'max detections {max_dets} / top-k candidates {topk_candidates}; expected both >= 1')
        self.register_buffer('anchors', anchors.float().clone(), persistent=False)
        self.level_counts = list(level_counts)
        self.image_size = tuple(int(v) for v in image_size)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.bbox_xform_clip = float(bbox_xform_clip)
        self.score_mode = score_mode
        self.score_thresh, self.iou_thresh = float(score_thresh), float(iou_thresh)
        self.max_dets, self.topk_candidates = int(max_dets), int(topk_candidates)

    def decode(self, rel: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """torchvision `BoxCoder.decode_single` on `[..., 4]` tensors, clipped to the input image."""
        widths = anchors[..., 2] - anchors[..., 0]
        heights = anchors[..., 3] - anchors[..., 1]
        ctr_x = anchors[..., 0] + 0.5 * widths
        ctr_y = anchors[..., 1] + 0.5 * heights
        wx, wy, ww, wh = self.box_weights
        dx, dy = rel[..., 0] / wx, rel[..., 1] / wy
        dw = torch.clamp(rel[..., 2] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel[..., 3] / wh, max=self.bbox_xform_clip)
        cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
        half_w, half_h = 0.5 * torch.exp(dw) * widths, 0.5 * torch.exp(dh) * heights
        h, w = self.image_size
        x1, x2 = (cx - half_w).clamp(0, w), (cx + half_w).clamp(0, w)
        y1, y2 = (cy - half_h).clamp(0, h), (cy + half_h).clamp(0, h)
        return torch.stack([x1, y1, x2, y2], dim=-1)

    def _candidates(self, cls_logits: torch.Tensor, bbox_reg: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes [B, N, 4], scores [B, N], labels [B, N]) before NMS, N fixed by the input size."""
        if self.score_mode == 'sigmoid':  # RetinaNet: top-k over (anchor, class) pairs of each level
            num_classes = cls_logits.shape[-1]
            scores, anchor_idx, labels, start = [], [], [], 0
            for count in self.level_counts:
                s = torch.sigmoid(cls_logits[:, start:start + count]).flatten(1)
                v, i = s.topk(min(self.topk_candidates, count * num_classes), dim=1)
                scores.append(v)
                anchor_idx.append(torch.div(i, num_classes, rounding_mode='floor') + start)
                labels.append(i % num_classes)
                start += count
            scores_t, idx, labels_t = torch.cat(scores, 1), torch.cat(anchor_idx, 1), torch.cat(labels, 1)
            rel = torch.gather(bbox_reg, 1, idx.unsqueeze(-1).expand(-1, -1, 4))
            return self.decode(rel, self.anchors[idx]), scores_t, labels_t
        # SSD: softmax over background + classes, top-k anchors of each class
        probs = torch.softmax(cls_logits, dim=-1)[..., 1:].transpose(1, 2)  # [B, C, A]
        num_classes, num_anchors = probs.shape[1], probs.shape[2]
        v, i = probs.topk(min(self.topk_candidates, num_anchors), dim=2)  # [B, C, k]
        boxes = self.decode(bbox_reg, self.anchors.unsqueeze(0))  # [B, A, 4]
        labels = torch.arange(num_classes, device=v.device).view(1, -1, 1).expand_as(i)
        idx = i.flatten(1)
        return torch.gather(boxes, 1, idx.unsqueeze(-1).expand(-1, -1, 4)), v.flatten(1), labels.flatten(1)

    def forward(self, cls_logits: torch.Tensor, bbox_reg: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections from raw head outputs.

        Args:
            cls_logits: `[B, A, C]` (RetinaNet) or `[B, A, C + 1]` (SSD, background first).
            bbox_reg: `[B, A, 4]`.

        Returns:
            boxes `[B, K, 4]`, scores `[B, K]`, labels `[B, K]` (int64, -1 in padding), num_detections `[B]` (int64).
        """
        boxes, scores, labels = self._candidates(cls_logits, bbox_reg)
        k = self.max_dets
        # NOTE: one single-class NMS with each class shifted to its own coordinate range is per-class NMS
        # (torchvision's coordinate trick); boxes are clipped to the image, so max(H, W) + 1 separates classes.
        offsets = labels.to(boxes.dtype) * float(max(self.image_size) + 1)
        selected = NonMaxSuppression.apply(boxes + offsets.unsqueeze(-1), scores.unsqueeze(1), k,
                                           self.iou_thresh, self.score_thresh)
        num = scores.shape[1]
        flat = selected[:, 0] * num + selected[:, 2]  # [S] index into the flattened [B * N] candidates
        sel_scores = scores.flatten()[flat]
        sel_boxes = boxes.reshape(-1, 4)[flat]
        sel_labels = labels.flatten()[flat]
        batch = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1)
        # NOTE: a dense [B, S + K] score table (other images' rows and K pad columns at -1) makes the
        # per-image top-K a fixed-shape TopK; real scores are > score_thresh >= 0, so valid == score >= 0.
        pad = torch.zeros_like(scores[:, :1]).expand(-1, k) - 1.0
        dense = torch.cat([torch.where(selected[:, 0].unsqueeze(0) == batch, sel_scores.unsqueeze(0),
                                       torch.full_like(sel_scores, -1.0).unsqueeze(0)), pad], dim=1)
        top_scores, top_idx = dense.topk(k, dim=1)
        valid = top_scores >= 0
        all_boxes = torch.cat([sel_boxes, torch.zeros_like(boxes[0, :k])], dim=0)
        all_labels = torch.cat([sel_labels, torch.full_like(labels[0, :1], -1).expand(k)], dim=0)
        out_boxes = torch.where(valid.unsqueeze(-1), all_boxes[top_idx], torch.zeros_like(all_boxes[top_idx]))
        out_scores = torch.where(valid, top_scores, torch.zeros_like(top_scores))
        out_labels = torch.where(valid, all_labels[top_idx], torch.full_like(all_labels[top_idx], -1))
        return out_boxes, out_scores, out_labels, valid.sum(dim=1)


def postprocess_for(detector: nn.Module, image_size: tuple[int, int], score_thresh: float | None = None,
                    iou_thresh: float | None = None, max_dets: int | None = None) -> DetectionPostprocess:
    """The `DetectionPostprocess` equivalent of a torchvision RetinaNet / SSD's eval postprocessing (its score mode
    from the detector's spec, `fna_zoo.detection.spec_of`).

    Args:
        detector: A detector from `build_retinanet` / `build_ssdlite` (or a plain torchvision RetinaNet / SSD).
        image_size: (H, W) of the network input.
        score_thresh: Score threshold (default: the detector's).
        iou_thresh: NMS IoU threshold (default: the detector's).
        max_dets: Detections per image (default: the detector's).
    """
    from ..detection import spec_of

    mode = spec_of(detector).score_mode  # raises for a detector of no registered kind
    anchors, counts = detector_anchors(detector, image_size)
    coder = detector.box_coder
    return DetectionPostprocess(
        anchors, counts, image_size, tuple(coder.weights), coder.bbox_xform_clip, mode,
        detector.score_thresh if score_thresh is None else score_thresh,
        detector.nms_thresh if iou_thresh is None else iou_thresh,
        detector.detections_per_img if max_dets is None else max_dets,
        detector.topk_candidates,
    )

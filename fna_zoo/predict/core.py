"""What a detector's NMS outputs hold and how they are drawn: numpy and PIL only.

`fna-predict` (`fna_zoo.predict`) and `examples/predict_onnx.py` share these: the padded outputs of a detector with
in-graph NMS (`boxes [B, K, 4]`, `scores [B, K]`, `labels [B, K]`, `num_detections [B]`, the ONNX file's and the
eager export module's alike) cut to one image's detections, and the drawing of boxes with 'name score' tags.

NOTE: numpy, PIL and the standard library only, and no imports of the package: `examples/predict_onnx.py` loads
this file by its path, without importing `fna_zoo` (which imports torch and timm).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['PALETTE', 'MAX_DRAW_SCALE', 'image_detections', 'label_name', 'draw']

# NOTE: the drawing is the image enlarged this many times at most (a typo such as 100000 would allocate terabytes)
MAX_DRAW_SCALE = 32
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def image_detections(outputs: Sequence[np.ndarray], index: int = 0, score_thresh: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [N, 4] xyxy in network-input pixels, scores [N], labels [N]) of one image, score >= `score_thresh`.

    Args:
        outputs: The padded (boxes, scores, labels, num_detections) of a batch, as numpy arrays.
        index: The image in the batch.
        score_thresh: Keep detections scoring at least this.
    """
    boxes, scores, labels, num = (np.asarray(o) for o in outputs)
    n = int(num[index])
    boxes, scores, labels = boxes[index, :n].astype(np.float32), scores[index, :n].astype(np.float32), labels[index, :n]
    keep = scores >= score_thresh
    return boxes[keep], scores[keep], labels[keep].astype(np.int64)


def label_name(label: int, names: Sequence[str]) -> str:
    """The class name of a label (its number when `names` has none for it)."""
    return str(names[label]) if 0 <= label < len(names) else str(label)


def draw(image: Image.Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: Sequence[str],
         scale: int = 1) -> Image.Image:
    """The image (enlarged `scale` times) with boxes and 'name score' tags, the best detection drawn last.

    Args:
        image: The image the boxes are in.
        boxes: [N, 4] xyxy in the image's pixels.
        scores: [N] scores.
        labels: [N] labels (indices into `names`).
        names: Class names in label order (may be empty: label numbers are drawn).
        scale: Enlargement (nearest neighbour), for small images.
    """
    im = image.convert('RGB')
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    order = np.argsort(scores, kind='stable')  # the best detection is drawn last, on top
    for box, score, label in zip(boxes[order], scores[order], labels[order]):
        colour = PALETTE[int(label) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        d.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=2)
        tag = f'{label_name(int(label), names)} {score:.2f}'
        tw = d.textlength(tag)
        d.rectangle([x1, max(0, y1 - 11), x1 + tw + 2, max(11, y1)], fill=colour)
        d.text((x1 + 1, max(0, y1 - 11)), tag, fill=(0, 0, 0))
    return im

"""COCO bbox evaluation: run a detector over a dataset, write the detections json, score it.

Scores come from pycocotools' COCOeval, or faster-coco-eval's identical COCOeval_faster when installed
(same numbers, several times faster).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..fileio import atomic_write_text
from ..data import CocoDetection, collate
from .distributed import DistInfo, all_gather_objects

__all__ = ['STAT_NAMES', 'coco_evaluate', 'coco_results', 'predict', 'evaluate', 'format_stats']

_logger = logging.getLogger(__name__)
STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')


def format_stats(stats: dict[str, float]) -> str:
    """One line of COCO bbox metrics in percent, e.g. 'AP 31.2 | AP50 ...'.

    Args:
        stats: The metrics of `coco_evaluate` (fractions in [0, 1]).
    """
    return ' | '.join(f'{k} {100 * stats[k]:.1f}' for k in STAT_NAMES)


Backend = Literal['auto', 'pycocotools', 'faster_coco_eval']


def coco_evaluate(ann_file: str | os.PathLike, detections: list[dict[str, Any]] | str | os.PathLike,
                  backend: Backend = 'auto') -> dict[str, float]:
    """COCO bbox AP, AP50, AP75, APs, APm, APl (in [0, 1]; -1 where COCO has nothing to score).

    Args:
        ann_file: Ground-truth COCO annotation file.
        detections: COCO result entries (or a json file of them): image_id, category_id, bbox (xywh), score.
        backend: 'pycocotools', 'faster_coco_eval', or 'auto' (the latter when installed).
    """
    if not isinstance(detections, list):
        detections = json.loads(Path(detections).read_text())
    if not detections:
        _logger.warning('no detections to evaluate; AP is 0')
        return {k: 0.0 for k in STAT_NAMES}
    if backend == 'auto':
        try:
            import faster_coco_eval  # noqa: F401
            backend = 'faster_coco_eval'
        except ImportError:
            backend = 'pycocotools'
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # pycocotools prints its progress
        if backend == 'faster_coco_eval':
            from faster_coco_eval import COCO, COCOeval_faster as COCOeval
            kwargs = {'print_function': _logger.debug}
        elif backend == 'pycocotools':
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
            kwargs = {}
        else:
            raise ValueError(f"COCO eval backend {backend!r} is unknown; expected 'auto', 'pycocotools' or 'faster_coco_eval'")
        gt = COCO(str(ann_file))
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, 'bbox', **kwargs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    _logger.debug('%s', log.getvalue())
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats[:6])}


def coco_results(image_id: int, boxes: np.ndarray, scores: Sequence[float], labels: Sequence[int],
                 label_to_cat: Mapping[int, int]) -> list[dict[str, Any]]:
    """COCO result entries of one image's detections (bbox xywh rounded to 0.01 px, score to 1e-5).

    Args:
        image_id: The COCO image id.
        boxes: Boxes [N, 4] xyxy in the image's pixels.
        scores: Their scores.
        labels: Their labels (0..C-1).
        label_to_cat: Label -> COCO category id (`CocoDetection.label_to_cat`).
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # NOTE: in the boxes' dtype
    return [{'image_id': int(image_id), 'category_id': label_to_cat[int(label)],
             'bbox': [round(float(v), 2) for v in box], 'score': round(float(score), 5)}
            for box, score, label in zip(xywh, scores, labels)]


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: CocoDetection, batch_size: int, dist_info: DistInfo,
            workers: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Detections of `model` on every image of `dataset` as COCO result entries (gathered on every process).

    Args:
        model: A torchvision-style detector (eval mode is set here).
        dataset: The dataset (its `label_to_cat` maps labels to category ids).
        batch_size: Images per forward.
        dist_info: Process info; each process takes every world_size-th image.
        workers: DataLoader workers.
        progress: Show a progress bar on the main process.
    """
    model.eval()
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world_size))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    results: list[dict[str, Any]] = []
    for images, targets in tqdm(loader, desc='eval', disable=not (progress and dist_info.is_main), leave=False):
        outputs = model([im.to(dist_info.device) for im in images])
        for target, out in zip(targets, outputs):
            results += coco_results(int(target['image_id']), out['boxes'].cpu().numpy(), out['scores'].tolist(),
                                    out['labels'].tolist(), dataset.label_to_cat)
    gathered = all_gather_objects(results)
    return [r for part in gathered for r in part]


def evaluate(model: torch.nn.Module, dataset: CocoDetection, out_json: str | os.PathLike, batch_size: int,
             dist_info: DistInfo, workers: int = 0, backend: Backend = 'auto') -> dict[str, float]:
    """Predict, write the detections json (main process, atomically) and score it with COCO bbox metrics.

    Args:
        model: The detector.
        dataset: The evaluation dataset.
        out_json: Where to write the detections.
        batch_size: Images per forward.
        dist_info: Process info.
        workers: DataLoader workers.
        backend: COCO eval backend, see `coco_evaluate`.
    """
    detections = predict(model, dataset, batch_size, dist_info, workers)
    if not dist_info.is_main:
        return {}
    atomic_write_text(out_json, json.dumps(detections))
    return coco_evaluate(dataset.ann_file, detections, backend)

"""The parity gate: onnxruntime (the session recipe of `fna_zoo.runtime.ort`) against PyTorch on the same input.

Dense outputs (backbone features, raw head outputs) are compared element-wise. Detections are compared
after matching: detections with (nearly) tied scores can come out in a different order, and a detection
whose score sits at the cut-off (the K-th score, or the score threshold) can swap with its neighbour, so
each reference detection is matched to the closest unmatched detection of the same label and only those
boundary detections may stay unmatched.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..runtime.ort import ort_session

__all__ = ['ParityReport', 'run_onnx', 'compare_arrays', 'compare_arrays_scaled', 'compare_detections']

_logger = logging.getLogger(__name__)


@dataclass
class ParityReport:
    """Result of a comparison.

    Args:
        passed: Whether every measured difference is within tolerance.
        max_abs_diff: Largest absolute difference over all compared values (matched boxes and scores for detections).
        tolerance: The absolute tolerance applied.
        details: Per-output (or per-quantity) maximum differences and counts.
        measure: What `max_abs_diff` measures (`compare_arrays_scaled`: the difference over the output's range).
    """

    passed: bool
    max_abs_diff: float
    tolerance: float
    details: dict[str, float] = field(default_factory=dict)
    measure: str = 'max abs diff'

    def summary(self) -> str:
        """One line: verdict, tolerance, measured max abs diff (or `measure`) and the details."""
        parts = ', '.join(f'{k} {v:.3g}' if isinstance(v, float) else f'{k} {v}' for k, v in self.details.items())
        verdict = 'PASSED' if self.passed else 'FAILED'
        return f'parity {verdict}: {self.measure} {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}; {parts})'


def run_onnx(path: str | os.PathLike, images: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs (by name) of the ONNX model at `path` on `images` (a CPU session of the one recipe,
    `fna_zoo.runtime.ort.ort_session`; outputs copied into new arrays, no I/O binding).

    Args:
        path: The ONNX file (one input).
        images: The input batch.
    """
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: images})))


def compare_arrays(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], atol: float,
                   rtol: float = 0.0) -> ParityReport:
    """Element-wise comparison: passes when |out - ref| <= atol + rtol * |ref| everywhere.

    Args:
        ref: PyTorch outputs by name.
        out: onnxruntime outputs by name.
        atol: Absolute tolerance.
        rtol: Relative tolerance.
    """
    details: dict[str, float] = {}
    passed = True
    for name, diff, r in _diffs(ref, out):
        if diff is None:  # the shapes differ
            details[name], passed = np.inf, False
            continue
        details[name] = float(diff.max()) if diff.size else 0.0
        passed &= bool(np.all(diff <= atol + rtol * np.abs(r)))
    return ParityReport(passed, max(details.values(), default=0.0), atol, details)


def _diffs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]):
    """(name, |out - ref| in float64 or None where the shapes differ, ref) for every reference output."""
    for name, r in ref.items():
        if name not in out:
            raise ValueError(f'onnxruntime output {name!r} is missing; expected outputs {sorted(ref)}')
        o = out[name]
        yield name, (np.abs(o.astype(np.float64) - r.astype(np.float64)) if o.shape == r.shape else None), r


def compare_arrays_scaled(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], tol: float) -> ParityReport:
    """Element-wise comparison relative to each output's range, for reduced precision (fp16): passes when
    max |out - ref| <= tol * max(1, max |ref|) for every output.

    NOTE: fp16 keeps ~3 significant digits, so an absolute tolerance fit for one feature level (values ~1) is
    either too strict or meaningless for another (values ~100); the error of a fp16 network grows with the
    magnitude of what it computes, which this measure follows.

    Args:
        ref: PyTorch (float32) outputs by name.
        out: The reduced-precision outputs by name.
        tol: Largest difference as a fraction of the output's range (at least 1).
    """
    details: dict[str, float] = {}
    for name, diff, r in _diffs(ref, out):
        scale = max(1.0, float(np.abs(r).max()) if r.size else 1.0)
        d = (float(diff.max()) / scale if diff.size else 0.0) if diff is not None else np.inf
        details[name] = d if np.isfinite(d) else float('inf')  # NaN or inf where PyTorch has a number (fp16 overflow)
    worst = max(details.values(), default=0.0)
    return ParityReport(bool(worst <= tol), worst, tol, details, measure='max diff / output range')


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a [N, 4] and b [M, 4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _match_image(rb: np.ndarray, rs: np.ndarray, rl: np.ndarray, ob: np.ndarray, os_: np.ndarray, ol: np.ndarray,
                 score_tol: float, box_tol: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy matching (reference in score order) to the closest unmatched detection with the same label,
    a score within `score_tol` and every coordinate within `box_tol`."""
    used = np.zeros(len(ob), dtype=bool)
    pairs, unmatched = [], []
    for i in np.argsort(-rs, kind='stable'):
        cand = np.flatnonzero((ol == rl[i]) & ~used & (np.abs(os_ - rs[i]) <= score_tol))
        dist = np.abs(ob[cand] - rb[i]).max(axis=1) if cand.size else np.zeros(0)
        if cand.size == 0 or dist.min() > box_tol:
            unmatched.append(int(i))
            continue
        j = int(cand[np.argmin(dist)])
        used[j] = True
        pairs.append((int(i), j))
    return pairs, unmatched, [int(j) for j in np.flatnonzero(~used)]


def compare_detections(ref: Sequence[np.ndarray], out: Sequence[np.ndarray], atol: float, score_thresh: float,
                       iou_thresh: float, box_atol: float | None = None, max_swap_frac: float = 0.1,
                       max_unexplained_frac: float = 0.0) -> ParityReport:
    """Compare padded detections `(boxes [B,K,4], scores [B,K], labels [B,K], num_detections [B])` after matching.

    Unmatched detections are allowed where they are explained by a near-tie: at the cut-off (score within
    `atol` of the lowest kept score when all K slots are used, or of `score_thresh`), or an NMS flip (they
    overlap an unmatched same-label detection of the other side by more than `iou_thresh`: two overlapping
    boxes of nearly equal score kept in the opposite order, and what each then suppresses). At most
    `max_swap_frac` of the detections may be explained that way.

    Args:
        ref: PyTorch detections.
        out: onnxruntime detections.
        atol: Score tolerance.
        score_thresh: The score threshold used by both.
        iou_thresh: The NMS IoU threshold used by both.
        box_atol: Box coordinate tolerance in pixels (default: max(atol, 1e-4) times the largest coordinate).
        max_swap_frac: Largest fraction of near-tie (unmatched but explained) detections.
        max_unexplained_frac: Largest fraction of unmatched detections no rule above explains (0 for float32;
            reduced precision also moves candidates across cut-offs the outputs do not show, such as RetinaNet's
            per-level top-k of candidates before NMS).
    """
    rboxes, rscores, rlabels, rnum = (np.asarray(a) for a in ref)
    oboxes, oscores, olabels, onum = (np.asarray(a) for a in out)
    if rboxes.shape != oboxes.shape or rnum.shape != onum.shape:
        return ParityReport(False, float('inf'), atol, {'shape mismatch': float('inf')})
    k = rscores.shape[1]
    scale = max(1.0, float(np.abs(rboxes).max()) if rboxes.size else 1.0)
    box_tol = box_atol if box_atol is not None else max(atol, 1e-4) * scale
    max_box, max_score, n_swaps, n_bad, n_ref = 0.0, 0.0, 0, 0, 0
    for b in range(rscores.shape[0]):
        nr, no = int(rnum[b]), int(onum[b])
        n_ref += nr
        rb, rs, rl = rboxes[b, :nr], rscores[b, :nr], rlabels[b, :nr]
        ob, os_, ol = oboxes[b, :no], oscores[b, :no], olabels[b, :no]
        pairs, miss_r, miss_o = _match_image(rb, rs, rl, ob, os_, ol, atol, box_tol)
        for i, j in pairs:
            max_box = max(max_box, float(np.abs(rb[i] - ob[j]).max()))
            max_score = max(max_score, float(abs(rs[i] - os_[j])))
        cut = min(rs.min() if nr == k else np.inf, os_.min() if no == k else np.inf)
        for mine, other, lab_m, lab_o, scores_m in ((rb[miss_r], ob[miss_o], rl[miss_r], ol[miss_o], rs[miss_r]),
                                                    (ob[miss_o], rb[miss_r], ol[miss_o], rl[miss_r], os_[miss_o])):
            if not len(mine):
                continue
            flip = ((_iou(mine, other) > iou_thresh) & (lab_m[:, None] == lab_o[None, :])).any(axis=1) \
                if len(other) else np.zeros(len(mine), dtype=bool)
            edge = (np.abs(scores_m - cut) <= atol) | (np.abs(scores_m - score_thresh) <= atol)
            n_swaps += int((flip | edge).sum())
            n_bad += int((~(flip | edge)).sum())
    details = {'detections': n_ref, 'box max diff': max_box, 'score max diff': max_score,
               'near-tie swaps': n_swaps, 'unexplained': n_bad}
    passed = (n_bad <= max_unexplained_frac * max(n_ref, 1) and n_swaps <= max_swap_frac * max(n_ref, 1)
              and max_box <= box_tol and max_score <= atol)
    return ParityReport(passed, max(max_box, max_score), atol, details)

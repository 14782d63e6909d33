"""ONNX export of FNA / timm backbones and retrained detectors, with the checker, metadata and a parity gate.

What can be exported (`ExportTarget`):

* ``backbone``: image batch in, one named feature map per level out (`feat_s8`, `feat_s16`, ...);
  dynamic batch and image size.
* ``raw``: a retrained RetinaNet / SSDLite's head outputs, `cls_logits [B, A, C]` (SSD: C + 1, background
  first), `bbox_regression [B, A, 4]` and the `anchors [B, A, 4]` (xyxy, input pixels) they are relative to;
  fixed image size (the anchors depend on it), dynamic batch.
* ``nms``: the same detector with box decoding, per-class NMS (ONNX `NonMaxSuppression`) and top-K in the
  graph (`fna_zoo.export.postprocess`): `boxes [B, K, 4]`, `scores [B, K]`, `labels [B, K]`, `num_detections [B]`.

Every export takes a float RGB batch `images [B, 3, H, W]` in [0, 1]; the mean/std normalisation is in the
graph, so a deployment needs no torch. The file records what it is in `metadata_props` (see `metadata_of`).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_path
from ..runtime.runners import DEFAULT_OPSET
from ..specs import arch_string, seed_network, timm_name
from .parity import ParityReport, compare_arrays, compare_detections, run_onnx
from .postprocess import detector_anchors, postprocess_for

__all__ = ['What', 'DEFAULT_OPSET', 'ExportTarget', 'backbone_target', 'detector_target', 'backbone_module_target',
           'detector_module_target', 'load_detector', 'export_onnx', 'export_with_gate', 'metadata_of']

_logger = logging.getLogger(__name__)

What = Literal['backbone', 'raw', 'nms']
MIN_OPSET, MAX_OPSET = 11, 20  # NonMaxSuppression needs 11; the TorchScript exporter stops at 20


class Normalize(nn.Module):
    """(x - mean) / std per channel, x in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BackboneExport(nn.Module):
    """Normalisation + a timm `features_only` model; returns the feature maps as a tuple."""

    def __init__(self, body: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.body(self.normalize(images)))


class RawDetectorExport(nn.Module):
    """Normalisation + backbone + head of a torchvision RetinaNet / SSD; returns (cls_logits, bbox_regression, anchors)."""

    def __init__(self, detector: nn.Module, anchors: torch.Tensor) -> None:
        super().__init__()
        from ..detection import DetectorCore

        t = detector.transform
        self.normalize = Normalize(t.image_mean, t.image_std)
        self.core = DetectorCore(detector)
        self.register_buffer('anchors', anchors.float().clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls_logits, bbox_reg = self.core(self.normalize(images))
        # NOTE: a constant graph output cannot be traced; broadcasting the anchors over the batch makes them
        # an ordinary output (same leading dims as bbox_regression, 16 bytes per anchor and image).
        return cls_logits, bbox_reg, self.anchors.unsqueeze(0).expand(images.shape[0], -1, -1)


class NMSDetectorExport(nn.Module):
    """Normalisation + backbone + head + `DetectionPostprocess`; returns (boxes, scores, labels, num_detections)."""

    def __init__(self, detector: nn.Module, postprocess: nn.Module) -> None:
        super().__init__()
        from ..detection import DetectorCore

        t = detector.transform
        self.normalize = Normalize(t.image_mean, t.image_std)
        self.core = DetectorCore(detector)
        self.postprocess = postprocess

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.postprocess(*self.core(self.normalize(images)))


@dataclass
class ExportTarget:
    """A module ready to export and what the exported file should say about it.

    Args:
        module: The eval-mode module (`images [B, 3, H, W]` in [0, 1] in).
        what: 'backbone', 'raw' or 'nms'.
        input_size: (H, W) used for tracing (and fixed in the graph unless `dynamic_size`).
        output_names: Names of the outputs, in order.
        dynamic_size: Whether H and W may vary at run time (backbones).
        metadata: Extra `metadata_props` (strings).
        score_thresh: For 'nms': the score threshold (used by the parity matching).
        iou_thresh: For 'nms': the NMS IoU threshold.
    """

    module: nn.Module
    what: What
    input_size: tuple[int, int]
    output_names: list[str]
    dynamic_size: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    score_thresh: float = 0.0
    iou_thresh: float = 0.5


def _meta_list(values: Sequence[float]) -> str:
    return json.dumps([round(float(v), 6) for v in values])


def backbone_target(spec: Any, seed_weights: Any = None, out_indices: Sequence[int] | None = None,
                    input_size: tuple[int, int] = (224, 224), name: str | None = None) -> ExportTarget:
    """A feature extractor to export: an FNA arch (name, file, FNA string, `Arch`) or any timm model name.

    Args:
        spec: The backbone; 'timm:<name>' takes timm's own model even where a zoo arch has that name.
        seed_weights: Seed weights ('timm', a file or None for random init; see `fna_zoo.detection.resolve_seed`).
        out_indices: timm feature indices (default: strides 4, 8, 16, 32).
        input_size: (H, W) used for tracing; the exported file accepts any size (multiples of 32).
        name: How to name the backbone in the metadata (default: `spec` when it is a string).
    """
    from ..builder import DETECTION_OUT_INDICES
    from ..detection import create_backbone
    from ..detection.backbones import input_normalization

    indices = tuple(out_indices) if out_indices else DETECTION_OUT_INDICES
    forced = timm_name(spec)
    if forced is not None:  # timm's own model even where an arch has the name
        import timm

        kwargs = {'pretrained': True} if seed_weights == 'timm' else {}
        body = timm.create_model(forced, features_only=True, out_indices=indices, **kwargs).eval()
    else:
        body = create_backbone(spec, seed_weights, features_only=True, out_indices=indices).eval()
    mean, std = input_normalization(body)  # the seed's, from the pretrained cfg (as the detectors normalise)
    names = [f'feat_s{r}' for r in body.feature_info.reduction()]
    meta = {'arch': arch_string(spec), 'backbone': name or (spec if isinstance(spec, str) else 'arch'),
            'seed_network': seed_network(spec), 'seed_weights': str(seed_weights),
            'mean': _meta_list(mean), 'std': _meta_list(std), 'feature_channels': json.dumps(body.feature_info.channels())}
    return ExportTarget(BackboneExport(body, mean, std).eval(), 'backbone', tuple(input_size), names,
                        dynamic_size=True, metadata=meta)


def load_detector(checkpoint: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a retrained detector (eval mode) from a checkpoint of `fna-retrain`.

    Args:
        checkpoint: final.pth / last.pth.

    Returns:
        (detector, checkpoint state without the weights).
    """
    from ..checkpoint import read_checkpoint
    from ..detection import build_model

    ckpt = read_checkpoint(checkpoint)
    cfg = ckpt.model_config()
    if 'detector' not in cfg or not isinstance(cfg.get('model'), dict):
        raise ValueError(f'checkpoint {str(checkpoint)!r} has no detector config; expected a checkpoint written by '
                         'fna-retrain')
    num_classes = ckpt.num_classes
    if not num_classes:
        raise ValueError(f'checkpoint {str(checkpoint)!r} records no class count; expected a num_classes entry')
    model = build_model(cfg, int(num_classes), with_seed=False)
    try:
        model.load_state_dict(ckpt.weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f'checkpoint {str(checkpoint)!r} weights do not fit its config ({first}); expected the '
                         'weights of the configured detector') from None
    state = {k: v for k, v in ckpt.state.items() if k not in ('optimizer', 'rng')}
    state.update(config=ckpt.config, num_classes=int(num_classes), arch=ckpt.arch)
    return model.eval(), state


def _class_names(cfg: dict[str, Any], num_classes: int) -> list[str] | None:
    """Class names in label order from the run's data (the built-in set's names, or the COCO val
    annotations' categories when that file is at hand); None when unknown."""
    data = cfg.get('data') or {}
    try:
        if data.get('path') is None:
            from ..data import CLASSES

            names = [c[0] for c in CLASSES[:num_classes]]
        else:
            from ..assets.store import resolve_asset

            ann = resolve_asset(data['path']) / 'annotations' / f"instances_{data.get('val_split', 'val2017')}.json"
            if not ann.is_file():
                return None
            cats = sorted(json.loads(ann.read_text())['categories'], key=lambda c: c['id'])
            names = [str(c.get('name', c['id'])) for c in cats]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if len(names) == num_classes else None


def default_detector_size(detector: nn.Module) -> tuple[int, int]:
    """The fixed export size of a detector: SSD's image size; RetinaNet's max_size (rounded up to 32), square,
    which holds any image resized to the detector's min/max size after letterboxing."""
    t = detector.transform
    if t.fixed_size is not None:  # SSD
        return int(t.fixed_size[0]), int(t.fixed_size[1])
    side = -(-int(t.max_size) // 32) * 32
    return side, side


def detector_target(checkpoint: str | os.PathLike, what: What = 'nms', input_size: tuple[int, int] | None = None,
                    score_thresh: float | None = None, iou_thresh: float | None = None,
                    max_dets: int | None = None) -> ExportTarget:
    """A retrained detector to export, raw head outputs or with in-graph NMS.

    Args:
        checkpoint: A retrain checkpoint (RetinaNet or SSDLite).
        what: 'raw' or 'nms'.
        input_size: Fixed (H, W) (default: see `default_detector_size`).
        score_thresh: Score threshold (default: the detector's).
        iou_thresh: NMS IoU threshold (default: the detector's).
        max_dets: Detections per image (default: the detector's).
    """
    if what not in ('raw', 'nms'):
        raise ValueError(f"--what {what!r} is not a detector export; expected 'raw' or 'nms'")
    detector, state = load_detector(checkpoint)
    cfg = state['config']
    configured = cfg['model']['backbone'] or get_detector_spec(cfg['detector']).default_backbone
    backbone = state.get('arch') or configured  # the arch stored in the checkpoint, when it has one
    meta = {'arch': arch_string(backbone), 'backbone': str(configured),
            'seed_network': seed_network(backbone), 'seed_weights': str(cfg['model'].get('seed_weights')),
            'train_seed': str(cfg.get('seed')), 'num_classes': str(state['num_classes']),
            'checkpoint_step': str(state.get('step'))}
    names = _class_names(cfg, state['num_classes'])
    if names:
        meta['class_names'] = json.dumps(names)
    return detector_module_target(detector, what, input_size, score_thresh, iou_thresh, max_dets, metadata=meta)


def get_detector_spec(name: str) -> Any:
    """The `DetectorSpec` registered under `name` (`fna_zoo.detection.get_detector`)."""
    from ..detection import get_detector

    return get_detector(name)


def detector_module_target(detector: nn.Module, what: What = 'nms', input_size: tuple[int, int] | None = None,
                           score_thresh: float | None = None, iou_thresh: float | None = None,
                           max_dets: int | None = None, metadata: dict[str, str] | None = None) -> ExportTarget:
    """A built detector (a registered RetinaNet / SSDLite module, e.g. `build_model`'s) to export.

    Args:
        detector: The detector (put in eval mode).
        what: 'raw' or 'nms'.
        input_size: Fixed (H, W) (default: see `default_detector_size`).
        score_thresh: Score threshold (default: the detector's).
        iou_thresh: NMS IoU threshold (default: the detector's).
        max_dets: Detections per image (default: the detector's).
        metadata: More `metadata_props` (a checkpoint's arch, classes, step).
    """
    if what not in ('raw', 'nms'):
        raise ValueError(f"--what {what!r} is not a detector export; expected 'raw' or 'nms'")
    from ..detection import spec_of

    detector = detector.eval()
    spec = spec_of(detector)
    size = tuple(input_size) if input_size else default_detector_size(detector)
    t = detector.transform
    meta = {'detector': spec.name, 'mean': _meta_list(t.image_mean), 'std': _meta_list(t.image_std),
            'resize': 'stretch' if t.fixed_size is not None else 'letterbox'}
    classes = getattr(getattr(detector.head, 'classification_head', None), 'num_classes', None)
    if classes is not None:
        # NOTE: SSD's head counts the background class; the zoo's num_classes does not
        meta['num_classes'] = str(int(classes) - (spec.background_class is not None))
    meta.update(metadata or {})
    if what == 'raw':
        anchors, _ = detector_anchors(detector, size)
        module = RawDetectorExport(detector, anchors)
        meta['background_class'] = 'none' if spec.background_class is None else str(spec.background_class)
        meta['box_coder_weights'] = _meta_list(detector.box_coder.weights)
        return ExportTarget(module.eval(), 'raw', size, ['cls_logits', 'bbox_regression', 'anchors'], metadata=meta)
    pp = postprocess_for(detector, size, score_thresh, iou_thresh, max_dets)
    meta.update(score_thresh=str(pp.score_thresh), iou_thresh=str(pp.iou_thresh), max_dets=str(pp.max_dets),
                box_format='xyxy (input pixels)')
    return ExportTarget(NMSDetectorExport(detector, pp).eval(), 'nms', size,
                        ['boxes', 'scores', 'labels', 'num_detections'], metadata=meta,
                        score_thresh=pp.score_thresh, iou_thresh=pp.iou_thresh)


def backbone_module_target(body: nn.Module, input_size: tuple[int, int] = (224, 224), name: str | None = None
                           ) -> ExportTarget:
    """A built feature extractor (a timm `features_only` model, e.g. `create_backbone(..., features_only=True)`)
    to export.

    Args:
        body: The backbone (put in eval mode); its `feature_info` names the outputs.
        input_size: (H, W) used for tracing; the file accepts any size.
        name: How to name it in the metadata (default: its class name).
    """
    from ..detection.backbones import input_normalization

    info = getattr(body, 'feature_info', None)
    if info is None or not hasattr(info, 'reduction'):
        raise ValueError(f'module {type(body).__name__} has no timm feature_info; expected a features_only backbone '
                         '(timm.create_model(..., features_only=True)) or a RetinaNet / SSDLite detector')
    mean, std = input_normalization(body)
    names = [f'feat_s{r}' for r in info.reduction()]
    meta = {'backbone': name or type(body).__name__, 'mean': _meta_list(mean), 'std': _meta_list(std),
            'feature_channels': json.dumps(info.channels())}
    return ExportTarget(BackboneExport(body.eval(), mean, std).eval(), 'backbone', tuple(input_size), names,
                        dynamic_size=True, metadata=meta)


def metadata_of(path: str | os.PathLike) -> dict[str, str]:
    """The `metadata_props` of an ONNX file.

    Args:
        path: The ONNX file.
    """
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def export_onnx(target: ExportTarget, path: str | os.PathLike, batch: int = 1, dynamic: bool = True,
                opset: int = DEFAULT_OPSET, simplify: bool = False) -> Path:
    """Export `target` to one ONNX file, check it and write its metadata (no parity check; see `export_with_gate`).

    Args:
        target: What to export.
        path: Output file (written directly; `export_with_gate` passes a temp name).
        batch: Batch size used for tracing.
        dynamic: Dynamic batch dimension (and H/W for backbones).
        opset: ONNX opset.
        simplify: Run onnxslim on the result.
    """
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f'opset {opset} is unsupported; expected {MIN_OPSET}..{MAX_OPSET}')
    path = Path(path)
    x = torch.rand(batch, 3, *target.input_size, generator=torch.Generator().manual_seed(0))
    dynamic_axes = None
    if dynamic:
        dims = {0: 'batch', 2: 'height', 3: 'width'} if target.dynamic_size else {0: 'batch'}
        dynamic_axes = {'images': dims}
        for name in target.output_names:
            dynamic_axes[name] = {0: 'batch'}
    # NOTE: the TorchScript (dynamo=False) exporter is used on purpose: it writes a single file (no external
    # data), exports `NonMaxSuppression.symbolic` as one ONNX node with dynamic batch, and takes ~2 s instead of
    # 10-30 s for the dynamo exporter (deps.md section 3, same ORT outputs). Its deprecation and tracer
    # warnings are expected here and silenced.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        torch.onnx.export(target.module, (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=['images'], output_names=target.output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    if simplify:
        _simplify(path)
    model = onnx.load(str(path))
    meta = {'fna_zoo.what': target.what, 'input_size': f'{target.input_size[0]},{target.input_size[1]}',
            'dynamic_batch': str(bool(dynamic)).lower(), 'dynamic_size': str(bool(dynamic and target.dynamic_size)).lower(),
            'input': 'images: float32 RGB NCHW in [0, 1] (normalisation inside)', 'opset': str(opset),
            'outputs': json.dumps(target.output_names), 'exporter': f'torch.onnx TorchScript {torch.__version__}',
            **target.metadata}
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    model.producer_name = 'fna_zoo.export'
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _simplify(path: Path) -> None:
    try:
        import onnxslim
    except ImportError:
        raise ValueError("--simplify needs onnxslim; install it with pip install 'fna-zoo[slim]' (or onnxslim)") from None
    import onnx

    before = onnx.load(str(path))
    n_before = len(before.graph.node)
    slim = onnxslim.slim(before)
    onnx.save(slim, str(path))
    _logger.info('onnxslim: %d -> %d nodes', n_before, len(slim.graph.node))


def parity_check(target: ExportTarget, path: str | os.PathLike, batch: int, atol: float, rtol: float = 1e-3,
                 run: Callable[[str | os.PathLike, np.ndarray], dict[str, np.ndarray]] = run_onnx) -> ParityReport:
    """onnxruntime vs PyTorch on the same seeded input in [0, 1] (detections matched, see `parity`).

    Args:
        target: The exported target (its module is the PyTorch reference).
        path: The ONNX file.
        batch: Batch size to compare at.
        atol: Absolute tolerance (scores and features; boxes: see `compare_detections`).
        rtol: Relative tolerance for dense outputs.
        run: (file, input batch) -> outputs by name (default: onnxruntime; an OpenVINO file's runner).
    """
    ref, out = reference_and_onnx(target, path, batch, run)
    if target.what == 'nms':
        return compare_detections(ref, [out[n] for n in target.output_names], atol, target.score_thresh,
                                  target.iou_thresh)
    return compare_arrays(dict(zip(target.output_names, ref)), out, atol, rtol)


def reference_and_onnx(target: ExportTarget, path: str | os.PathLike, batch: int,
                       run: Callable[[str | os.PathLike, np.ndarray], dict[str, np.ndarray]] = run_onnx
                       ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """(PyTorch outputs, onnxruntime outputs by name) of the target and its file on one seeded input in [0, 1].

    Args:
        target: The exported target (its module is the reference).
        path: The ONNX file.
        batch: Batch size.
        run: (file, input batch) -> outputs by name (default: onnxruntime).
    """
    x = torch.rand(batch, 3, *target.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = [t.numpy() for t in target.module(x)]
    return ref, run(path, x.numpy())


def export_with_gate(target: ExportTarget, output: str | os.PathLike, batch: int = 1, dynamic: bool = True,
                     opset: int = DEFAULT_OPSET, simplify: bool = False, atol: float = 1e-3,
                     check_batches: Sequence[int] | None = None) -> tuple[Path | None, list[tuple[int, ParityReport]]]:
    """Export to a temp file beside `output`, compare onnxruntime with PyTorch, then rename into place.

    On a parity failure nothing is left at `output` (and the temp file is removed).

    Args:
        target: What to export.
        output: Final ONNX path.
        batch: Export (trace) batch size.
        dynamic: Dynamic batch (and H/W for backbones).
        opset: ONNX opset.
        simplify: Run onnxslim.
        atol: Parity tolerance.
        check_batches: Batch sizes to compare at (default: the export batch, plus batch + 2 when dynamic).

    Returns:
        (the output path, or None when parity failed; the reports by batch size).
    """
    batches = list(check_batches) if check_batches else ([batch, batch + 2] if dynamic else [batch])
    reports: list[tuple[int, ParityReport]] = []
    try:
        with atomic_path(output, suffix='.tmp.onnx') as tmp:
            export_onnx(target, tmp, batch, dynamic, opset, simplify)
            reports = [(b, parity_check(target, tmp, b, atol)) for b in batches]
            if not all(r.passed for _, r in reports):
                raise _ParityFailed
    except _ParityFailed:
        return None, reports  # the temp file is gone; nothing at `output`
    return Path(output), reports


class _ParityFailed(Exception):
    """Internal: leaves `atomic_path` without renaming the rejected file into place."""


def example_input(target: ExportTarget, batch: int = 1) -> np.ndarray:
    """A seeded input batch in [0, 1] for `target`."""
    return torch.rand(batch, 3, *target.input_size, generator=torch.Generator().manual_seed(1)).numpy()

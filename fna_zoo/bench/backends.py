"""The cells of the benchmark grid: a model, what of it (backbone, or detector without NMS), a runtime, a batch
and an input size, made into a `Runner` of `fna_zoo.runtime`.

A model is a zoo arch name, an arch file, a timm name (`timm:NAME` forces timm's own model), a retrain checkpoint
(.pth, a detector) or an .onnx file. `Grid` resolves it into a module (and an ONNX file, exported once through
`fna_zoo.export` with its parity check) and hands it to the runtime's plugin (`fna_zoo.runtime.registry`): the
PyTorch runtimes get the module (eager fp32; fp16 on CUDA; torch.compile), every other runtime the ONNX file
(onnxruntime: the one session recipe, I/O binding; TensorRT: strongly typed engines, fp16 from the mixed-precision
copy, INT8 from a QDQ file, on CUDA; OpenVINO on the CPU; the fp32 export, or the given ONNX file, e.g. an INT8
one). Runtime names are those of `fna_zoo.runtime.names` (old backend names such as `eager` or `ort` are aliases).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..runtime.names import RUNTIMES, canonical_runtime
from ..runtime.registry import PLUGINS
from ..runtime.runners import Runner
from ..specs import ModelSpec, arch_id, resolve_model, timm_name

__all__ = ['RUNTIMES', 'WHAT', 'ModelSpec', 'Runner', 'Grid', 'resolve_model', 'canonical_what', 'arch_id']

_logger = logging.getLogger(__name__)

# what to time -> its canonical name ('detector' is the old name of 'raw')
WHAT = {'backbone': 'backbone', 'raw': 'raw', 'detector': 'raw'}


def canonical_what(what: str) -> str:
    """'backbone' or 'raw' (the detector without NMS) of `what` ('detector' is an alias of 'raw').

    Args:
        what: 'backbone', 'raw' or 'detector'.
    """
    if what not in WHAT:
        raise ValueError(f"--what {what!r} is unknown; expected 'backbone' or 'raw' ('detector' is an alias of raw)")
    return WHAT[what]


def _target(src: ModelSpec, what: str, size: tuple[int, int], detector: str):
    """The `ExportTarget` (module + metadata) of a model: a backbone, or a detector without NMS."""
    from ..export.onnx_export import ExportTarget, RawDetectorExport, backbone_target, detector_target

    if src.kind == 'checkpoint':
        if what != 'raw':
            raise ValueError(f'{src.name!r} is a detector checkpoint; expected --what raw for it')
        return detector_target(src.spec, 'raw', input_size=size)
    if what == 'backbone':
        return backbone_target(src.spec, input_size=size, name=src.name)
    from ..detection import get_detector
    from ..export.postprocess import detector_anchors

    spec = timm_name(src.spec) or src.spec
    det_spec = get_detector(detector)
    torch.manual_seed(0)
    kwargs = {det_spec.size_kwarg: size} if det_spec.size_kwarg else {}  # a fixed-size detector is built at `size`
    model = det_spec.build(backbone=spec, num_classes=80, **kwargs).eval()
    anchors, _ = detector_anchors(model, size)
    return ExportTarget(RawDetectorExport(model, anchors).eval(), 'raw', size,
                        ['cls_logits', 'bbox_regression', 'anchors'], metadata={'detector': detector})


def _input(batch: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def _onnx_shape(path: Path, batch: int, size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) an ONNX file takes at `batch`: its fixed size, else `size` (ValueError for another fixed batch)."""
    from ..onnxgraph.load import onnx_input_dims

    dims = onnx_input_dims(path)
    b, h, w = dims[0], dims[2] or size[0], dims[3] or size[1]
    if b is not None and b != batch:
        raise ValueError(f'ONNX file has a fixed batch of {b}; expected --batch {b} for it')
    return h, w


class Grid:
    """Builds runners and caches what is shared between cells (modules, exported ONNX files).

    Args:
        workdir: Where on-the-fly ONNX exports and TensorRT engines go.
        threads: Intra-op threads (torch is set globally by the caller; onnxruntime per session; default:
            torch's current setting).
        device: 'cpu' or 'cuda[:i]'.
        detector: Detector to build around a backbone for `what='raw'` (a name of `fna_zoo.detection.DETECTORS`).
    """

    def __init__(self, workdir: str | os.PathLike, threads: int | None = None, device: str = 'cpu',
                 detector: str = 'retinanet') -> None:
        self.workdir = Path(workdir)
        self.threads = int(threads or torch.get_num_threads())
        self.device = device
        self.detector = detector
        self._targets: dict[tuple, Any] = {}
        self._onnx: dict[tuple, tuple[Path, str]] = {}

    def target(self, src: ModelSpec, what: str, size: tuple[int, int]) -> Any:
        """The `ExportTarget` (module + metadata) of a model at a size, built once per grid.

        Args:
            src: The model.
            what: 'backbone' or 'raw'.
            size: (H, W).
        """
        key = (src.name, what, size)
        if key not in self._targets:
            self._targets[key] = _target(src, what, size, self.detector)
        return self._targets[key]

    def onnx_file(self, src: ModelSpec, what: str, size: tuple[int, int]) -> tuple[Path, str]:
        """The ONNX file of a model (exported once, parity-checked at batch 1), and the parity summary."""
        from ..export.onnx_export import export_with_gate

        if src.kind == 'onnx':
            return Path(src.spec), ''
        key = (src.name, what, size)
        if key not in self._onnx:
            stem = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
            path, reports = export_with_gate(self.target(src, what, size), self.workdir / f'{stem}.onnx',
                                             check_batches=[1])
            if path is None:
                raise RuntimeError(f'ONNX export failed its parity check ({reports[0][1].summary()})')
            self._onnx[key] = (path, f'parity max abs diff {reports[0][1].max_abs_diff:.2g}')
        return self._onnx[key]

    def build(self, src: ModelSpec, runtime: str, what: str, batch: int, size: tuple[int, int]) -> Runner:
        """One runner, made by the runtime's plugin (`fna_zoo.runtime.registry`): from the module for the
        runtimes that run one, else from the model's ONNX file; what cannot run here becomes a skip reason.

        Args:
            src: The model.
            runtime: A runtime name or alias (`fna_zoo.runtime.names`).
            what: 'backbone' or 'raw' ('detector' is an alias of 'raw').
            batch: Batch size.
            size: (H, W) input size (ONNX files with a fixed size use theirs).
        """
        name, _ = canonical_runtime(runtime, self.device)
        what = canonical_what(what)
        plugin = PLUGINS[name]
        precision = plugin.precision
        why = plugin.skip_reason(self.device)
        if why:
            return Runner.skipped(precision, why)
        if plugin.torch_threads:
            if src.kind == 'onnx':
                return Runner.skipped(precision, f'{name} needs a PyTorch model, not an ONNX file')
            module = self.target(src, what, size).module
            return plugin.module_runner(module, [_input(batch, size)], self.threads, self.device)
        try:
            path, note = self.onnx_file(src, what, size)
            real = _onnx_shape(path, batch, size)
            runner = plugin.file_runner(path, [_input(batch, real).numpy()], self.threads, self.device,
                                        precision=None if src.kind == 'onnx' else precision, workdir=self.workdir)
        except RuntimeError as e:
            return Runner.skipped(precision, str(e))
        runner.note = '; '.join(x for x in (note, runner.note) if x)
        runner.extra = {**runner.extra, 'input_size': real}
        return runner

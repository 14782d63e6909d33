"""Runnables for the benchmark grid: PyTorch eager (fp32; fp16 on CUDA), torch.compile, onnxruntime
(fp32 from an on-the-fly export, or a given ONNX file, e.g. an INT8 one) and TensorRT engines (fp32, fp16;
INT8 from a QDQ file) built from the same ONNX file, on CUDA where `tensorrt` is installed.

A model is a zoo arch name, an arch file, a timm name (`timm:NAME` forces timm's own model), a retrain
checkpoint (.pth, a detector) or an .onnx file. Every backend turns (model, what, batch, input size) into a
`Runnable`: a zero-argument callable doing one inference on a fixed seeded input, or a skip reason.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ['BACKENDS', 'ModelSource', 'Runnable', 'Grid', 'resolve_model', 'build_runnable', 'arch_id']

_logger = logging.getLogger(__name__)

BACKENDS = ('eager', 'eager-fp16', 'compile', 'ort', 'trt', 'trt-fp16')
_PRECISION = {'eager': 'fp32', 'eager-fp16': 'fp16', 'compile': 'fp32', 'ort': 'fp32', 'trt': 'fp32',
              'trt-fp16': 'fp16'}


@dataclass
class ModelSource:
    """A benchmark model, resolved.

    Args:
        name: As the user gave it.
        kind: 'arch' (zoo name, arch file or FNA string), 'timm', 'checkpoint' or 'onnx'.
        spec: What to pass on to the builders.
    """

    name: str
    kind: str
    spec: str


@dataclass
class Runnable:
    """One cell of the grid, ready to time (or skipped).

    Args:
        fn: One inference (None when skipped).
        precision: 'fp32', 'fp16' or 'int8'.
        sync: Device synchronisation before reading the clock (CUDA), or None.
        skip: Why the cell is not timed ('' when it is).
        note: Extra facts for the row (e.g. the ONNX file, parity).
        extra: Row fields the backend decides (`input_size` of a fixed-size ONNX file, `io_included`).
    """

    fn: Callable[[], Any] | None
    precision: str
    sync: Callable[[], Any] | None = None
    skip: str = ''
    note: str = ''
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_model(name: str) -> ModelSource:
    """Classify a model argument, failing early (ValueError / FileNotFoundError) on unknown ones.

    Args:
        name: A zoo arch name, arch file, timm name (or `timm:NAME`), checkpoint or .onnx file.
    """
    from ..arch import is_arch_spec

    suffix = Path(name).suffix.lower()
    if suffix == '.onnx':
        if not Path(name).is_file():
            raise FileNotFoundError(f'ONNX file {name!r} not found; expected an existing .onnx file')
        return ModelSource(name, 'onnx', name)
    if suffix in ('.pth', '.pt'):
        if not Path(name).is_file():
            raise FileNotFoundError(f'checkpoint {name!r} not found; expected a retrain checkpoint (final.pth)')
        return ModelSource(name, 'checkpoint', name)
    if name.startswith('timm:'):
        import timm

        if not timm.is_model(name[5:]):
            raise ValueError(f'unknown timm model {name[5:]!r}; expected a name from timm.list_models()')
        return ModelSource(name, 'timm', name)
    if is_arch_spec(name):
        if suffix and not Path(name).is_file():
            raise FileNotFoundError(f'arch file {name!r} not found; expected an arch file (.yaml/.json/.txt)')
        return ModelSource(name, 'arch', name)
    import timm

    if timm.is_model(name):
        return ModelSource(name, 'timm', f'timm:{name}')
    raise ValueError(f'unknown model {name!r}; expected a zoo arch name, an arch file, a timm model name, '
                     'a retrain checkpoint (.pth) or an .onnx file')


def arch_id(src: ModelSource) -> str:
    """A short id of the backbone architecture (sha1 of its FNA string or 'timm:NAME'), to join rows
    of different names for the same arch; '' for checkpoints and ONNX files."""
    from ..export.onnx_export import _arch_string

    if src.kind not in ('arch', 'timm'):
        return ''
    return hashlib.sha1(_arch_string(src.spec).encode()).hexdigest()[:10]


def _target(src: ModelSource, what: str, size: tuple[int, int], detector: str):
    """The `ExportTarget` (module + metadata) of a model: a backbone, or a detector without NMS."""
    from ..export.onnx_export import ExportTarget, RawDetectorExport, backbone_target, detector_target

    if src.kind == 'checkpoint':
        if what != 'detector':
            raise ValueError(f'{src.name!r} is a detector checkpoint; expected --what detector for it')
        return detector_target(src.spec, 'raw', input_size=size)
    if what == 'backbone':
        return backbone_target(src.spec, input_size=size, name=src.name)
    from ..detection import build_detector
    from ..export.postprocess import detector_anchors

    spec = src.spec[5:] if src.spec.startswith('timm:') else src.spec
    torch.manual_seed(0)
    kwargs = {'image_size': size} if detector == 'ssdlite' else {}
    model = build_detector(detector, backbone=spec, num_classes=80, **kwargs).eval()
    anchors, _ = detector_anchors(model, size)
    return ExportTarget(RawDetectorExport(model, anchors).eval(), 'raw', size,
                        ['cls_logits', 'bbox_regression', 'anchors'], metadata={'detector': detector})


def _onnx_precision(path: str | os.PathLike) -> str:
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return 'int8' if ops & {'QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger'} else 'fp32'


def _ort_session(path: str | os.PathLike, threads: int | None, device: str) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    providers = ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise RuntimeError('onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)')
        providers = ['CUDAExecutionProvider', 'CPUExecutionProvider']
    return ort.InferenceSession(str(path), opts, providers=providers)


def _onnx_input(sess: Any, batch: int, size: tuple[int, int]) -> tuple[str, np.ndarray, tuple[int, int]]:
    inp = sess.get_inputs()[0]
    shape = list(inp.shape)
    h = shape[2] if isinstance(shape[2], int) else size[0]
    w = shape[3] if isinstance(shape[3], int) else size[1]
    b = shape[0] if isinstance(shape[0], int) else batch
    if b != batch:
        raise ValueError(f'ONNX file has a fixed batch of {b}; expected --batch {b} for it')
    x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)).numpy()
    return inp.name, x, (h, w)


class Grid:
    """Builds runnables and caches what is shared between cells (modules, exported ONNX files).

    Args:
        workdir: Where on-the-fly ONNX exports go.
        threads: Intra-op threads (torch is set globally by the caller; onnxruntime per session).
        device: 'cpu' or 'cuda[:i]'.
        detector: Detector to build around a backbone for `what='detector'` ('retinanet' or 'ssdlite').
    """

    def __init__(self, workdir: str | os.PathLike, threads: int | None = None, device: str = 'cpu',
                 detector: str = 'retinanet') -> None:
        self.workdir = Path(workdir)
        self.threads = threads
        self.device = device
        self.detector = detector
        self._targets: dict[tuple, Any] = {}
        self._onnx: dict[tuple, tuple[Path, str]] = {}

    def target(self, src: ModelSource, what: str, size: tuple[int, int]) -> Any:
        key = (src.name, what, size)
        if key not in self._targets:
            self._targets[key] = _target(src, what, size, self.detector)
        return self._targets[key]

    def onnx_file(self, src: ModelSource, what: str, size: tuple[int, int]) -> tuple[Path, str]:
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

    def build(self, src: ModelSource, backend: str, what: str, batch: int, size: tuple[int, int]) -> Runnable:
        """One runnable; backend problems that are not user errors become a skip reason.

        Args:
            src: The model.
            backend: One of `BACKENDS`.
            what: 'backbone' or 'detector'.
            batch: Batch size.
            size: (H, W) input size (ONNX files with a fixed size use theirs).
        """
        if backend not in BACKENDS:
            raise ValueError(f'unknown backend {backend!r}; expected one of {", ".join(BACKENDS)}')
        precision = _PRECISION[backend]
        cuda = self.device.startswith('cuda')
        if backend.startswith('trt'):
            return self._trt(src, precision, what, batch, size)
        if backend == 'ort':
            try:
                path, note = self.onnx_file(src, what, size)
                if src.kind == 'onnx':
                    precision = _onnx_precision(path)
                sess = _ort_session(path, self.threads, self.device)
            except RuntimeError as e:
                return Runnable(None, precision, skip=' '.join(str(e).split())[:200])
            name, x, real = _onnx_input(sess, batch, size)
            sess.run(None, {name: x})
            extra: dict[str, Any] = {'input_size': real}
            if cuda:
                extra['io_included'] = 'yes (numpy input and outputs copied to and from the GPU)'
            return Runnable(lambda: sess.run(None, {name: x}), precision, note=note, extra=extra)
        if src.kind == 'onnx':
            return Runnable(None, precision, skip=f'{backend} needs a PyTorch model, not an ONNX file')
        if backend == 'eager-fp16' and not cuda:
            return Runnable(None, precision, skip='fp16 is timed on CUDA only')
        module: nn.Module = self.target(src, what, size).module.to(self.device)
        x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(self.device)
        from .timing import cuda_sync

        sync = cuda_sync(self.device)
        if backend == 'eager-fp16':
            import copy

            module, x = copy.deepcopy(module).half(), x.half()
        if backend == 'compile':
            try:
                compiled = torch.compile(module)
                with torch.inference_mode():
                    compiled(x)
            except Exception as e:  # noqa: BLE001  (inductor needs a compiler toolchain; a failure is a skip)
                return Runnable(None, precision, skip=f'torch.compile failed: {" ".join(str(e).split())[:160]}')
            module = compiled

        def run() -> Any:
            with torch.inference_mode():
                return module(x)

        return Runnable(run, precision, sync=sync)


    def _trt(self, src: ModelSource, precision: str, what: str, batch: int, size: tuple[int, int]) -> Runnable:
        """A TensorRT engine built from the model's ONNX file (cached in the workdir per precision and batch)."""
        from ..export.tensorrt import EngineRunner, TensorRTUnavailable, build_engine, import_tensorrt
        from .timing import cuda_sync

        try:
            import_tensorrt('the trt backends')
        except TensorRTUnavailable:
            return Runnable(None, precision, skip='tensorrt not installed')
        if not self.device.startswith('cuda'):
            return Runnable(None, precision, skip='TensorRT runs on CUDA; pass --device cuda')
        try:
            path, note = self.onnx_file(src, what, size)
        except RuntimeError as e:
            return Runnable(None, precision, skip=' '.join(str(e).split())[:200])
        if precision == 'fp32' and _onnx_precision(path) == 'int8':
            precision = 'int8'  # a QDQ file: explicit quantization
        h, w = _onnx_fixed_size(path) or size
        stem = hashlib.sha1(f'{path.resolve()}|{precision}|{batch}|{h}x{w}'.encode()).hexdigest()[:12]
        engine = build_engine(path, self.workdir / f'{stem}.engine', (h, w), precision, batch=batch,
                              max_batch=batch, timing_cache=self.workdir / 'trt.timing.cache')
        x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)).to(self.device)
        runner = EngineRunner(engine, x)
        runner()
        return Runnable(runner, precision, sync=cuda_sync(self.device), note=note, extra={'input_size': (h, w)})


def _onnx_fixed_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) of an ONNX file with a fixed input size, or None when they are dynamic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    h, w = (d.dim_value if d.HasField('dim_value') else None for d in dims[2:4])
    return (h, w) if h and w else None


def build_runnable(grid: Grid, src: ModelSource, backend: str, what: str, batch: int,
                   size: tuple[int, int]) -> Runnable:
    """`grid.build(...)` as a function (see `Grid.build`)."""
    return grid.build(src, backend, what, batch, size)

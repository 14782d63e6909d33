"""The cells of the deployment table (`fna-bench --ap`): one detector, end to end, per runtime and precision.

A cell (`CELLS`) is a runtime and a precision, with the ONNX file it runs where it runs one. `build_pipeline`
makes it a `Pipeline`: three stages one image goes through (`fna_zoo.runtime.timing.time_stages`):

* pre: read and decode the image file, resize it to the network input (letterbox or stretch) and scale it to
  [0, 1] (`fna_zoo.runtime.preprocess`, as `examples/predict_onnx.py` does);
* net: normalisation, backbone, neck and head;
* post: box decoding, top-k, per-class NMS and top-K (`DetectionPostprocess`), boxes back to image pixels.

PyTorch runs the detector's own modules in eager mode, post-processing included (`DetectionPostprocess` in
PyTorch, torchvision's `nms`). onnxruntime runs fna-export's detector with in-graph NMS (fp32, and its
static INT8 quantization); the file is cut at the head outputs into its network and its NMS sub-graphs
(`split_nms_graph`), run as two sessions one after the other, so the in-graph NMS is timed on its own.
TensorRT builds an engine from the raw export (an engine cannot bind the data-dependent NMS outputs) and runs
`DetectionPostprocess` in PyTorch on the GPU. The ONNX files are fna-export's (`Exports`: parity-gated
exports and its INT8 quantization), written once per table, or files the user gives.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..runtime.names import device_kind
from ..runtime.plugin import RuntimePlugin
from ..runtime.registry import PLUGINS
from ..runtime.preprocess import InputSpec, load_input, to_image_pixels
from ..runtime.timing import cuda_sync

__all__ = ['Cell', 'CELLS', 'Exports', 'Pipeline', 'build_pipeline', 'split_nms_graph', 'nms_fp32', 'nms_int8',
           'nms_fp16', 'raw_fp32', 'raw_int8', 'raw_fp16']

_logger = logging.getLogger(__name__)

# NOTE: fna-export's default number of INT8 calibration images (`--calib-images`)
CALIB_IMAGES = 32
NMS_OUTPUTS = ['boxes', 'scores', 'labels', 'num_detections']
# Writes one ONNX file of the detector at the given path: (the table's files, destination) -> destination
OnnxWriter = Callable[['Exports', Path], Path]


class Exports:
    """The ONNX files of one detector, each written once (atomically, by fna-export's exporter,
    `fna_zoo.export.exporter.ExportJob`) or given.

    The float32 files keep their parity gate (batch 1); the fp16 and INT8 files are written without theirs: the
    table's AP column is their check.

    Args:
        target: fna-export's detector-with-NMS target of the checkpoint (`detector_target(..., 'nms')`).
        checkpoint: The retrain checkpoint (the raw export is made from it).
        cfg: The checkpoint's run config (INT8 calibration reads its training data).
        workdir: Where written files go.
        data_path: A COCO tree overriding the config's data for INT8 calibration (as `fna-export --data_path`).
        given: Files the user gave, by the writer they replace (`nms_fp32`, `nms_int8`).
    """

    def __init__(self, target: Any, checkpoint: str | os.PathLike, cfg: dict[str, Any], workdir: str | os.PathLike,
                 data_path: str | os.PathLike | None = None, given: dict[OnnxWriter, Path] | None = None) -> None:
        self.target, self.checkpoint, self.cfg, self.data_path = target, Path(checkpoint), cfg, data_path
        self.workdir = Path(workdir)
        self.files: dict[OnnxWriter, Path] = dict(given or {})
        self._failed: dict[OnnxWriter, Exception] = {}
        self._jobs: dict[str, Any] = {}

    def _path(self, writer: OnnxWriter) -> Path:
        return self.workdir / f"{self.checkpoint.stem}.{writer.__name__.replace('_', '.')}.onnx"

    def file(self, writer: OnnxWriter) -> Path:
        """The file `writer` writes (written on first use, as `<checkpoint stem>.<writer name>.onnx`).

        Args:
            writer: One of the writers (`nms_fp32`, `nms_int8`, `raw_fp32`, `raw_int8`, ...).
        """
        if writer in self._failed:  # NOTE: once: the cells that share a file (or build on it) share its failure
            raise self._failed[writer]
        if writer not in self.files:
            try:
                self.files[writer] = writer(self, self._path(writer))
            except Exception as e:
                self._failed[writer] = e
                raise
        return self.files[writer]

    def job(self, what: str) -> Any:
        """The exporter's job of the 'nms' target or of the 'raw' one (TensorRT's: its INT8 in TensorRT's QDQ)."""
        if what not in self._jobs:
            from ..export.exporter import ExportJob, ExportSettings
            from ..export.onnx_export import detector_target

            target = self.target if what == 'nms' else detector_target(self.checkpoint, 'raw', self.target.input_size)
            mine = {w: fmt for w, (kind, fmt) in WRITER_FORMATS.items() if kind == what}
            outputs = {fmt: self._path(w) for w, fmt in mine.items()}
            given = {fmt: self.files[w] for w, fmt in mine.items() if w in self.files}
            settings = ExportSettings(check_batches=[1], calib_images=CALIB_IMAGES, data_path=self.data_path)
            self._jobs[what] = ExportJob(target, settings, outputs['onnx'], outputs, gate=['onnx'], cfg=self.cfg,
                                         calibration=self.calibration if what == 'raw' else None, given=given,
                                         int8_flavor='tensorrt' if what == 'raw' else 'onnxruntime')
        return self._jobs[what]

    def calibration(self) -> list[np.ndarray]:
        """fna-export's INT8 calibration batches (`CALIB_IMAGES` training images, deployment pre-processing)."""
        return self.job('nms').calibration()


def nms_fp32(ex: Exports, dst: Path) -> Path:
    """fna-export's detector with in-graph NMS, fp32 (`fna-export --checkpoint ...`), parity-gated."""
    return ex.job('nms').file('onnx')


def nms_int8(ex: Exports, dst: Path) -> Path:
    """Its onnxruntime static INT8 quantization (`fna-export --int8`, without the AP gate: the table shows AP)."""
    return ex.job('nms').file('onnx-int8')


def raw_fp32(ex: Exports, dst: Path) -> Path:
    """fna-export's raw detector (no NMS, `--what raw`), for TensorRT engines."""
    return ex.job('raw').file('onnx')


def raw_int8(ex: Exports, dst: Path) -> Path:
    """The raw detector quantized for TensorRT (symmetric QDQ, float biases: its explicit INT8)."""
    return ex.job('raw').file('onnx-int8')


def nms_fp16(ex: Exports, dst: Path) -> Path:
    """The mixed-precision fp16 copy of `nms_fp32` (`fna-export --fp16`'s conversion: network in fp16, NMS in
    fp32), without its parity gate: the table shows AP, as for `nms_int8`."""
    return ex.job('nms').file('onnx-fp16')


def raw_fp16(ex: Exports, dst: Path) -> Path:
    """The fp16 copy of `raw_fp32`, which a strongly typed TensorRT fp16 engine is built from."""
    return ex.job('raw').file('onnx-fp16')


# each writer's file in the exporter's terms: (target, format of `fna_zoo.export.formats.FORMATS`)
WRITER_FORMATS: dict[OnnxWriter, tuple[str, str]] = {
    nms_fp32: ('nms', 'onnx'), nms_int8: ('nms', 'onnx-int8'), nms_fp16: ('nms', 'onnx-fp16'),
    raw_fp32: ('raw', 'onnx'), raw_int8: ('raw', 'onnx-int8'), raw_fp16: ('raw', 'onnx-fp16'),
}


@dataclass(frozen=True)
class Cell:
    """One row of the deployment table.

    Args:
        runtime: Canonical runtime name (`fna_zoo.runtime.names`).
        precision: 'fp32', 'fp16' or 'int8'.
        onnx: The writer of the ONNX file it runs (None for PyTorch).
        missing: Why this version cannot run it ('' when it can).
        quantize: Whether the runtime quantizes that float file itself (`RuntimePlugin.quantize`, e.g. NNCF).
    """

    runtime: str
    precision: str
    onnx: OnnxWriter | None = None
    missing: str = ''
    quantize: bool = False


# NOTE: the cells are the registry's (`fna_zoo.runtime.registry`: each plugin's `deploy_cells`, in registry order);
# a cell names its export by the writer's name
_WRITERS: dict[str, OnnxWriter] = {w.__name__: w for w in WRITER_FORMATS}
CELLS: tuple[Cell, ...] = tuple(Cell(name, c.precision, _WRITERS[c.export] if c.export else None, quantize=c.quantize)
                                for name, plugin in PLUGINS.items() for c in plugin.deploy_cells)


@dataclass
class Pipeline:
    """A cell ready to run images end to end, or why it cannot.

    Args:
        cell: The cell.
        stages: pre (image path -> (input, scale)), net ((input, scale) -> (head outputs, scale)) and post
            ((head outputs, scale) -> (boxes [N, 4] xyxy in image pixels, scores [N], labels [N]), numpy).
        status: 'ok', 'skipped: why' or 'failed: why'.
        sync: Device synchronisation before each clock read (CUDA), or None.
        file: The file it runs ('' for PyTorch).
        size_mb: The file's size; PyTorch: its weights' bytes at that precision (MiB).
        note: How its stages are measured, when it differs from the table's legend.
        unsplit: For a split ONNX file: the whole file in one session (input -> outputs), to compare with.
        options: The runtime's settings a row records (its plugin's `options`).
    """

    cell: Cell
    stages: tuple[Callable[[Any], Any], ...] = ()
    status: str = 'ok'
    sync: Callable[[], Any] | None = None
    file: str = ''
    size_mb: float | None = None
    note: str = ''
    unsplit: Callable[[np.ndarray], Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """What it runs: its runtime's format ('PyTorch eager', 'ONNX', 'TensorRT engine'), or the format of the
        runtime's own INT8 model ('OpenVINO IR')."""
        plugin = PLUGINS[self.cell.runtime]
        return plugin.quantized_format if self.cell.quantize else plugin.format


def _one_line(e: BaseException) -> str:
    return ' '.join(f'{type(e).__name__}: {e}'.split())[:200]


def _pre(spec: InputSpec) -> Callable[[Any], tuple[np.ndarray, tuple[float, float]]]:
    def pre(path: Any) -> tuple[np.ndarray, tuple[float, float]]:
        x, scale = load_input(path, spec)  # NOTE: the fast decoders and resize where installed, same numerics
        return x[None], scale

    return pre


def _detections(boxes: Any, scores: Any, labels: Any, num: Any, scale: tuple[float, float]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image 0 of padded detections (numpy or torch), its boxes in image pixels."""
    boxes, scores, labels, num = (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
                                  for t in (boxes, scores, labels, num))
    n = int(num[0])
    return to_image_pixels(boxes[0, :n], scale), scores[0, :n], labels[0, :n]


def _torch_post(postprocess: torch.nn.Module) -> Callable[[Any], Any]:
    def post(mid: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        (cls_logits, bbox_reg), scale = mid
        with torch.inference_mode():  # NOTE: in fp32 for every precision (fp16 class offsets would merge boxes)
            out = postprocess(cls_logits.float(), bbox_reg.float())
        return _detections(*out, scale)

    return post


def _weights_mb(module: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 2 ** 20


def _torch(cell: Cell, target: Any, spec: InputSpec, device: str) -> Pipeline:
    """PyTorch eager: the detector's normalisation + core as the network, `DetectionPostprocess` after it."""
    if cell.precision == 'fp16' and device_kind(device) != 'cuda':
        return Pipeline(cell, status='skipped: fp16 eager PyTorch runs on CUDA only (pass --device cuda)')
    dtype = torch.float16 if cell.precision == 'fp16' else torch.float32
    model = target.module
    if device_kind(device) == 'cuda':  # pragma: no cover (needs a GPU)
        model = copy.deepcopy(model).to(device, dtype)  # a copy: the exports trace the CPU module
    postprocess = model.postprocess.float()

    def net(inp: Any) -> Any:
        x, scale = inp
        with torch.inference_mode():
            return model.core(model.normalize(torch.from_numpy(x).to(device, dtype))), scale

    return Pipeline(cell, (_pre(spec), net, _torch_post(postprocess)), sync=cuda_sync(device),
                    size_mb=_weights_mb(model))


def split_nms_graph(path: str | os.PathLike) -> tuple[bytes, bytes, list[str]]:
    """Cut a detector-with-NMS ONNX file into its network and its NMS sub-graphs at the head outputs.

    The NMS sub-graph is every node of the `/postprocess` scope (the names the TorchScript exporter gives the
    `DetectionPostprocess` module of fna-export; INT8 leaves it in float); the cut is at the tensors it reads
    from the other nodes (the class logits and box regression, after the dequantisation in an INT8 file).

    Args:
        path: An ONNX file of `fna-export --what nms` (fp32 or INT8).

    Returns:
        (network model, NMS model, the names of the tensors between them), serialized.

    Raises:
        ValueError: The file has no `/postprocess` scope, or it is not cut at two tensors.
    """
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    post = {n.name for n in model.graph.node if n.name.startswith('/postprocess')}
    made_by = {o: n for n in model.graph.node for o in n.output}
    cut = sorted({i for n in model.graph.node if n.name in post for i in n.input
                  if i in made_by and made_by[i].name not in post and made_by[i].op_type != 'Constant'})
    if not post or len(cut) != 2:
        raise ValueError(f'{str(path)!r} has {len(post)} /postprocess nodes reading {len(cut)} network tensors; '
                         'expected fna-export\'s detector with NMS (two: class logits and box regression)')
    # NOTE: the Extractor types the cut tensors from the inferred shapes (the export stores none)
    ex = Extractor(onnx.shape_inference.infer_shapes(model))
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    net = ex.extract_model(inputs, cut)
    nms = ex.extract_model(cut, [o.name for o in model.graph.output])
    return net.SerializeToString(), nms.SerializeToString(), cut


def _size_mb(path: Path) -> float:
    """A model file's size in MiB, with its weights file beside it (an OpenVINO IR's .bin)."""
    return sum(p.stat().st_size for p in (path, path.with_suffix('.bin')) if p.is_file()) / 2 ** 20


def _sessions(cell: Cell, plugin: RuntimePlugin, path: Path, spec: InputSpec, threads: int | None, device: str,
              calibration: Callable[[], list[np.ndarray]]) -> Pipeline:
    """A runtime's sessions (`RuntimePlugin.session`) on fna-export's detector with NMS: the network and the in-graph
    NMS as two sessions; for a `quantize` cell the network is the runtime's own INT8 of the float file's network."""
    from ..onnxgraph.precision import onnx_precision

    found = onnx_precision(path)
    want = 'fp32' if cell.quantize else cell.precision
    if found != want:
        raise ValueError(f'{str(path)!r} holds a {found} model; expected {want} for this cell')
    from ..onnxgraph.load import load_onnx

    net_model, nms_model, cut = split_nms_graph(path)
    name = load_onnx(net_model).graph.input[0].name
    file, whole = path, None
    if cell.quantize:
        net_file = path.with_name(f'{path.stem}.net.onnx')
        net_file.write_bytes(net_model)
        file = plugin.quantize(net_file, path.with_name(f'{path.stem}.{cell.runtime}.net.int8.xml'), calibration())
        net_model = file
    else:
        whole = plugin.session(path, threads, device)
    net_sess, nms_sess = plugin.session(net_model, threads, device), plugin.session(nms_model, threads, device)

    def net(inp: Any) -> Any:
        x, scale = inp
        out = net_sess({name: x})
        return [out[c] for c in cut], scale

    def post(mid: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        heads, scale = mid
        out = nms_sess(dict(zip(cut, heads)))
        return _detections(*(out[k] for k in NMS_OUTPUTS), scale)

    return Pipeline(cell, (_pre(spec), net, post), file=str(file), size_mb=_size_mb(Path(file)),
                    unsplit=None if whole is None else (lambda x: whole({name: x})),
                    options=plugin.options(threads, device, io_binding=False),
                    note='net: the runtime\'s own INT8 of the fp32 file\'s network (NMS in fp32)' if cell.quantize
                    else '')


def _tensorrt(cell: Cell, path: Path, spec: InputSpec, postprocess: torch.nn.Module,
              device: str) -> Pipeline:  # pragma: no cover (needs tensorrt and a GPU)
    """A TensorRT engine of the raw export as the network, `DetectionPostprocess` in PyTorch on the GPU after it."""
    from ..runtime.tensorrt import EngineRunner, build_engine

    engine = build_engine(path, path.with_suffix(f'.{cell.runtime}.{cell.precision}.engine'), spec.size,
                          cell.precision, batch=1, max_batch=1, dynamic=False,
                          timing_cache=path.parent / 'trt.timing.cache', why=f'the {cell.runtime} cell')
    x = torch.zeros(1, 3, *spec.size, device=device)
    runner = EngineRunner(engine, x)

    def net(inp: Any) -> Any:
        arr, scale = inp
        x.copy_(torch.from_numpy(arr))
        outs = runner()
        return (outs['cls_logits'], outs['bbox_regression']), scale

    return Pipeline(cell, (_pre(spec), net, _torch_post(postprocess.to(device))), sync=cuda_sync(device),
                    file=str(engine), size_mb=Path(engine).stat().st_size / 2 ** 20,
                    note='net: the engine of the raw export; post: DetectionPostprocess in PyTorch on the GPU')


def build_pipeline(cell: Cell, exports: Exports, spec: InputSpec, threads: int | None = None,
                   device: str = 'cpu') -> Pipeline:
    """The pipeline of a cell; what cannot run here is a 'skipped: why' pipeline, what breaks a 'failed: why' one.

    Args:
        cell: The cell.
        exports: The detector's ONNX files.
        spec: The detector's input (size, resize, mean).
        threads: onnxruntime intra-op threads (torch's are the caller's).
        device: 'cpu' or 'cuda[:N]'.
    """
    if cell.missing:
        return Pipeline(cell, status=f'skipped: {cell.missing}')
    plugin = PLUGINS[cell.runtime]
    why = plugin.skip_reason(device)
    if why:
        return Pipeline(cell, status=f'skipped: {why}')
    try:
        if plugin.deploy == 'module':
            return _torch(cell, exports.target, spec, device)
        path = exports.file(cell.onnx)
        if plugin.deploy == 'sessions':
            return _sessions(cell, plugin, path, spec, threads, device, exports.calibration)
        return _tensorrt(cell, path, spec, copy.deepcopy(exports.target.module.postprocess), device)  # pragma: no cover
    except Exception as e:  # noqa: BLE001  (a cell that breaks is a 'failed' row; the table goes on)
        _logger.debug('%s %s failed', cell.runtime, cell.precision, exc_info=True)
        return Pipeline(cell, status=f'failed: {_one_line(e)}')

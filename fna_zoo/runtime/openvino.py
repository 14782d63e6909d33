"""The OpenVINO runtime (CPU): an ONNX file (fp32, or onnxruntime's QDQ INT8 file, which OpenVINO runs in INT8) or
an OpenVINO IR (.xml + .bin, e.g. NNCF's INT8 from `fna_zoo.export.openvino.export_openvino`).

Every compiled model of the package is made by `compile_model` with one recipe (`ov_config`): the latency
performance hint, one stream, `threads` inference threads (the same setting onnxruntime's sessions get),
fp32 inference precision and no CPU pinning; `OpenVINORuntime.options` is what a result records about it. The
IR writer (`save_ir`, atomic) and NNCF's post-training quantization (`nncf_quantize`) live here, below the export,
so the runtime can make its own INT8 for the deployment table; `openvino` and `nncf` are imported only inside
functions, so the package works without them (`pip install 'fna-zoo[openvino]'`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .plugin import DeployCell, RuntimePlugin, import_package

if TYPE_CHECKING:
    import numpy as np
    import openvino
    import torch
    from torch import nn

    from .runners import Runner

__all__ = ['OpenVINORuntime', 'MISSING', 'POSTPROCESS_PATTERNS', 'ov_config', 'read_model', 'compile_model',
           'ir_precision', 'save_ir', 'AccuracyControl', 'nncf_quantize', 'quantizer_names', 'ir_size_mb',
           'set_metadata', 'metadata']

_logger = logging.getLogger(__name__)

MISSING = "openvino is not installed (pip install 'fna-zoo[openvino]')"
# NOTE: the in-graph NMS of fna-export's detector (the `/postprocess` scope of the TorchScript exporter's names,
# which OpenVINO keeps as friendly names) stays in float: it compares scores, so INT8 there only loses boxes.
POSTPROCESS_PATTERNS = ('.*/postprocess.*',)


def _openvino() -> Any:
    mod = import_package('openvino')
    if mod is None:
        raise RuntimeError(MISSING)
    return mod


def ov_config(threads: int | None) -> dict[str, Any]:
    """The compile properties of the one OpenVINO recipe (CPU).

    Args:
        threads: Inference threads (None or 0: OpenVINO's default, the physical cores).
    """
    # NOTE: INFERENCE_PRECISION_HINT f32: on a CPU with AVX512-BF16 (or AMX) OpenVINO's default is bf16, which would
    # make an "fp32" row a bf16 one; f32 keeps the float parts of fp32 and INT8 models in fp32, as onnxruntime does.
    # ENABLE_CPU_PINNING off: onnxruntime does not pin its threads either, and on a shared machine a pinned thread
    # waits for its core.
    cfg: dict[str, Any] = {'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1, 'INFERENCE_PRECISION_HINT': 'f32',
                           'ENABLE_CPU_PINNING': False}
    if threads:
        cfg['INFERENCE_NUM_THREADS'] = int(threads)
    return cfg


def read_model(model: str | os.PathLike | bytes) -> 'openvino.Model':
    """An OpenVINO model of an ONNX file or serialized ONNX model, or of an IR (.xml beside its .bin).

    Args:
        model: A .onnx or .xml file, or serialized ONNX bytes.
    """
    ov = _openvino()
    if isinstance(model, (bytes, bytearray)):
        return ov.Core().read_model(bytes(model))
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f'model file {str(path)!r} does not exist; expected an .onnx file or an OpenVINO '
                                'IR .xml (with its .bin)')
    return ov.Core().read_model(str(path))


def compile_model(model: 'str | os.PathLike | bytes | openvino.Model', threads: int | None = None,
                  device: str = 'cpu') -> 'openvino.CompiledModel':
    """A model compiled for the CPU by the one recipe (`ov_config`).

    Args:
        model: A file or serialized ONNX model (see `read_model`), or an `openvino.Model`.
        threads: Inference threads.
        device: 'cpu' (OpenVINO's GPU plugin is not used here).
    """
    ov = _openvino()
    if not isinstance(model, ov.Model):
        model = read_model(model)
    return ov.Core().compile_model(model, 'CPU', ov_config(threads))


def ir_precision(model: 'openvino.Model') -> str:
    """'int8' when the model has FakeQuantize nodes or int8 / uint8 constants (a quantized IR), else 'fp32'.

    Args:
        model: An OpenVINO model.
    """
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == 'FakeQuantize':
            return 'int8'
        if kind == 'Constant' and op.get_output_element_type(0).get_type_name() in ('i8', 'u8'):
            return 'int8'
    return 'fp32'


# NOTE: OpenVINO's ONNX frontend drops the file's metadata_props (fna-export's input size, resize, mean, class
# names, what was exported); they travel in the IR's rt_info as one JSON string under this path
_META_PATH = ['fna_zoo', 'onnx_metadata']


def set_metadata(model: 'openvino.Model', meta: dict[str, str]) -> None:
    """Store an ONNX file's metadata (key -> value strings) in the model's rt_info (written into the IR's .xml).

    Args:
        model: An OpenVINO model.
        meta: The metadata, e.g. the ONNX file's `metadata_props`.
    """
    model.set_rt_info(json.dumps(meta, sort_keys=True), _META_PATH)


def metadata(model: 'openvino.Model') -> dict[str, str]:
    """The ONNX metadata `set_metadata` stored in an IR ({} when there is none: an IR from elsewhere).

    Args:
        model: An OpenVINO model (`read_model` of an .xml).
    """
    if not model.has_rt_info(_META_PATH):
        return {}
    try:
        value = json.loads(model.get_rt_info(_META_PATH).astype(str))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def ir_size_mb(xml: str | os.PathLike) -> float:
    """The size of an IR (.xml + .bin) in MiB.

    Args:
        xml: The .xml file.
    """
    xml = Path(xml)
    return sum(p.stat().st_size for p in (xml, xml.with_suffix('.bin')) if p.is_file()) / 2 ** 20


def save_ir(model: 'openvino.Model', xml: str | os.PathLike, compress_to_fp16: bool = False) -> Path:
    """Write an OpenVINO IR atomically: .xml and .bin under temporary names beside them, then renamed (.bin first).

    Args:
        model: The model.
        xml: Destination .xml (the .bin gets the same stem).
        compress_to_fp16: Store float weights as fp16 (off: an fp32 IR stays fp32).
    """
    from ..fileio import commit_file

    ov = _openvino()
    xml = Path(xml)
    if xml.suffix != '.xml':
        raise ValueError(f'OpenVINO IR path {str(xml)!r} has no .xml suffix; expected NAME.xml (NAME.bin beside it)')
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=xml.parent, prefix=f'.{xml.name}.'))
    try:
        ov.save_model(model, str(tmp / 'model.xml'), compress_to_fp16=compress_to_fp16)
        # NOTE: the .bin first: an .xml in place means its weights are complete (read_model pairs them by stem)
        commit_file(tmp / 'model.bin', xml.with_suffix('.bin'))
        commit_file(tmp / 'model.xml', xml)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


@dataclass(frozen=True)
class AccuracyControl:
    """What NNCF's quantization with accuracy control needs (`nncf.quantize_with_accuracy_control`).

    Args:
        inputs: The validation inputs, one array (batch of one) per image.
        metric: (compiled model, indices of `inputs`) -> (the metric over those images, higher is better, e.g.
            COCO AP, or None when it is not defined for them; the model's outputs per image, a list of arrays each).
        max_drop: The largest absolute drop of the metric allowed against the float model.
        plain_quantizers: The quantizers (`quantizer_names`) of the plain INT8 quantization of the same model, e.g.
            the IR that failed its gate: those missing after the accuracy control are the ones it reverted to
            float, recorded in the IR (`export_openvino`, metadata `int8_kept_float`).
    """

    inputs: Sequence['np.ndarray']
    metric: Callable[[Any, list[int]], 'tuple[float | None, list[list[np.ndarray]]]']
    max_drop: float
    plain_quantizers: frozenset[str] = frozenset()


def nncf_quantize(model: 'openvino.Model', calibration: Sequence['np.ndarray'], preset: str = 'mixed',
                  ignored_patterns: Sequence[str] = POSTPROCESS_PATTERNS, accuracy: AccuracyControl | None = None
                  ) -> 'openvino.Model':
    """NNCF post-training INT8 quantization of an OpenVINO model from calibration inputs (CPU target).

    Args:
        model: A float OpenVINO model (one input).
        calibration: Arrays of its input, one batch each (e.g. `fna_zoo.export.quantize.calibration_batches`).
        preset: 'mixed' (symmetric weights, asymmetric activations: as onnxruntime's default QDQ) or 'performance'
            (symmetric everywhere).
        ignored_patterns: Regular expressions of node names left in float (default: the in-graph NMS).
        accuracy: Quantize with NNCF's accuracy control instead: the quantizers NNCF ranks as most harmful are
            reverted to float until the metric's drop is within `accuracy.max_drop` (or none is left).

    Raises:
        RuntimeError: nncf is not installed (one line).
        ValueError: No calibration inputs, or an unknown preset.
    """
    if not calibration:
        raise ValueError('no calibration inputs; expected at least one input array for NNCF INT8 quantization')
    nncf = import_package('nncf')
    if nncf is None:
        raise RuntimeError("nncf is not installed (pip install 'fna-zoo[openvino]'); expected it for OpenVINO INT8")
    presets = {'mixed': nncf.QuantizationPreset.MIXED, 'performance': nncf.QuantizationPreset.PERFORMANCE}
    if preset not in presets:
        raise ValueError(f'NNCF preset {preset!r} is unknown; expected mixed or performance')
    name = model.inputs[0].get_any_name()
    dataset = nncf.Dataset(list(calibration), lambda x: {name: x})
    scope = nncf.IgnoredScope(patterns=list(ignored_patterns), validate=False) if ignored_patterns else None
    # NOTE: NNCF logs a line per node it leaves unquantized at INFO (hundreds for the NMS sub-graph) and draws
    # progress bars: quiet unless this module's logger is at DEBUG
    if not _logger.isEnabledFor(logging.DEBUG):
        nncf.set_log_level(logging.WARNING)
    if accuracy is None:
        return nncf.quantize(model, dataset, preset=presets[preset], target_device=nncf.TargetDevice.CPU,
                             subset_size=len(calibration), ignored_scope=scope)
    # NOTE: COCO AP is one number over all the images, not a mean of per-image values, so the metric returns the
    # outputs per image too: NNCF then ranks the quantizers by how far each moves the outputs (its "outputs" mode)
    # and calls the metric on the whole validation set only (a float metric with no per-image list would make it
    # call the metric image by image and rank by single-image APs)
    validation = nncf.Dataset(list(range(len(accuracy.inputs))), lambda i: {name: accuracy.inputs[i]})
    return nncf.quantize_with_accuracy_control(
        model, dataset, validation, lambda compiled, items: accuracy.metric(compiled, list(items)),
        max_drop=accuracy.max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=presets[preset],
        target_device=nncf.TargetDevice.CPU, subset_size=len(calibration), ignored_scope=scope)


def quantizer_names(model: 'openvino.Model') -> set[str]:
    """The names of a model's FakeQuantize nodes (NNCF's quantizers; a QDQ ONNX model read by OpenVINO has none).

    Args:
        model: An OpenVINO model.
    """
    return {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == 'FakeQuantize'}


def _runner(compiled: Any, inputs: Sequence[Any], precision: str, threads: int | None) -> 'Runner':
    """One inference of a compiled model on inputs set once (as onnxruntime's I/O binding)."""
    import numpy as np

    from .runners import Runner

    ov = _openvino()
    arrays = [np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x))
              for x in inputs]
    if len(arrays) != len(compiled.inputs):
        raise ValueError(f'the model has {len(compiled.inputs)} inputs; got {len(arrays)} input arrays')
    req = compiled.create_infer_request()
    for i, x in enumerate(arrays):
        req.set_input_tensor(i, ov.Tensor(x, shared_memory=True))
    req.infer()

    def run() -> Any:
        req.infer()
        return arrays  # holds the shared input buffers alive

    return Runner(run, None, precision, options=OpenVINORuntime().options(threads))


class OpenVINORuntime(RuntimePlugin):
    """OpenVINO on the CPU: ONNX files (fp32 or QDQ INT8) and IRs (NNCF INT8)."""

    name = 'openvino'
    aliases: dict[str, str | None] = {}
    precision = 'fp32'
    precisions = ('fp32', 'int8')
    devices = ('cpu',)
    package = 'openvino'
    install = "pip install 'fna-zoo[openvino]'"
    format = 'ONNX'
    quantized_format = 'OpenVINO IR'
    deploy = 'sessions'
    deploy_cells = (DeployCell('fp32', 'nms_fp32'), DeployCell('int8', 'nms_fp32', quantize=True),
                    DeployCell('int8', 'nms_int8'))

    def unavailable(self, device: str = 'cpu') -> str:
        if import_package('openvino') is None:
            return MISSING
        return super().unavailable(device)

    def options(self, threads: int | None, device: str = 'cpu', io_binding: bool = True) -> dict[str, Any]:
        cfg = ov_config(threads)
        return {'device': 'CPU', 'INFERENCE_NUM_THREADS': cfg.get('INFERENCE_NUM_THREADS'),
                'PERFORMANCE_HINT': cfg['PERFORMANCE_HINT'], 'NUM_STREAMS': cfg['NUM_STREAMS'],
                'INFERENCE_PRECISION_HINT': cfg['INFERENCE_PRECISION_HINT'],
                'ENABLE_CPU_PINNING': cfg['ENABLE_CPU_PINNING'], 'io_binding': bool(io_binding)}

    def module_runner(self, module: 'nn.Module', inputs: Sequence['torch.Tensor'], threads: int | None,
                      device: str) -> 'Runner':
        from .runners import onnx_bytes

        return _runner(compile_model(onnx_bytes(module, inputs), threads, device), inputs, 'fp32', threads)

    def file_runner(self, path: str | os.PathLike, inputs: Sequence['np.ndarray'], threads: int | None,
                    device: str, precision: str | None = None, workdir: str | os.PathLike | None = None) -> 'Runner':
        model = read_model(path)
        return _runner(compile_model(model, threads, device), inputs, precision or ir_precision(model), threads)

    def session(self, model: 'str | os.PathLike | bytes | openvino.Model', threads: int | None,
                device: str) -> Callable[[Mapping[str, 'np.ndarray']], dict[str, 'np.ndarray']]:
        compiled = compile_model(model, threads, device)
        req = compiled.create_infer_request()
        names = [(o, sorted(o.get_names())) for o in compiled.outputs]

        def run(feeds: Mapping[str, 'np.ndarray']) -> dict[str, 'np.ndarray']:
            res = req.infer(dict(feeds))
            return {n: res[o] for o, ns in names for n in ns}

        return run

    def quantize(self, src: str | os.PathLike, dst: str | os.PathLike,
                 calibration: Sequence['np.ndarray']) -> Path:
        return save_ir(nncf_quantize(read_model(src), calibration), dst)

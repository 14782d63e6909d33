"""The fp16 ONNX export (`fna-export --fp16`): a mixed-precision copy of the float32 export, parity-gated.

`export_fp16(target, fp32_path)` converts a float32 export with `fna_zoo.onnxgraph.fp16.convert_fp16` (the
network in fp16; normalisation, anchors, box decoding and NMS in float32; inputs and outputs float32) and
writes `<stem>.fp16.onnx` only when onnxruntime on it matches the PyTorch float32 module within an fp16
tolerance (`compare_arrays_scaled`: the difference over each output's range; detections matched as for
float32, `compare_detections` with the same tolerance on scores). TensorRT builds the fp16 engine from this
file (TensorRT 11 has no fp16 builder flag; `fna_zoo.runtime.tensorrt`).

What the gate checks depends on the machine: onnxruntime's CPU provider has fp16 kernels for few ops
(`ort_fp16_coverage` lists them) and runs the others in float32 behind Casts it inserts, so on a CPU the gate
checks the file's graph and types, the fp16 rounding of every weight and constant and of the tensors at those
Casts, but not fp16 arithmetic (accumulation, overflow of activations); the report says which nodes ran how.
"""
from __future__ import annotations

import collections
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..fileio import atomic_path
from ..onnxgraph.fp16 import DEFAULT_FP16_SCOPES, Fp16Info, convert_fp16, stamp_fp16
from ..onnxgraph.load import onnx_input_dims
from ..onnxgraph.precision import tensor_types
from .onnx_export import ExportTarget, reference_and_onnx
from .parity import ParityReport, compare_arrays_scaled, compare_detections

__all__ = ['DEFAULT_FP16_TOL', 'FP16_UNEXPLAINED_FRAC', 'Fp16Export', 'fp16_output_path', 'fp16_parity',
           'ort_fp16_coverage', 'export_fp16']

_logger = logging.getLogger(__name__)

# NOTE: 1% of an output's range (scores: 0.01 absolute): fp16 keeps ~3 significant digits, and a few dozen
# layers of fp16 rounding stay well inside that on the zoo's networks (on this CPU: ~1e-3, weights rounded only)
DEFAULT_FP16_TOL = 1e-2
# NOTE: fp16 scores move candidates across cut-offs the outputs do not show (RetinaNet's per-level top-k before
# NMS): on trained zoo detectors 0-2 of 300 detections differ so; up to 2% may, the rest must match
FP16_UNEXPLAINED_FRAC = 0.02


def fp16_output_path(output: str | os.PathLike) -> Path:
    """The default fp16 file of a float32 export: `<stem>.fp16.onnx` beside it.

    Args:
        output: The float32 ONNX file.
    """
    return Path(output).with_suffix('.fp16.onnx')


@dataclass
class Fp16Export:
    """What `export_fp16` wrote and checked.

    Args:
        path: The fp16 file, or None when the gate failed (nothing written).
        reports: Parity reports by batch size.
        info: What the conversion did (`fna_zoo.onnxgraph.fp16.Fp16Info`).
        coverage: What onnxruntime ran in fp16 here (`ort_fp16_coverage`).
        tol: The tolerance of the gate.
        mb_fp32: Size of the float32 file (MB).
        mb_fp16: Size of the fp16 file (MB), None when nothing was written.
    """

    path: Path | None
    reports: list[tuple[int, ParityReport]]
    info: Fp16Info
    coverage: dict[str, Any] = field(default_factory=dict)
    tol: float = DEFAULT_FP16_TOL
    mb_fp32: float = 0.0
    mb_fp16: float | None = None

    @property
    def passed(self) -> bool:
        return self.path is not None

    def coverage_line(self) -> str:
        """One line: which fp16 nodes onnxruntime ran in fp16 here, and which in float32."""
        c = self.coverage
        if not c:
            return 'onnxruntime fp16 coverage: not measured'
        fmt = lambda d: ', '.join(f'{k} {v}' for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or 'none'  # noqa: E731
        return (f"onnxruntime {c['provider']} ran {c['ort_fp16_nodes']} of {c['fp16_nodes']} fp16 nodes with fp16 "
                f"kernels ({fmt(c['ort_fp16'])}); the other {c['fp16_nodes'] - c['ort_fp16_nodes']} in float32 "
                f"behind inserted casts ({fmt(c['ort_fp32'])})")


def _fp16_readers(model: Any) -> collections.Counter:
    """Op types (and counts) of the non-Cast nodes that read an fp16 tensor."""
    from onnx import TensorProto

    types = tensor_types(model)
    return collections.Counter(n.op_type for n in model.graph.node if n.op_type not in ('Cast', 'Constant') and
                               TensorProto.FLOAT16 in {types.get(x) for x in n.input if x})


def ort_fp16_coverage(path: str | os.PathLike) -> dict[str, Any]:
    """Which fp16 nodes of an ONNX file onnxruntime's CPU provider runs with fp16 kernels, and which it runs in
    float32 (its graph after its own Cast insertion, optimisations off, read back).

    Args:
        path: An fp16 ONNX file.

    Returns:
        `fp16_nodes` / `ort_fp16_nodes` counts, `ort_fp16` and `ort_fp32` (op type -> count), `provider`.
    """
    import onnx
    import onnxruntime as ort

    in_file = _fp16_readers(onnx.load(str(path)))
    ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory(prefix='fna_fp16_') as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / 'ort.onnx')
        ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
        in_ort = _fp16_readers(onnx.load(opts.optimized_model_filepath))
    return {'provider': f'{ort.__version__} CPUExecutionProvider', 'fp16_nodes': sum(in_file.values()),
            'ort_fp16_nodes': sum(in_ort.values()), 'ort_fp16': dict(in_ort), 'ort_fp32': dict(in_file - in_ort)}


def fp16_parity(target: ExportTarget, path: str | os.PathLike, batch: int, tol: float = DEFAULT_FP16_TOL
                ) -> ParityReport:
    """onnxruntime on the fp16 file vs the PyTorch float32 module on the same seeded input in [0, 1].

    Args:
        target: The exported target (its module is the reference).
        path: The fp16 ONNX file.
        batch: Batch size to compare at.
        tol: Dense outputs: largest difference over the output's range; detections: score tolerance (boxes:
            tol times the largest coordinate, as `compare_detections` does; up to `FP16_UNEXPLAINED_FRAC` of
            the detections may differ beyond the float32 near-tie rules).
    """
    ref, out = reference_and_onnx(target, path, batch)
    if target.what == 'nms':
        return compare_detections(ref, [out[n] for n in target.output_names], tol, target.score_thresh,
                                  target.iou_thresh, max_unexplained_frac=FP16_UNEXPLAINED_FRAC)
    return compare_arrays_scaled(dict(zip(target.output_names, ref)), out, tol)


def _check_batches(fp32_path: Path) -> list[int]:
    b = onnx_input_dims(fp32_path)[0]
    return [b] if b else [1, 3]


def export_fp16(target: ExportTarget, fp32_path: str | os.PathLike, output: str | os.PathLike | None = None,
                tol: float = DEFAULT_FP16_TOL, check_batches: Sequence[int] | None = None,
                fp16_scopes: Sequence[str] | None = DEFAULT_FP16_SCOPES) -> Fp16Export:
    """Write the mixed-precision fp16 copy of a float32 export, gated against PyTorch (nothing written on a failure).

    Args:
        target: What was exported (`backbone_target` / `detector_target`; its float32 module is the reference).
        fp32_path: The float32 export of `target` (`export_with_gate`).
        output: The fp16 file (default: `<stem>.fp16.onnx` beside `fp32_path`).
        tol: Gate tolerance (see `fp16_parity`; default 0.01).
        check_batches: Batch sizes to compare at (default: the file's fixed batch, else 1 and 3).
        fp16_scopes: See `fna_zoo.onnxgraph.fp16.convert_fp16`.

    Returns:
        An `Fp16Export` (`path` None when the gate failed).
    """
    import onnx

    fp32_path = Path(fp32_path)
    output = Path(output) if output is not None else fp16_output_path(fp32_path)
    if output.resolve() == fp32_path.resolve():
        raise ValueError(f'fp16 output {str(output)!r} is the float32 file; expected another file')
    if not 0 < tol < 1:
        raise ValueError(f'fp16 tolerance is {tol}; expected a fraction in (0, 1)')
    batches = list(check_batches) if check_batches else _check_batches(fp32_path)
    model16, info = convert_fp16(onnx.load(str(fp32_path)), fp16_scopes)
    stamp_fp16(model16, info, fp16_gate=f'max diff / output range <= {tol:g} vs PyTorch fp32')
    result = Fp16Export(None, [], info, tol=tol, mb_fp32=fp32_path.stat().st_size / 2 ** 20)
    try:
        with atomic_path(output, suffix='.tmp.onnx') as tmp:
            onnx.save(model16, str(tmp))
            result.reports = [(b, fp16_parity(target, tmp, b, tol)) for b in batches]
            result.coverage = ort_fp16_coverage(tmp)
            result.mb_fp16 = tmp.stat().st_size / 2 ** 20
            if not all(r.passed for _, r in result.reports):
                raise _GateFailed
    except _GateFailed:
        result.mb_fp16 = None
        return result
    result.path = output
    return result


class _GateFailed(Exception):
    """Internal: leaves `atomic_path` without renaming the rejected file into place."""

"""The export formats: one table (`FORMATS`), one entry per format, each with its writer.

| format | file | built from | needs | gate |
|---|---|---|---|---|
| onnx | `<stem>.onnx` | the PyTorch module | onnx, onnxruntime | parity: onnxruntime vs PyTorch, max abs diff |
| onnx-fp16 | `<stem>.fp16.onnx` | onnx | onnx, onnxruntime | fp16 parity: max diff over each output's range |
| onnx-int8 | `<stem>.int8.onnx` | onnx | onnx, onnxruntime | ap: INT8 AP drop vs fp32 (detector with NMS), with the fallback |
| tensorrt | `<stem>.engine` | onnx | tensorrt, a GPU | none (the ONNX file it is built from is gated) |
| tensorrt-fp16 | `<stem>.fp16.engine` | onnx-fp16 | tensorrt, a GPU | none |
| tensorrt-int8 | `<stem>.int8.engine` | onnx-int8 (TensorRT's QDQ) | tensorrt, a GPU | none |
| openvino | `<stem>.xml` (+ .bin) | onnx | openvino | parity: OpenVINO vs PyTorch |
| openvino-int8 | `<stem>.int8.xml` (+ .bin) | onnx | openvino, nncf | ap: INT8 AP drop vs fp32, NNCF accuracy control |

A writer takes the export job (`fna_zoo.export.exporter.ExportJob`: the target, the settings, the files written so
far) and the destination; it writes atomically (nothing at the destination unless the gate passed) and returns a
`FileResult`, or raises `Refused` (its gate failed) or `FormatUnavailable` (a package is missing).
"""
from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..fileio import atomic_path
from .results import FileResult, FormatUnavailable, GateResult, drop_points

__all__ = ['Format', 'FORMATS', 'get_format', 'format_table', 'Refused']

_logger = logging.getLogger(__name__)



class Job(Protocol):
    """What a writer reads of the export job (`fna_zoo.export.exporter.ExportJob` implements it)."""

    target: Any
    settings: Any
    int8_flavor: str

    def say(self, line: str) -> None: ...

    def gated(self, name: str) -> bool: ...

    def output(self, name: str) -> Path: ...

    def file(self, name: str) -> Path: ...

    def calibration(self) -> list[np.ndarray]: ...

    def gate_data(self) -> Any: ...


Writer = Callable[[Job, 'Format', Path], FileResult]


class Refused(Exception):
    """A writer's gate refused its file (nothing written); carries the one-line message and the `FileResult`."""

    def __init__(self, message: str, result: FileResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Format:
    """One export format.

    Args:
        name: What `export(formats=...)` takes ('onnx', 'onnx-int8', ...).
        suffix: The file's suffix after the output stem ('.int8.onnx').
        precision: 'fp32', 'fp16' or 'int8'.
        runtime: What runs the file ('onnxruntime', 'tensorrt', 'openvino').
        needs: Python packages it needs (import names).
        gpu: Whether it needs an NVIDIA GPU.
        gate: 'parity', 'fp16 parity', 'ap' or 'none' (see the module docstring).
        source: The format whose file it is built from (None: from the PyTorch module).
        writer: Writes the file (see the module docstring).
        description: One line.
    """

    name: str
    suffix: str
    precision: str
    runtime: str
    needs: tuple[str, ...]
    gpu: bool
    gate: str
    source: str | None
    writer: Writer
    description: str

    def missing(self) -> list[str]:
        """The packages of `needs` not importable here."""
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


# ------------------------------------------------------------------------------------------------ writers
def _size_mb(path: Path) -> float:
    return path.stat().st_size / 2 ** 20


def write_onnx(job: Job, fmt: Format, dst: Path) -> FileResult:
    """The float32 ONNX export of the target, parity-gated against PyTorch when its gate is on."""
    from .onnx_export import export_onnx, export_with_gate

    s, target = job.settings, job.target
    if job.gated(fmt.name):
        written, reports = export_with_gate(target, dst, s.batch, s.dynamic, s.opset, s.simplify, s.atol,
                                            check_batches=s.check_batches)
        for batch, report in reports:
            job.say(f'batch {batch}: {report.summary()}')
        gate = GateResult('parity', written is not None, max(r.max_abs_diff for _, r in reports), s.atol,
                          note=f"onnxruntime vs PyTorch at batch {', '.join(str(b) for b, _ in reports)}",
                          details={'reports': reports})
        if written is None:
            raise Refused(f'onnxruntime differs from PyTorch beyond the tolerance {s.atol:g}; nothing written to '
                          f'{str(dst)!r} (raise --atol if the difference is acceptable)', FileResult(fmt.name, None, [gate]))
    else:
        with atomic_path(dst, suffix='.tmp.onnx') as tmp:
            export_onnx(target, tmp, s.batch, s.dynamic, s.opset, s.simplify)
        written, gate = dst, GateResult('parity', None, note='not run (gate off)')
    h, w = target.input_size
    job.say(f'wrote {written} ({target.what}, {_size_mb(written):.1f} MB, opset {s.opset}, input {h}x{w}'
            f'{"" if not target.dynamic_size or not s.dynamic else " (H, W dynamic)"}, '
            f'batch {"dynamic" if s.dynamic else s.batch}; outputs {", ".join(target.output_names)})')
    return FileResult(fmt.name, written, [gate], _size_mb(written), info={'opset': s.opset})


def write_onnx_fp16(job: Job, fmt: Format, dst: Path) -> FileResult:
    """The mixed-precision fp16 copy of the float32 file (`export_fp16`), gated against PyTorch when on."""
    from .fp16 import export_fp16

    src = job.file(fmt.source)
    if not job.gated(fmt.name):
        from ..onnxgraph.fp16 import convert_fp16_file

        with atomic_path(dst, suffix='.tmp.onnx') as tmp:
            convert_fp16_file(src, tmp)
        return FileResult(fmt.name, dst, [GateResult('fp16 parity', None, note='not run (gate off)')], _size_mb(dst),
                          source=src)
    tol = job.settings.fp16_tol
    res = export_fp16(job.target, src, dst, tol)
    for batch, report in res.reports:
        job.say(f'fp16 batch {batch}: {report.summary()}')
    job.say(f'fp16: {res.info.summary()}')
    job.say(f'fp16: {res.coverage_line()}')
    gate = GateResult('fp16 parity', res.passed, max((r.max_abs_diff for _, r in res.reports), default=None), tol,
                      note='onnxruntime vs PyTorch fp32, max diff / output range', details={'reports': res.reports})
    info = {'fp16': res.info.summary(), 'coverage': res.coverage_line(), 'export': res}
    if not res.passed:
        raise Refused(f'the fp16 file differs from PyTorch beyond --fp16-tol {tol:g}; nothing written to '
                      f'{str(dst)!r} (raise --fp16-tol if the difference is acceptable)',
                      FileResult(fmt.name, None, [gate], source=src, info=info))
    job.say(f'wrote {res.path} (fp16, {res.mb_fp16:.1f} MB; fp32 {res.mb_fp32:.1f} MB)')
    return FileResult(fmt.name, res.path, [gate], res.mb_fp16, source=src, info=info)


def write_onnx_int8(job: Job, fmt: Format, dst: Path) -> FileResult:
    """onnxruntime static QDQ INT8 of the float32 file; with its gate on (detector with NMS), the AP gate and the
    fallback (`fna_zoo.export.int8_fallback`)."""
    from . import quantize

    src = job.file(fmt.source)
    flavor = job.int8_flavor
    info: dict[str, Any] = {'flavor': flavor, 'calibration_images': len(job.calibration())}
    if not job.gated(fmt.name) or job.target.what != 'nms':
        with atomic_path(dst, suffix='.tmp.onnx') as tmp:
            quantize.quantize_int8(src, tmp, job.calibration(), flavor=flavor)
        note = ('not run (gate off)' if not job.gated(fmt.name) else
                f'not run: the AP gate scores detections, a {job.target.what} export has none')
        job.say(f'wrote {dst} (int8, {flavor} QDQ, {_size_mb(dst):.1f} MB; AP gate {note})')
        return FileResult(fmt.name, dst, [GateResult('ap', None, note=note)], _size_mb(dst), source=src, info=info)
    return _int8_ap_gated(job, fmt, src, dst, info)


def _ap_gate_can_see(ap32: dict[str, float], dataset: Any, dst: Path) -> str | None:
    """Why a fp32 model that detects nothing on the gate data cannot vouch for its INT8 copy (None when it can).

    NOTE: an AP drop from 0 to 0 is no drop, so the gate would pass whatever the INT8 file does; a model that
    finds nothing there (untrained, or the wrong data) cannot vouch for its INT8 copy, so nothing is written.
    """
    if ap32['AP'] > 0 or ap32.get('AP50', 0) > 0:
        return None
    # NOTE: COCO metrics are -1 when the data has no ground-truth boxes at all
    found = 'no ground-truth boxes' if ap32['AP'] < 0 else f"AP {100 * ap32['AP']:.1f}, AP50 {100 * ap32.get('AP50', 0):.1f}"
    return (f'the fp32 model finds nothing on the gate data ({found} on {len(dataset)} images of '
            f"{str(getattr(dataset, 'ann_file', 'the data'))!r}), so the AP gate cannot check INT8; nothing "
            f'written to {str(dst)!r} (train the detector longer, or pass --data_path with images it '
            'detects objects in)')


def _int8_ap_gated(job: Job, fmt: Format, src: Path, dst: Path, info: dict[str, Any]) -> FileResult:
    from ..engine.evaluate import format_stats
    from . import quantize

    s, target = job.settings, job.target
    meta = target.metadata
    mean, resize = json.loads(meta['mean']), meta['resize']
    dataset, batches = job.gate_data(), job.calibration()
    ap_of = lambda path: quantize.onnx_ap(path, dataset, target.input_size, resize, mean)  # noqa: E731
    ap32 = ap_of(src)
    blind = _ap_gate_can_see(ap32, dataset, dst)
    if blind:
        gate = GateResult('ap', False, None, s.ap_drop_max, ap_before=ap32, note='the fp32 model finds nothing')
        raise Refused(blind, FileResult(fmt.name, None, [gate], source=src, info=info))
    steps: list[dict[str, Any]] = []
    kept: list[str] = []
    # NOTE: the INT8 file is built under a temp name and renamed into place only when the AP gate passes
    with atomic_path(dst, suffix='.gate.onnx') as tmp:
        quantize.quantize_int8(src, tmp, batches, flavor=job.int8_flavor)
        try:
            ap8 = ap_of(tmp)
        except Exception as e:  # noqa: BLE001  (onnxruntime's own error types: the quantized file does not run)
            # NOTE: seen on EfficientNet-Lite0 (TF "same" padding): onnxruntime's static quantization changes the
            # head's anchor count, and the in-graph NMS's TopK then fails; a gate failure, not a traceback
            why = ' '.join(str(e).split())[:160]
            gate = GateResult('ap', False, None, s.ap_drop_max, ap_before=ap32, note=f'the INT8 file fails: {why}')
            raise Refused(f'the INT8 file does not run in onnxruntime ({why}); nothing written to {str(dst)!r}',
                          FileResult(fmt.name, None, [gate], source=src, info=info)) from None
        first = ap8
        drop = ap32['AP'] - ap8['AP']
        if drop > s.ap_drop_max and s.int8_fallback:
            kept, ap8, drop = _fallback(job, src, tmp, ap_of, ap32, drop, info, steps)
        lat32, lat8 = quantize.ort_latencies_ms([src, tmp], batches[0])  # interleaved: same load on both
        size32, size8 = _size_mb(src), _size_mb(tmp)
        info.update(ms_fp32=lat32, ms_int8=lat8, mb_fp32=size32, mb_int8=size8)
        job.say(f'fp32: {format_stats(ap32)} | {size32:.2f} MB | ORT {lat32:.1f} ms (batch 1)')
        job.say(f'int8: {format_stats(ap8)} | {size8:.2f} MB | ORT {lat8:.1f} ms (batch 1)')
        shown, limit = drop_points(drop, s.ap_drop_max)
        job.say(f'int8 AP drop {shown} points (max {limit}; {len(dataset)} images, {len(batches)} calibration images)')
        note = f'{len(dataset)} gate images, {len(batches)} calibration images'
        if steps:
            note += f'; fallback: {len(kept)} layers kept float (AP before fallback {100 * first["AP"]:.2f})'
        gate = GateResult('ap', drop <= s.ap_drop_max, drop, s.ap_drop_max, ap_before=ap32, ap_after=ap8, note=note,
                          details={'ap_int8_plain': first, 'fallback_steps': steps})
        if drop > s.ap_drop_max:
            tried = f' even with {len(kept)} quantized layers kept float' if steps else ''
            raise Refused(f'INT8 AP drop {shown} points exceeds --ap-drop-max {limit}{tried}; nothing written to '
                          f'{str(dst)!r}',
                          FileResult(fmt.name, None, [gate], source=src, kept_float=kept, info=info))
    if kept:
        job.say(f'int8 kept float: {", ".join(kept)}')
    job.say(f'wrote {dst}')
    return FileResult(fmt.name, dst, [gate], _size_mb(dst), source=src, kept_float=kept, info=info)


def _fallback(job: Job, src: Path, tmp: Path, ap_of: Callable[[Path], dict[str, float]],
              ap32: dict[str, float], drop: float, info: dict[str, Any], steps: list[dict[str, Any]]
              ) -> tuple[list[str], dict[str, float], float]:
    """The INT8 fallback (`fna_zoo.export.int8_fallback`): rank the layers, keep 1, 2, 4, ... of the most sensitive
    float until the AP drop is within the limit, then halve the interval between the last count that failed and the
    first that passed (`bisect_counts`) to keep as few float as the gate allows; `tmp` ends as onnxruntime's
    quantization with them excluded. When that re-quantization fails the gate, doubling goes on from there
    without halving.

    Returns:
        (the layers kept float, the AP of `tmp`, its drop); the drop is above the limit when no step met it.
    """
    import tempfile

    from . import quantize
    from .int8_fallback import bisect_counts, fallback_schedule, keep_float, layer_sensitivity

    s, batches = job.settings, job.calibration()
    shown, limit = drop_points(drop, s.ap_drop_max)
    job.say(f'int8 AP drop {shown} points (max {limit}): ranking the quantized layers by their quantization error '
            f'on {min(len(batches), s.sensitivity_images)} calibration images')
    ranking = layer_sensitivity(src, tmp, batches[:s.sensitivity_images])
    info['sensitivity'] = [(r.node, r.error) for r in ranking]
    kept: list[str] = []
    ap8: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f'.{tmp.name}.') as work:
        plain, step = Path(work) / 'plain.onnx', Path(work) / 'step.onnx'
        tmp.replace(plain)
        last = plain  # the model `kept`, `ap8` and `drop` describe

        def passes(k: int) -> bool:
            """One step: the calibrated model with the k most sensitive layers float; whether it meets the limit."""
            nonlocal ap8, drop, kept, last
            kept = [r.node for r in ranking[:k]]
            ap8 = ap_of(keep_float(src, plain, kept, step))
            drop, last = ap32['AP'] - ap8['AP'], step
            steps.append({'float_layers': k, 'AP': ap8['AP'], 'drop': drop})
            job.say(f'int8 fallback: {k} of {len(ranking)} layers float -> AP {100 * ap8["AP"]:.2f}, drop '
                    f'{drop_points(drop, s.ap_drop_max)[0]} points')
            return drop <= s.ap_drop_max

        failed, halve = 0, True  # the largest count known to fail; whether to halve down to it
        for k in fallback_schedule(len(ranking), s.fallback_steps):
            if k <= failed:
                continue
            if not passes(k):
                failed = k
                continue
            if halve:
                k = bisect_counts(failed, k, passes)
            kept = [r.node for r in ranking[:k]]
            # NOTE: the step passed with the first calibration; the file written is onnxruntime's quantization with
            # those layers excluded, and the gate's verdict is its own AP
            quantize.quantize_int8(src, tmp, batches, flavor=job.int8_flavor, exclude=kept)
            ap8 = ap_of(tmp)
            drop, last = ap32['AP'] - ap8['AP'], tmp
            next(e for e in reversed(steps) if e['float_layers'] == k).update(AP_requantized=ap8['AP'],
                                                                              drop_requantized=drop)
            job.say(f'int8 re-quantized with those {k} layers excluded -> AP {100 * ap8["AP"]:.2f}, drop '
                    f'{drop_points(drop, s.ap_drop_max)[0]} points')
            if drop <= s.ap_drop_max:
                break
            # NOTE: the re-quantization lost more than the step: the count that passed has no margin, so the search
            # goes on doubling (the next counts re-quantized as they pass) without halving back to it
            failed, halve = k, False
        if last != tmp:  # no step passed: the model the last AP describes stands for the verdict (not written)
            last.replace(tmp)
    info['fallback_steps'] = steps
    return kept, ap8, drop


def write_tensorrt(job: Job, fmt: Format, dst: Path) -> FileResult:
    """A strongly typed TensorRT engine of the source ONNX file (its precision set by the file)."""
    from ..runtime.tensorrt import engine_plan
    from .tensorrt import build_engine

    src = job.file(fmt.source)
    engine_plan(src, fmt.precision)
    s = job.settings
    check_tensorrt(job, [fmt])
    engine = build_engine(src, dst, job.target.input_size, fmt.precision, s.batch, s.max_batch, s.dynamic,
                          s.timing_cache)
    job.say(f'wrote {engine} (TensorRT {fmt.precision}, strongly typed, from {src}; versions in {engine}.json)')
    return FileResult(fmt.name, Path(engine), [GateResult('none', None, note='the ONNX file it is built from is gated')],
                      _size_mb(Path(engine)), source=src)


def check_tensorrt(job: Job, formats: list[Format]) -> None:
    """Raise `FormatUnavailable` naming the `trtexec` command of every engine asked for when tensorrt is missing
    (their ONNX files written first)."""
    from ..runtime.tensorrt import TensorRTUnavailable, import_tensorrt, tensorrt_missing, trtexec_command

    try:
        import_tensorrt("the 'tensorrt' export format")
    except TensorRTUnavailable:
        cmds = [trtexec_command(job.file(f.source), job.output(f.name), job.target.input_size, job.settings.batch,
                                job.settings.max_batch, job.settings.dynamic) for f in formats]
        raise FormatUnavailable(str(tensorrt_missing("the 'tensorrt' export format", cmds, written=True)),
                                formats[0].name, cmds) from None


def _openvino_module(fmt: Format) -> Any:
    missing = fmt.missing()
    if missing:
        raise FormatUnavailable(f"the {fmt.name} export format needs {', '.join(missing)}; install pip install "
                                "'fna-zoo[openvino]'", fmt.name)
    from . import openvino as ov_export

    return ov_export


def openvino_run(xml: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs (by name) of an OpenVINO IR file on one input batch (the CPU, the one recipe of
    `fna_zoo.runtime.openvino`: float32 inference precision)."""
    from ..runtime.openvino import compile_model

    compiled = compile_model(xml)
    res = compiled(x)
    return {o.get_any_name(): np.asarray(res[o]) for o in compiled.outputs}


def _write_ir(job: Job, fmt: Format, dst: Path, accuracy: Any = None) -> None:
    """`export_openvino` into a temp folder beside `dst`, then .bin and .xml renamed into place (the .xml last).

    Args:
        accuracy: INT8: NNCF's accuracy control (`fna_zoo.runtime.openvino.AccuracyControl`), or None.
    """
    import tempfile

    from ..fileio import commit_file

    ov_export = _openvino_module(fmt)
    src, precision = job.file('onnx'), fmt.precision
    calib = job.calibration() if precision == 'int8' else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f'.{dst.name}.') as tmpdir:
        xml = Path(ov_export.export_openvino(src, Path(tmpdir) / dst.name, precision=precision, calibration=calib,
                                             accuracy=accuracy))
        commit_file(xml.with_suffix('.bin'), dst.with_suffix('.bin'))
        commit_file(xml, dst)


def write_openvino(job: Job, fmt: Format, dst: Path) -> FileResult:
    """An OpenVINO IR of the float32 ONNX file (`fna_zoo.export.openvino.export_openvino`), parity-gated against
    PyTorch (OpenVINO on the CPU) when its gate is on; INT8: the AP gate (detectors with NMS)."""
    from .onnx_export import parity_check

    src = job.file(fmt.source)
    _write_ir(job, fmt, dst)
    gates: list[GateResult] = []
    if job.gated(fmt.name) and fmt.gate == 'parity':
        s = job.settings
        reports = [(b, parity_check(job.target, dst, b, s.atol, run=openvino_run)) for b in (s.check_batches or [s.batch])]
        for batch, report in reports:
            job.say(f'openvino batch {batch}: {report.summary()}')
        gate = GateResult('parity', all(r.passed for _, r in reports), max(r.max_abs_diff for _, r in reports), s.atol,
                          note='OpenVINO (CPU) vs PyTorch', details={'reports': reports})
        gates.append(gate)
        if not gate.passed:
            _remove_ir(dst)
            raise Refused(f'OpenVINO differs from PyTorch beyond the tolerance {s.atol:g}; nothing written to '
                          f'{str(dst)!r}', FileResult(fmt.name, None, gates, source=src))
    elif job.gated(fmt.name) and fmt.gate == 'ap' and job.target.what == 'nms':
        gates.append(_openvino_ap_gate(job, fmt, src, dst))
    else:
        gates.append(GateResult(fmt.gate, None, note='not run' + ('' if job.gated(fmt.name) else ' (gate off)')))
    job.say(f'wrote {dst} (OpenVINO IR {fmt.precision}, {_size_mb(dst.with_suffix(".bin")):.1f} MB weights)')
    kept = list((gates[0].details or {}).get('kept_float_quantizers') or [])
    return FileResult(fmt.name, dst, gates, _size_mb(dst) + _size_mb(dst.with_suffix('.bin')), source=src,
                      kept_float=kept)


def _remove_ir(dst: Path) -> None:
    dst.unlink(missing_ok=True)
    dst.with_suffix('.bin').unlink(missing_ok=True)


def _openvino_ap_gate(job: Job, fmt: Format, src: Path, dst: Path) -> GateResult:
    """The AP gate of an OpenVINO INT8 IR against the fp32 ONNX file; when it fails and the fallback is on, the IR
    is quantized again with NNCF's accuracy control (`--ap-drop-max` as its max drop) and gated again."""
    from ..engine.evaluate import coco_evaluate
    from ..runtime.openvino import AccuracyControl, compile_model, quantizer_names, read_model
    from . import quantize
    from .int8_fallback import kept_float_of

    s, target = job.settings, job.target
    mean, resize = json.loads(target.metadata['mean']), target.metadata['resize']
    dataset = job.gate_data()
    ap32 = quantize.onnx_ap(src, dataset, target.input_size, resize, mean)

    def outputs_of(compiled: Any) -> Callable[[np.ndarray], list[np.ndarray]]:
        """Input batch -> the compiled detector's outputs, in `target.output_names` order."""
        outs = [next(o for o in compiled.outputs if name in o.get_names()) for name in target.output_names]

        def run(x: np.ndarray) -> list[np.ndarray]:
            result = compiled(x)
            return [np.asarray(result[o]) for o in outs]

        return run

    def ap_of(run: Callable[[np.ndarray], list[np.ndarray]]) -> dict[str, float]:
        return coco_evaluate(dataset.ann_file, quantize.coco_detections(run, dataset, target.input_size, resize, mean))

    first = ap8 = ap_of(outputs_of(compile_model(dst)))
    drop = ap32['AP'] - ap8['AP']
    shown, limit = drop_points(drop, s.ap_drop_max)
    job.say(f'openvino int8 AP drop {shown} points (max {limit})')
    kept: list[str] = []
    if drop > s.ap_drop_max and s.int8_fallback:
        job.say(f'openvino int8: NNCF quantization with accuracy control (max drop {100 * s.ap_drop_max:.2f} AP '
                f'points on the {len(dataset)} gate images)')
        plain = quantizer_names(read_model(dst))
        inputs = [quantize.preprocess(dataset[i][0], target.input_size, resize, mean)[0][None]
                  for i in range(len(dataset))]

        def metric(compiled: Any, items: list[int]) -> tuple[float | None, list[list[np.ndarray]]]:
            run = outputs_of(compiled)
            # NOTE: NNCF scores the whole gate set only (in any order); a part has no AP
            if sorted(items) != list(range(len(inputs))):
                return None, [run(inputs[i]) for i in items]
            raw: list[list[np.ndarray]] = []  # the AP's own pass over the images, in order, gives their outputs

            def record(x: np.ndarray) -> list[np.ndarray]:
                raw.append(run(x))
                return raw[-1]

            ap = ap_of(record)['AP']
            return ap, [raw[i] for i in items]

        try:
            _write_ir(job, fmt, dst, AccuracyControl(inputs, metric, s.ap_drop_max, frozenset(plain)))
            kept = kept_float_of(dst)
            ap8 = ap_of(outputs_of(compile_model(dst)))
        except Exception as e:
            _remove_ir(dst)  # NOTE: the plain IR failed its gate: nothing stays at `dst`
            if isinstance(e, RuntimeError) and 'without quantized nodes' in str(e):
                gate = GateResult('ap', False, drop, s.ap_drop_max, ap_before=ap32, ap_after=first,
                                  note='NNCF accuracy control reverted every quantizer')
                raise Refused(f'OpenVINO INT8 AP drop {shown} points exceeds --ap-drop-max {limit} and NNCF\'s '
                              f'accuracy control reverted every quantizer; nothing written to {str(dst)!r}',
                              FileResult(fmt.name, None, [gate], source=src)) from None
            raise
        drop = ap32['AP'] - ap8['AP']
        job.say(f'openvino int8 with accuracy control: {len(kept)} of {len(plain)} quantizers reverted to float -> '
                f'AP drop {drop_points(drop, s.ap_drop_max)[0]} points')
    note = f'OpenVINO INT8 vs onnxruntime fp32 on {len(dataset)} gate images'
    if first is not ap8:
        note += (f'; NNCF accuracy control: {len(kept)} quantizer{"s" if len(kept) != 1 else ""} float (AP before '
                 f'{100 * first["AP"]:.2f})')
    gate = GateResult('ap', drop <= s.ap_drop_max, drop, s.ap_drop_max, ap_before=ap32, ap_after=ap8, note=note,
                      details={'ap_int8_plain': first, 'kept_float_quantizers': kept})
    if not gate.passed:
        _remove_ir(dst)
        tried = ' even with NNCF\'s accuracy control' if first is not ap8 else ''
        shown, limit = drop_points(drop, s.ap_drop_max)
        raise Refused(f'OpenVINO INT8 AP drop {shown} points exceeds --ap-drop-max {limit}{tried}; nothing written to '
                      f'{str(dst)!r}', FileResult(fmt.name, None, [gate], source=src))
    return gate


# ------------------------------------------------------------------------------------------------ the table
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format('onnx', '.onnx', 'fp32', 'onnxruntime', ('onnx', 'onnxruntime'), False, 'parity', None, write_onnx,
           'ONNX float32 (backbone, raw detector or detector with in-graph NMS), normalisation inside'),
    Format('onnx-fp16', '.fp16.onnx', 'fp16', 'onnxruntime', ('onnx', 'onnxruntime'), False, 'fp16 parity', 'onnx',
           write_onnx_fp16, 'mixed precision: the network in fp16; normalisation, decoding, NMS, inputs and outputs float32'),
    Format('onnx-int8', '.int8.onnx', 'int8', 'onnxruntime', ('onnx', 'onnxruntime'), False, 'ap', 'onnx',
           write_onnx_int8, 'onnxruntime static QDQ INT8 (network only), AP-gated, sensitive layers kept float on failure'),
    Format('tensorrt', '.engine', 'fp32', 'tensorrt', ('tensorrt',), True, 'none', 'onnx', write_tensorrt,
           'strongly typed TensorRT engine of the float32 file'),
    Format('tensorrt-fp16', '.fp16.engine', 'fp16', 'tensorrt', ('tensorrt',), True, 'none', 'onnx-fp16',
           write_tensorrt, 'strongly typed TensorRT engine of the fp16 file'),
    Format('tensorrt-int8', '.int8.engine', 'int8', 'tensorrt', ('tensorrt',), True, 'none', 'onnx-int8',
           write_tensorrt, "strongly typed TensorRT engine of the INT8 file (TensorRT's QDQ: symmetric, float biases)"),
    Format('openvino', '.xml', 'fp32', 'openvino', ('openvino',), False, 'parity', 'onnx', write_openvino,
           'OpenVINO IR (.xml + .bin) of the float32 file'),
    Format('openvino-int8', '.int8.xml', 'int8', 'openvino', ('openvino', 'nncf'), False, 'ap', 'onnx',
           write_openvino, 'OpenVINO IR INT8 (NNCF post-training quantization, the same calibration images), AP-gated, '
           "NNCF's accuracy control on failure"),
)}


def get_format(name: str) -> Format:
    """The format of that name, or a ValueError naming the bad value and the known formats.

    Args:
        name: A format name ('onnx', 'onnx-int8', ...).
    """
    if name not in FORMATS:
        raise ValueError(f'export format {name!r} is unknown; expected one of {", ".join(FORMATS)}')
    return FORMATS[name]


def format_table() -> list[dict[str, Any]]:
    """The table as rows (name, suffix, precision, runtime, needs, gpu, gate, source, available here)."""
    return [{'format': f.name, 'suffix': f.suffix, 'precision': f.precision, 'runtime': f.runtime,
             'needs': ', '.join(f.needs) + (', a GPU' if f.gpu else ''), 'gate': f.gate, 'source': f.source or 'module',
             'missing': ', '.join(f.missing())} for f in FORMATS.values()]

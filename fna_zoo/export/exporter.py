"""One exporter: `export(model, formats=[...])` writes every format of the table (`fna_zoo.export.formats`) with its
gate, and returns what it wrote (`ExportResult`).

    from fna_zoo.export import export

    res = export('runs/demo/final.pth', formats=['onnx', 'onnx-int8'], ap_drop_max=0.005)
    print(res.summary())          # one line per file: path, size, each gate's verdict
    res['onnx-int8'].kept_float   # the layers the INT8 fallback kept in float
    res['onnx-int8'].gate('ap')   # AP before (fp32) and after (INT8), the drop and the limit

`model` is a retrain checkpoint (the detector, with in-graph NMS by default), a zoo arch / timm model name or
arch file (its backbone), a built module (a RetinaNet / SSDLite detector or a `features_only` backbone), or an
`ExportTarget`. Each format is written once, atomically, after the formats it is built from (the fp16, INT8,
TensorRT and OpenVINO files from the float32 ONNX file); a file whose gate fails is not written and, with
`strict=True` (the default), raises `ExportGateError` (its `.result` holds what was written before).

`fna-export` parses its flags into this call and prints the lines it reports; `fna-bench --ap` writes its
deployment table's files through the same job (`ExportJob`) with the gates of the fp16 and INT8 files off (its
AP column is their check).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from torch import nn

from ..runtime.runners import DEFAULT_OPSET
from .formats import FORMATS, Format, Refused, check_tensorrt, get_format
from .results import ExportGateError, ExportResult, FileResult, FormatUnavailable, GateResult

__all__ = ['ExportSettings', 'ExportJob', 'export', 'resolve_target', 'expand_formats']

_logger = logging.getLogger(__name__)

# NOTE: the stage ends of a backbone with output stride 32 (every FNA arch, `fna_zoo.arch.check_arch`, and timm's
# EfficientNet / MobileNet family): strides 2, 4, 8, 16, 32
FEATURE_LEVELS = 5
PRECISIONS = ('fp32', 'fp16', 'int8')


@dataclass
class ExportSettings:
    """Everything an export may set besides the model and the formats (`fna-export`'s flags of the same names).

    Args:
        what: 'backbone', 'raw' or 'nms' (default: nms for detectors, backbone otherwise).
        input_size: (H, W) (default: 224 x 224 for backbones, the detector's own size).
        batch: Export batch size.
        dynamic: Dynamic batch (and H, W for backbones).
        opset: ONNX opset.
        simplify: Run onnxslim on the float32 file.
        atol: Parity tolerance (onnxruntime / OpenVINO vs PyTorch).
        check_batches: Batch sizes of the parity gate (default: the export batch, and batch + 2 when dynamic).
        out_indices: Backbone feature indices (default 1 2 3 4).
        seed_weights: Backbone seed weights ('timm', a file or None).
        score_thresh: nms: score threshold (default: the detector's).
        iou_thresh: nms: NMS IoU threshold.
        max_dets: nms: detections per image.
        fp16_tol: fp16 gate tolerance (a fraction of each output's range).
        calib_images: INT8 calibration images.
        data_path: COCO tree for calibration and the AP gate (default: the checkpoint's data).
        ap_drop_max: Largest accepted INT8 AP drop, AP units [0, 1].
        int8_fallback: On an AP gate failure, keep the most sensitive layers float until the drop is within
            `ap_drop_max` (`fna_zoo.export.int8_fallback`; OpenVINO INT8: NNCF's accuracy control).
        fallback_steps: Most doubling steps of the fallback (halving then adds at most log2 of the last interval).
        sensitivity_images: Calibration images the layer ranking is measured on.
        max_batch: TensorRT: largest batch of the optimisation profile.
        timing_cache: TensorRT timing cache file.
    """

    what: str | None = None
    input_size: tuple[int, int] | None = None
    batch: int = 1
    dynamic: bool = True
    opset: int = DEFAULT_OPSET
    simplify: bool = False
    atol: float = 1e-3
    check_batches: Sequence[int] | None = None
    out_indices: Sequence[int] | None = None
    seed_weights: Any = None
    score_thresh: float | None = None
    iou_thresh: float | None = None
    max_dets: int | None = None
    fp16_tol: float | None = None
    calib_images: int = 32
    data_path: str | os.PathLike | None = None
    ap_drop_max: float = 0.02
    int8_fallback: bool = True
    fallback_steps: int = 8
    sensitivity_images: int = 8
    max_batch: int = 32
    timing_cache: str | os.PathLike | None = None

    def check(self) -> None:
        """Every check that needs no model: one ValueError naming the bad value and what was expected."""
        from ..checks import check_input_size
        from .fp16 import DEFAULT_FP16_TOL
        from .onnx_export import MAX_OPSET, MIN_OPSET

        if self.what is not None and self.what not in ('backbone', 'raw', 'nms'):
            raise ValueError(f"--what is {self.what!r}; expected 'backbone', 'raw' or 'nms'")
        if self.input_size is not None:
            check_input_size(self.input_size, 'backbone' if self.what == 'backbone' else 'detector')
        if self.batch < 1:
            raise ValueError(f'--batch is {self.batch}; expected a positive integer')
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f'--opset is {self.opset}; expected {MIN_OPSET}..{MAX_OPSET}')
        if self.score_thresh is not None and not 0 <= self.score_thresh < 1:
            raise ValueError(f'--score-thresh is {self.score_thresh}; expected a value in [0, 1)')
        if self.iou_thresh is not None and not 0 < self.iou_thresh <= 1:
            raise ValueError(f'--iou-thresh is {self.iou_thresh}; expected a value in (0, 1]')
        if self.max_dets is not None and self.max_dets < 1:
            raise ValueError(f'--max-dets is {self.max_dets}; expected a positive integer')
        if not 0 < self.atol < math.inf:  # NOTE: written so, as nan fails every comparison
            raise ValueError(f'--atol is {self.atol}; expected a positive tolerance')
        if self.out_indices is not None and (len(set(self.out_indices)) != len(self.out_indices)
                                             or not all(0 <= i < FEATURE_LEVELS for i in self.out_indices)):
            raise ValueError(f'--out-indices {" ".join(map(str, self.out_indices))} is invalid; expected distinct '
                             f'feature levels 0..{FEATURE_LEVELS - 1} (strides 2, 4, 8, 16, 32)')
        self.fp16_tol = DEFAULT_FP16_TOL if self.fp16_tol is None else self.fp16_tol
        if not 0 < self.fp16_tol < 1:  # NOTE: written so, as nan fails every comparison
            raise ValueError(f'--fp16-tol is {self.fp16_tol}; expected a fraction in (0, 1) of the output range')
        if self.calib_images < 1:
            raise ValueError(f'--calib-images is {self.calib_images}; expected at least 1')
        if not 0 <= self.ap_drop_max <= 1:
            raise ValueError(f'--ap-drop-max is {self.ap_drop_max}; expected AP units in [0, 1] (0.02 = 2 points)')
        if self.fallback_steps < 1 or self.sensitivity_images < 1:
            raise ValueError(f'fallback_steps {self.fallback_steps} / sensitivity_images {self.sensitivity_images}; '
                             'expected positive integers')
        if self.max_batch < self.batch:
            raise ValueError(f'--max-batch {self.max_batch} is below --batch {self.batch}; expected max-batch >= batch')
        if self.data_path is not None:
            from ..assets.store import resolve_asset
            from ..checks import check_input_folder

            check_input_folder(resolve_asset(self.data_path), 'data folder',
                               'a COCO tree (annotations/instances_<split>.json, <split>/)')
        if self.simplify:
            try:
                import onnxslim  # noqa: F401
            except ImportError:
                raise ValueError("--simplify needs onnxslim; install it with pip install 'fna-zoo[slim]' "
                                 '(or pip install onnxslim)') from None


class ExportJob:
    """The files of one target, each written once (by its format's writer, `fna_zoo.export.formats`), the formats
    it is built from first.

    Args:
        target: What to export (`ExportTarget`).
        settings: The settings (checked).
        output: The float32 ONNX file; the others default to `<its stem><format suffix>`.
        outputs: Other destinations by format name.
        gate: Which formats' gates run: True (all), False (none) or format names.
        cfg: The run config of the checkpoint (calibration and gate data), or None.
        calibration: Calibration batches (input arrays [1, 3, H, W] in [0, 1]), or a function giving them when
            first needed, instead of reading the data.
        given: Existing files by format (used as they are, not written).
        report: Where progress lines go (default: the log at INFO).
        int8_flavor: 'onnxruntime' or 'tensorrt' (`quantize_int8`).
    """

    def __init__(self, target: Any, settings: ExportSettings, output: str | os.PathLike,
                 outputs: dict[str, str | os.PathLike] | None = None, gate: bool | Iterable[str] = True,
                 cfg: dict[str, Any] | None = None,
                 calibration: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]] | None = None,
                 given: dict[str, Path] | None = None, report: Callable[[str], Any] | None = None,
                 int8_flavor: str = 'onnxruntime') -> None:
        self.target, self.settings, self.cfg = target, settings, cfg
        self._output = Path(output)
        self._outputs = {k: Path(v) for k, v in (outputs or {}).items()}
        for name in self._outputs:
            get_format(name)
        self._gate = gate if isinstance(gate, bool) else {get_format(g).name for g in gate}
        self._report = report
        self.int8_flavor = int8_flavor
        self._calibration = calibration if calibration is None or callable(calibration) else list(calibration)
        self._dataset: Any = None
        self.results: dict[str, FileResult] = {}
        self._errors: dict[str, Exception] = {}
        for name, path in (given or {}).items():
            self.results[get_format(name).name] = FileResult(name, Path(path), [GateResult('given', None,
                                                             note='a file given, used as it is')], info={'given': True})

    def say(self, line: str) -> None:
        """A progress line: to `report`, else the log."""
        if self._report is not None:
            self._report(line)
        else:
            _logger.info(line)

    def gated(self, name: str) -> bool:
        """Whether the format's gate runs."""
        return self._gate if isinstance(self._gate, bool) else name in self._gate

    def output(self, name: str) -> Path:
        """Where the format's file goes."""
        if name in self._outputs:
            return self._outputs[name]
        fmt = get_format(name)
        if name == 'onnx':
            return self._output
        if fmt.runtime == 'tensorrt':  # NOTE: beside the ONNX file it is built from, as `<its stem>.engine`
            return self.output(fmt.source).with_suffix('.engine')
        return self._output.with_name(self._output.name[:-len('.onnx')] + fmt.suffix)

    def file(self, name: str) -> Path:
        """The format's file, written on first use (the formats it is built from first).

        Raises:
            ExportGateError: Its gate (or the gate of a file it is built from) refused it.
            FormatUnavailable: It needs a missing package.
        """
        if name in self._errors:  # NOTE: once: what is built on a refused file shares its refusal
            raise self._errors[name]
        if name not in self.results:
            fmt = get_format(name)
            try:
                self.results[name] = fmt.writer(self, fmt, self.output(name))
            except Refused as e:
                self.results[name] = e.result
                self._errors[name] = ExportGateError(str(e))
                raise self._errors[name] from None
            except ExportGateError as e:  # a source's refusal
                self._errors[name] = e
                self.results.setdefault(name, FileResult(name, None, info={'skipped': f'its source failed: {e}'}))
                raise
        return self.results[name].path

    def calibration(self) -> list[np.ndarray]:
        """The INT8 calibration batches (`calib_images` training images, deployment pre-processing)."""
        if callable(self._calibration):
            self._calibration = list(self._calibration())
        if self._calibration is None:
            from .quantize import calibration_batches, calibration_images

            meta = self.target.metadata
            images = calibration_images(self.cfg, self.settings.calib_images, self.settings.data_path)
            self._calibration = calibration_batches(images, self.target.input_size, meta.get('resize', 'stretch'),
                                                    json.loads(meta['mean']))
        return self._calibration

    def gate_data(self) -> Any:
        """The AP gate's dataset (the run's validation split, or `data_path`'s), every image decoded once."""
        if self._dataset is None:
            from .quantize import eval_dataset

            dataset = eval_dataset(self.cfg, self.settings.data_path)
            # NOTE: the gate decodes its images only after the float32 export; reading them once here makes an
            # undecodable one fail before any output is opened
            dataset.check_images()
            self._dataset = dataset
        return self._dataset


def expand_formats(formats: str | Sequence[str], precision: str | Sequence[str] | None = None) -> list[str]:
    """Format names, checked; with `precision`, each base format ('onnx', 'tensorrt', 'openvino') once per precision
    ('fp32' is the base name itself, others `<base>-<precision>`).

    Args:
        formats: Names from `FORMATS`.
        precision: 'fp32', 'fp16', 'int8' or several.
    """
    names = [formats] if isinstance(formats, str) else list(formats)
    if not names:
        raise ValueError(f'no export format given; expected some of {", ".join(FORMATS)}')
    for n in names:
        get_format(n)
    if precision is None:
        return list(dict.fromkeys(names))
    precisions = [precision] if isinstance(precision, str) else list(precision)
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f'precision {p!r} is unknown; expected some of {", ".join(PRECISIONS)}')
    out = []
    for n in names:
        base = n.split('-')[0]
        for p in precisions:
            name = base if p == 'fp32' else f'{base}-{p}'
            if name not in FORMATS:
                raise ValueError(f'format {base!r} has no {p} form; expected one of {", ".join(FORMATS)}')
            out.append(name)
    return list(dict.fromkeys(out))


def resolve_target(model: Any, settings: ExportSettings, name: str | None = None
                   ) -> tuple[Any, dict[str, Any] | None, str, Path | None]:
    """(ExportTarget, run config or None, a name for it, the checkpoint path or None) of what `export` takes.

    Args:
        model: A checkpoint path, a model name / arch file / `Arch`, a module, or an `ExportTarget`.
        settings: The settings (what, input size, NMS options, backbone options).
        name: How to name a backbone in the file's metadata (default: the model string, or 'arch').
    """
    from .onnx_export import (ExportTarget, backbone_module_target, backbone_target, detector_module_target,
                              detector_target)

    s = settings
    size = tuple(s.input_size) if s.input_size else None
    if isinstance(model, ExportTarget):
        return model, None, model.metadata.get('backbone', model.what), None
    if isinstance(model, nn.Module):
        from ..detection import DETECTORS

        if isinstance(model, tuple(spec.detector_class for spec in DETECTORS.values())):
            return (detector_module_target(model, _detector_what(s.what, type(model).__name__), size, s.score_thresh,
                                           s.iou_thresh, s.max_dets), None, type(model).__name__, None)
        _backbone_what(s, type(model).__name__)
        return backbone_module_target(model, size or (224, 224)), None, type(model).__name__, None
    if isinstance(model, (str, os.PathLike)):
        from ..specs import resolve_model

        spec = resolve_model(str(model))
        if spec.kind == 'onnx':
            raise ValueError(f'model {str(model)!r} is an ONNX file; expected a checkpoint, a model name or a module '
                             'to export')
        if spec.kind == 'checkpoint':
            from ..checkpoint import read_checkpoint

            target = detector_target(model, _detector_what(s.what, str(model)), size, s.score_thresh, s.iou_thresh,
                                     s.max_dets)
            return target, read_checkpoint(model).config, str(model), Path(model)
        model = str(model)
    from .. import fna  # noqa: F401  (registers the fna* models)

    _backbone_what(s, str(model))
    name = name or (model if isinstance(model, str) else 'arch')
    return backbone_target(model, s.seed_weights, s.out_indices, size or (224, 224), name=name), None, name, None


def _detector_what(what: str | None, name: str) -> str:
    if what == 'backbone':
        raise ValueError(f"what='backbone' exports a backbone; {name} is a detector (expected 'raw' or 'nms')")
    return what or 'nms'


def _backbone_what(s: ExportSettings, name: str) -> None:
    if s.what not in (None, 'backbone'):
        raise ValueError(f'what={s.what!r} needs a detector (a retrain checkpoint or a RetinaNet / SSDLite module); '
                         f'{name} is a backbone')
    if s.score_thresh is not None or s.iou_thresh is not None or s.max_dets is not None:
        raise ValueError('--score-thresh / --iou-thresh / --max-dets apply to --what nms; expected no NMS options here')


def _default_output(name: str, checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        return checkpoint.with_suffix('.onnx')
    stem = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in Path(name).name.replace('timm:', ''))
    return Path(stem.removesuffix('.yaml').removesuffix('.json').removesuffix('.txt') + '.onnx')


def export(model: Any, formats: str | Sequence[str] = 'onnx', *, precision: str | Sequence[str] | None = None,
           output: str | os.PathLike | None = None, outputs: dict[str, str | os.PathLike] | None = None,
           gate: bool | Iterable[str] = True, strict: bool = True,
           calibration: Sequence[np.ndarray] | None = None, report: Callable[[str], Any] | None = None,
           settings: ExportSettings | None = None, name: str | None = None, **options: Any) -> ExportResult:
    """Export a model to every format asked for, each gated, and return what was written.

    Args:
        model: A retrain checkpoint path (its detector), a zoo arch / timm model name or arch file (its backbone),
            a RetinaNet / SSDLite module or a `features_only` backbone module, or an `ExportTarget`.
        formats: Names from the format table (`fna_zoo.export.formats.FORMATS`: 'onnx', 'onnx-fp16', 'onnx-int8',
            'tensorrt', 'tensorrt-fp16', 'tensorrt-int8', 'openvino', 'openvino-int8').
        precision: Optional 'fp32' / 'fp16' / 'int8' (or several): each base format in each precision
            (`formats=['onnx'], precision=['fp32', 'int8']` is 'onnx' and 'onnx-int8').
        output: The float32 ONNX file (default: beside the checkpoint, else `<name>.onnx` here); the other
            formats go beside it as `<stem><suffix>` (`FORMATS[...].suffix`).
        outputs: Other destinations by format name.
        gate: Run the gates: True (every format's), False (none), or the format names whose gates run.
        strict: Raise `ExportGateError` when a gate refuses a file (False: record it in the result and go on
            with the formats not built on it).
        calibration: INT8 calibration input batches ([1, 3, H, W] float32 in [0, 1]) instead of reading
            `calib_images` images of the data.
        report: Where progress lines go (`fna-export` passes `print`; default: the log at INFO).
        settings: An `ExportSettings`; or its fields as keyword `options` (input_size=..., ap_drop_max=...).
        name: How to name a backbone in the file's metadata (default: the model string).

    Returns:
        An `ExportResult`: one `FileResult` per format written (and per format they are built from), the
        settings used and the target.

    Raises:
        ValueError: A bad format name, setting or model (one line naming the value and what was expected).
        ExportGateError: A gate refused a file (strict); nothing written at its path.
        FormatUnavailable: A format needs a missing package (the files it is built from are written).
    """
    s = settings if settings is not None else ExportSettings()
    for k, v in options.items():
        if k not in ExportSettings.__dataclass_fields__:
            raise ValueError(f'export option {k!r} is unknown; expected one of '
                             f'{", ".join(ExportSettings.__dataclass_fields__)}')
        setattr(s, k, v)
    names = expand_formats(formats, precision)
    s.check()
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ValueError(f"exporting needs onnx and onnxruntime ({e}); install pip install 'fna-zoo[export]'") from None
    from ..checks import check_output_path

    target, cfg, name, checkpoint = resolve_target(model, s, name)
    out = check_output_path(output if output is not None else _default_output(name, checkpoint), '.onnx')
    tensorrt_int8 = 'tensorrt-int8' in names
    job = ExportJob(target, s, out, outputs, gate, cfg, calibration, report=report,
                    int8_flavor='tensorrt' if tensorrt_int8 else 'onnxruntime')
    # every format with the formats it is built from, sources first, engines last (one tensorrt check for all)
    order: list[str] = []

    def add(n: str) -> None:
        src = FORMATS[n].source
        if src is not None:
            add(src)
        if n not in order:
            order.append(n)

    for n in names:
        add(n)
    order.sort(key=lambda n: FORMATS[n].runtime == 'tensorrt')
    paths = {}
    for n in order:
        p = job.output(n).resolve()
        if p in paths:
            raise ValueError(f'{n} output {str(job.output(n))!r} is the {paths[p]} output; expected another file')
        paths[p] = n
    if any(job.gated(n) and FORMATS[n].gate == 'ap' for n in order) and target.what == 'nms':
        # NOTE: the INT8 inputs (gate data, calibration images) are read, every image decoded, before anything is
        # written, so bad data fails with nothing written
        job.gate_data()
        job.calibration()
    result = ExportResult(name, target.what, settings={**asdict(s), 'formats': order, 'output': out,
                                                       'gate': sorted(job._gate) if not isinstance(job._gate, bool)
                                                       else job._gate, 'int8_flavor': job.int8_flavor},
                          target=target)
    engines = [FORMATS[n] for n in order if FORMATS[n].runtime == 'tensorrt']
    for n in order:
        if engines and FORMATS[n] is engines[0]:
            from ..runtime.tensorrt import engine_plan

            for f in engines:  # NOTE: the file sets the precision; a refusal is a user error
                engine_plan(job.file(f.source), f.precision)
            check_tensorrt(job, engines)
        try:
            job.file(n)
        except ExportGateError as e:
            if strict:
                raise ExportGateError(str(e), _collect(result, job, order)) from None
            _logger.warning('%s', e)
    return _collect(result, job, order)


def _collect(result: ExportResult, job: ExportJob, order: list[str]) -> ExportResult:
    result.files = [job.results[n] for n in order if n in job.results]
    return result

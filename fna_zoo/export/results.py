"""What `fna_zoo.export.export` returns: every file it wrote, each gate's result and the settings used.

`ExportResult.files` holds one `FileResult` per format asked for (and per format they were built from), in the
order they were written; each carries its gates (`GateResult`: parity against PyTorch, the fp16 parity, the
INT8 AP gate with the AP before and after, and the INT8 fallback's layers kept float). `ExportResult.summary()`
is what `fna-export` prints at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ['GateResult', 'FileResult', 'ExportResult', 'ExportGateError', 'FormatUnavailable', 'drop_points']


def drop_points(drop: float, limit: float) -> tuple[str, str]:
    """An AP drop and its limit in AP points, as the INT8 gates' messages print them side by side.

    NOTE: 2 decimals, more (up to 4) where 2 would print a drop that differs from the limit as the limit itself:
    a drop that misses 0.50 points by a hair would read '0.50 points exceeds --ap-drop-max 0.50'.

    Args:
        drop: The AP drop, AP units.
        limit: The largest accepted drop, AP units.
    """
    for digits in (2, 3, 4):
        pair = f'{100 * drop:.{digits}f}', f'{100 * limit:.{digits}f}'
        if pair[0] != pair[1] or drop == limit:
            break
    return pair


@dataclass
class GateResult:
    """One gate's verdict on one file.

    Args:
        name: 'parity' (the export against PyTorch, max abs diff), 'fp16 parity' (max diff over each output's
            range) or 'ap' (the INT8 AP drop against fp32 on the gate data).
        passed: True / False; None when the gate did not run (`note` says why).
        value: What was measured: the largest difference (parity) or the AP drop in AP units (ap).
        tolerance: The limit `value` is held to.
        ap_before: ap: the fp32 file's COCO metrics on the gate data.
        ap_after: ap: the written INT8 file's (after the fallback, when it ran).
        note: One line: what was checked, or why not.
        details: Per-batch parity reports, per-output differences, fallback steps.
    """

    name: str
    passed: bool | None
    value: float | None = None
    tolerance: float | None = None
    ap_before: dict[str, float] | None = None
    ap_after: dict[str, float] | None = None
    note: str = ''
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the verdict and what was measured."""
        verdict = {True: 'PASSED', False: 'FAILED', None: 'not run'}[self.passed]
        if self.name == 'ap' and self.ap_before is not None and self.ap_after is not None:
            drop, limit = drop_points(self.value or 0, self.tolerance or 0)
            text = (f"ap {verdict}: AP {100 * self.ap_before['AP']:.2f} -> {100 * self.ap_after['AP']:.2f} "
                    f'(drop {drop} points, max {limit})')
        elif self.value is not None:
            text = f'{self.name} {verdict}: {self.value:.3g} (tolerance {self.tolerance:.3g})'
        else:
            text = f'{self.name} {verdict}'
        return f'{text}; {self.note}' if self.note else text


@dataclass
class FileResult:
    """One format's file.

    Args:
        format: The format's name in `fna_zoo.export.formats.FORMATS` ('onnx', 'onnx-int8', ...).
        path: The file written, None when its gate failed (nothing written) or it was skipped.
        gates: Its gates, in the order they ran.
        size_mb: The file's size (MiB).
        source: The file it was built from (None for the float32 ONNX export).
        kept_float: onnx-int8: the quantizable layers (ONNX node names) the fallback kept in float.
        info: Format-specific facts (fp16 conversion summary, INT8 flavour, latency, ...).
    """

    format: str
    path: Path | None
    gates: list[GateResult] = field(default_factory=list)
    size_mb: float | None = None
    source: Path | None = None
    kept_float: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the file was written and no gate failed."""
        return self.path is not None and all(g.passed is not False for g in self.gates)

    def gate(self, name: str) -> GateResult | None:
        """The gate of that name, or None."""
        return next((g for g in self.gates if g.name == name), None)

    def summary(self) -> str:
        """One line: the format, the file and its gates (the INT8 gate's note names the layers kept float)."""
        where = f'{self.path} ({self.size_mb:.2f} MB)' if self.path is not None else 'nothing written'
        gates = '; '.join(g.summary() for g in self.gates) or 'no gate'
        return f'{self.format}: {where}; {gates}'


@dataclass
class ExportResult:
    """What `fna_zoo.export.export` did.

    Args:
        source: What was exported (a checkpoint path, a model name, or the module's class name).
        what: 'backbone', 'raw' or 'nms'.
        files: One entry per format, in the order written.
        settings: The settings used (input size, opset, tolerances, calibration, ...).
        target: The `ExportTarget` (its module is the PyTorch reference).
    """

    source: str
    what: str
    files: list[FileResult] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    target: Any = None

    @property
    def passed(self) -> bool:
        """Whether every format was written with its gates passed."""
        return all(f.passed for f in self.files)

    def __getitem__(self, fmt: str) -> FileResult:
        for f in self.files:
            if f.format == fmt:
                return f
        raise KeyError(f'format {fmt!r} was not exported; exported: {", ".join(f.format for f in self.files)}')

    def __contains__(self, fmt: object) -> bool:
        return any(f.format == fmt for f in self.files)

    @property
    def paths(self) -> dict[str, Path]:
        """The written files by format."""
        return {f.format: f.path for f in self.files if f.path is not None}

    def summary(self) -> str:
        """Lines: one per file (see `FileResult.summary`)."""
        return '\n'.join(f.summary() for f in self.files)

    def __str__(self) -> str:
        return f'ExportResult({self.source}, {self.what})\n{self.summary()}'


class ExportGateError(Exception):
    """A gate refused a file (parity, fp16 parity, INT8 AP drop): nothing was written at that file's path.

    Args:
        message: One line: what failed and what to change.
        result: What was written before (the failed file is in it, `path` None).
    """

    def __init__(self, message: str, result: ExportResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class FormatUnavailable(ValueError):
    """A format needs a package that is missing (the files it would be built from are written).

    Args:
        message: One line: what needs what, and what to install.
        format: The format's name.
        commands: Commands that build the same files elsewhere (TensorRT: `trtexec`).
    """

    def __init__(self, message: str, format: str, commands: list[str] | None = None) -> None:
        super().__init__(message)
        self.format, self.commands = format, list(commands or [])

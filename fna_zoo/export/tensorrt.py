"""TensorRT engines from the exported ONNX files (`fna-export --format engine`; needs the `tensorrt` package).

The engine builder and runner live in `fna_zoo.runtime.tensorrt` (fna-bench and the latency tables time
engines with them too). Engines are strongly typed (TensorRT 10 and 11): a fp32 engine is built from the
float32 export, a fp16 engine from the fp16 export (`fna_zoo.export.fp16`), an int8 engine from the QDQ export
(`fna_zoo.export.quantize`, TensorRT flavour); `engine_plan` refuses any other pairing. This module words a
missing `tensorrt` for the export: the ONNX files are written, and `TensorRTUnavailable` carries the `trtexec`
command that builds the same engine.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..runtime.tensorrt import (EngineRunner, EnginePlan, Precision, TensorRTUnavailable, engine_plan, import_tensorrt,
                                tensorrt_missing, trtexec_command)
from ..runtime.tensorrt import build_engine as _build_engine

__all__ = ['TensorRTUnavailable', 'Precision', 'EnginePlan', 'engine_plan', 'trtexec_command', 'build_engine',
           'import_tensorrt', 'EngineRunner']

_logger = logging.getLogger(__name__)


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_size: tuple[int, int],
                 precision: Precision = 'fp32', batch: int = 1, max_batch: int = 32, dynamic: bool = True,
                 timing_cache: str | os.PathLike | None = None, workspace_gib: float = 4.0) -> Path:
    """`fna_zoo.runtime.tensorrt.build_engine` for `fna-export --format engine` (same arguments, documented
    there), whose error names the trtexec command that builds the same engine.

    Raises:
        ValueError: `onnx_path` cannot give `precision` (see `engine_plan`).
        TensorRTUnavailable: `tensorrt` is missing; the message holds the equivalent `trtexec` command.
    """
    engine_plan(onnx_path, precision)
    try:
        import_tensorrt('--format engine')
    except TensorRTUnavailable:
        raise tensorrt_missing('--format engine', [trtexec_command(onnx_path, engine_path, input_size, batch, max_batch,
                                                                   dynamic)], written=True) from None
    return _build_engine(onnx_path, engine_path, input_size, precision, batch=batch, max_batch=max_batch,
                         dynamic=dynamic, timing_cache=timing_cache, workspace_gib=workspace_gib,
                         why='--format engine')

"""TensorRT engines from the exported ONNX files (`fna-export --format engine`; needs the `tensorrt` package).

The engine builder and runner live in `fna_zoo.runtime.tensorrt` (fna-bench and the latency tables time
engines with them too); this module names them for the export and words a missing `tensorrt` for it: the
ONNX file is written, and `TensorRTUnavailable` carries the `trtexec` command that builds the same engine.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..runtime.tensorrt import (EngineRunner, Precision, TensorRTUnavailable, import_tensorrt, trtexec_command)
from ..runtime.tensorrt import build_engine as _build_engine

__all__ = ['TensorRTUnavailable', 'Precision', 'trtexec_command', 'build_engine', 'import_tensorrt', 'EngineRunner']

_logger = logging.getLogger(__name__)


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_size: tuple[int, int],
                 precision: Precision = 'fp32', batch: int = 1, max_batch: int = 32, dynamic: bool = True,
                 timing_cache: str | os.PathLike | None = None, workspace_gib: float = 4.0,
                 calib_images: Iterable[np.ndarray] | None = None) -> Path:
    """`fna_zoo.runtime.tensorrt.build_engine` for `fna-export --format engine` (same arguments, documented
    there), whose error names the trtexec command that builds the same engine.

    Raises:
        TensorRTUnavailable: `tensorrt` is missing; the message holds the equivalent `trtexec` command.
    """
    try:
        import_tensorrt('--format engine')
    except TensorRTUnavailable:
        raise TensorRTUnavailable(
            "--format engine needs the tensorrt Python package (pip install 'tensorrt' on a machine with an NVIDIA "
            f"GPU and CUDA); the ONNX file is written, build the engine with: "
            f"{trtexec_command(onnx_path, engine_path, input_size, precision, batch, max_batch, dynamic)}") from None
    return _build_engine(onnx_path, engine_path, input_size, precision, batch=batch, max_batch=max_batch,
                         dynamic=dynamic, timing_cache=timing_cache, workspace_gib=workspace_gib,
                         calib_images=calib_images, why='--format engine')

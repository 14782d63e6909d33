"""The TensorRT runtimes: strongly typed engines built from an ONNX file (`fna_zoo.runtime.tensorrt`), CUDA only.

`tensorrt` builds its engine at the ONNX file's precision (fp32, or int8 from a symmetric QDQ file);
`tensorrt-fp16` from the file's mixed-precision fp16 copy. The deployment table builds engines of the raw export
(an engine cannot bind the data-dependent NMS outputs) and runs `DetectionPostprocess` in PyTorch after them.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .plugin import DeployCell, RuntimePlugin, device_kind, import_package

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from .runners import Runner

__all__ = ['TensorRTRuntime', 'TensorRTFp16Runtime']


class TensorRTRuntime(RuntimePlugin):
    """A strongly typed TensorRT engine at the ONNX file's precision."""

    name = 'tensorrt'
    aliases = {'trt': None}
    precision = 'fp32'
    precisions = ('fp32', 'int8')
    devices = ('cuda',)
    default_device = 'cuda'
    package = 'tensorrt'
    install = 'pip install tensorrt on a machine with an NVIDIA GPU'
    format = 'TensorRT engine'
    deploy = 'engine'
    deploy_cells = (DeployCell('fp32', 'raw_fp32'), DeployCell('int8', 'raw_int8'))

    def unavailable(self, device: str = 'cpu') -> str:
        if import_package('tensorrt') is None:
            return (f'runtime {self.name!r} needs the tensorrt Python package, which is not installed here '
                    f'({self.install}); use --runtime onnxruntime or torch on this machine')
        return super().unavailable(device)

    def skip_reason(self, device: str = 'cpu') -> str:
        if import_package('tensorrt') is None:
            return 'tensorrt not installed'
        if device_kind(device) != 'cuda':
            return 'TensorRT runs on CUDA; pass --device cuda'
        return self.unavailable(device)

    def module_runner(self, module: 'nn.Module', inputs: Sequence['torch.Tensor'], threads: int | None,
                      device: str) -> 'Runner':  # pragma: no cover (needs tensorrt and a GPU)
        from .runners import onnx_bytes, tensorrt_runner

        with tempfile.TemporaryDirectory(prefix='fna_trt_part_') as tmp:
            onnx_path = Path(tmp) / 'part.onnx'
            onnx_path.write_bytes(onnx_bytes(module, inputs))
            return tensorrt_runner(onnx_path, inputs, Path(tmp) / 'part.engine', self.precision, dynamic=False)

    def file_runner(self, path: str | os.PathLike, inputs: Sequence['np.ndarray'], threads: int | None,
                    device: str, precision: str | None = None, workdir: str | os.PathLike | None = None,
                    ) -> 'Runner':  # pragma: no cover (needs tensorrt and a GPU)
        import torch

        from ..onnxgraph.precision import onnx_precision
        from .runners import tensorrt_runner

        # NOTE: strongly typed: a QDQ file gives int8, a fp16 file fp16; tensorrt-fp16 converts a float32 file
        precision = self.precision if self.precision != 'fp32' else onnx_precision(path)
        x = [torch.as_tensor(a).to(device) for a in inputs]
        h, w = int(x[0].shape[2]), int(x[0].shape[3])
        workdir = Path(workdir or tempfile.mkdtemp(prefix='fna_trt_'))
        stem = hashlib.sha1(f'{Path(path).resolve()}|{precision}|{x[0].shape[0]}|{h}x{w}'.encode()).hexdigest()[:12]
        return tensorrt_runner(path, x, workdir / f'{stem}.engine', precision,
                               timing_cache=workdir / 'trt.timing.cache')


class TensorRTFp16Runtime(TensorRTRuntime):
    """A strongly typed TensorRT engine of the ONNX file's mixed-precision fp16 copy."""

    name = 'tensorrt-fp16'
    aliases = {'trt-fp16': None}
    precision = 'fp16'
    precisions = ('fp16',)
    deploy_cells = (DeployCell('fp16', 'raw_fp16'),)

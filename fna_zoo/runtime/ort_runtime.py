"""The onnxruntime runtime: a session of the one recipe (`fna_zoo.runtime.ort`), CPU or CUDA.

It runs an ONNX file as it is (fp32, fp16, or an INT8 QDQ / QOperator file: the file sets the precision); a module
is exported to ONNX in memory first. Its options are the recipe's `session_record`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .plugin import DeployCell, RuntimePlugin, device_kind, import_package

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from .runners import Runner

__all__ = ['OnnxRuntime']


class OnnxRuntime(RuntimePlugin):
    """onnxruntime: every graph optimisation, sequential, intra-op spinning off, I/O bound once."""

    name = 'onnxruntime'
    aliases = {'ort': None, 'onnxruntime-cpu': 'cpu'}
    precision = 'fp32'
    precisions = ('fp32', 'fp16', 'int8')
    devices = ('cpu', 'cuda')
    package = 'onnxruntime'
    install = 'pip install onnxruntime'
    format = 'ONNX'
    deploy = 'sessions'
    deploy_cells = (DeployCell('fp32', 'nms_fp32'), DeployCell('int8', 'nms_int8'), DeployCell('fp16', 'nms_fp16'))

    def unavailable(self, device: str = 'cpu') -> str:
        ort = import_package('onnxruntime')
        if ort is None:
            return ("runtime 'onnxruntime' needs the onnxruntime package, which is not installed here "
                    "(pip install onnxruntime); expected it, or --runtime torch")
        why = super().unavailable(device)
        if not why and device_kind(device) == 'cuda' and 'CUDAExecutionProvider' not in ort.get_available_providers():
            why = ("runtime 'onnxruntime' on CUDA needs onnxruntime's CUDAExecutionProvider, which this onnxruntime "
                   'lacks (pip install onnxruntime-gpu); expected --device cpu here')
        return why

    def options(self, threads: int | None, device: str = 'cpu', io_binding: bool = True) -> dict[str, Any]:
        from .ort import session_record

        return session_record(threads, device, io_binding=io_binding)

    def module_runner(self, module: 'nn.Module', inputs: Sequence['torch.Tensor'], threads: int | None,
                      device: str) -> 'Runner':
        from .runners import onnx_bytes, onnxruntime_runner

        return onnxruntime_runner(onnx_bytes(module, inputs), inputs, threads, device, precision='fp32')

    def file_runner(self, path: str | os.PathLike, inputs: Sequence['np.ndarray'], threads: int | None,
                    device: str, precision: str | None = None, workdir: str | os.PathLike | None = None) -> 'Runner':
        from .runners import onnxruntime_runner

        return onnxruntime_runner(path, inputs, threads, device, precision=precision)

    def session(self, model: str | os.PathLike | bytes, threads: int | None,
                device: str) -> Callable[[Mapping[str, 'np.ndarray']], dict[str, 'np.ndarray']]:
        from .ort import ort_session

        sess = ort_session(model, threads, device)
        names = [o.name for o in sess.get_outputs()]
        return lambda feeds: dict(zip(names, sess.run(None, dict(feeds))))

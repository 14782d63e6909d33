"""The PyTorch runtimes: eager fp32 (`torch`), eager fp16 on CUDA (`torch-fp16`) and `torch.compile` (`torch-compile`).

They run the module itself (`fna_zoo.runtime.runners.torch_runner`, inference mode) on torch's intra-op threads,
which the caller sets (`torch_threads`); the deployment table runs the detector's own modules (`deploy = 'module'`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .plugin import DeployCell, RuntimePlugin, device_kind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .runners import Runner

__all__ = ['TorchRuntime', 'TorchFp16Runtime', 'TorchCompileRuntime']


class TorchRuntime(RuntimePlugin):
    """PyTorch eager, fp32, on the CPU or CUDA."""

    name = 'torch'
    aliases = {'eager': None, 'torch-cpu': 'cpu', 'torch-cuda': 'cuda'}
    precision = 'fp32'
    precisions = ('fp32',)
    devices = ('cpu', 'cuda')
    package = 'torch'
    install = 'pip install torch'
    format = 'PyTorch eager'
    deploy = 'module'
    deploy_cells = (DeployCell('fp32'),)
    torch_threads = True

    def version_label(self, device: str = 'cpu') -> str:
        import torch

        cuda = f' (CUDA {torch.version.cuda})' if device_kind(device) == 'cuda' else ''
        return f'torch {torch.__version__}{cuda}'

    def module_runner(self, module: 'nn.Module', inputs: Sequence['torch.Tensor'], threads: int | None,
                      device: str) -> 'Runner':
        from .runners import torch_runner

        return torch_runner(module, inputs, self.name, device)

    def options(self, threads: int | None, device: str = 'cpu', io_binding: bool = True) -> dict[str, Any]:
        return {}


class TorchFp16Runtime(TorchRuntime):
    """PyTorch eager, fp16 (CUDA only)."""

    name = 'torch-fp16'
    aliases = {'eager-fp16': None, 'torch-cuda-fp16': 'cuda'}
    precision = 'fp16'
    precisions = ('fp16',)
    devices = ('cuda',)
    default_device = 'cuda'
    deploy_cells = (DeployCell('fp16'),)

    def skip_reason(self, device: str = 'cpu') -> str:
        if device_kind(device) != 'cuda':
            return 'fp16 eager PyTorch runs on CUDA only (pass --device cuda)'
        return self.unavailable(device)


class TorchCompileRuntime(TorchRuntime):
    """`torch.compile` of the module, fp32 (a failed compile is a skip reason, not an error)."""

    name = 'torch-compile'
    aliases = {'compile': None}
    deploy = ''
    deploy_cells = ()

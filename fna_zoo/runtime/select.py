"""Which plugin runs a runtime name: the plugin of a name or alias, whether it can run here, and the runner of a
module on it. Above the vocabulary (`fna_zoo.runtime.names`) and the registry, so neither imports the other's
reader; fna-bench's grid and the latency tables (`fna_zoo.nas.latency_runtime`) call these."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .names import canonical_runtime
from .plugin import RuntimePlugin
from .registry import PLUGINS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .runners import Runner

__all__ = ['get_plugin', 'check_runtime', 'module_runner']


def get_plugin(name: str) -> RuntimePlugin:
    """The plugin of a runtime name or alias (ValueError in one line for an unknown name).

    Args:
        name: A canonical name or an alias (`fna_zoo.runtime.names`).
    """
    return PLUGINS[canonical_runtime(name)[0]]


def check_runtime(runtime: str, device: str | None = None) -> tuple[str, str]:
    """(canonical name, device) of a runtime that can run on this machine, or a ValueError saying in one line
    why it cannot (its plugin's `unavailable`: a package, a GPU or onnxruntime's CUDA provider missing, or a
    CUDA-only runtime on the CPU).

    Args:
        runtime: A runtime name or alias.
        device: See `fna_zoo.runtime.names.canonical_runtime`.
    """
    name, device = canonical_runtime(runtime, device)
    why = PLUGINS[name].unavailable(device)
    if why:
        raise ValueError(why)
    return name, device


def module_runner(runtime: str, module: 'nn.Module', inputs: 'Sequence[torch.Tensor]', threads: int | None = None,
                  device: str | None = None) -> 'Runner':
    """The runner of `module` on fixed `inputs` on any runtime: its plugin's `module_runner` (the file runtimes
    export the module to ONNX in memory, static shapes).

    Args:
        runtime: A runtime name or alias.
        module: An eval-mode module.
        inputs: Its inputs (fp32, CPU; moved and cast as the runtime needs).
        threads: Intra-op threads of the file runtimes (torch's are the caller's; see `fna_zoo.nas.latency_runtime`).
        device: See `fna_zoo.runtime.names.canonical_runtime`.
    """
    name, device = canonical_runtime(runtime, device)
    return PLUGINS[name].module_runner(module, inputs, threads, device)

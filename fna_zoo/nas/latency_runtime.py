"""The runtime a latency table is measured on: a runtime of `fna_zoo.runtime` with its threads and device.

The latency objective of the search (`fna_zoo.nas.latency`) times every candidate block on the runtime a
deployment uses, as ProxylessNAS (Cai et al., ICLR 2019 - https://arxiv.org/abs/1812.00332) does with its
mobile lookup tables; FNA (https://arxiv.org/abs/2001.02525) and Jung et al.
(https://arxiv.org/abs/2206.08509) search against MAdds only. The runtimes, their names and aliases, the
runners and the timing core are those of `fna-bench` (`fna_zoo.runtime`), never a second copy:

* ``onnxruntime``: the module exported to ONNX (TorchScript exporter, static shapes) and run by a session of
  the one recipe (`fna_zoo.runtime.ort`: every graph optimisation, intra-op spinning off, I/O binding);
* ``torch`` / ``torch-fp16`` / ``torch-compile``: PyTorch on the device (inference mode);
* ``tensorrt`` / ``tensorrt-fp16``: a strongly typed TensorRT engine built from the same ONNX export (fp16: its
  mixed-precision copy, `fna_zoo.onnxgraph.fp16`; needs `tensorrt`);
* ``openvino``: the same ONNX export compiled by OpenVINO on the CPU (`fna_zoo.runtime.openvino`; needs `openvino`).

Every runtime is a plugin of `fna_zoo.runtime.registry`: its version, options and runner come from there.

Old table names (`onnxruntime-cpu`, `torch-cpu`, `torch-cuda`, `torch-cuda-fp16`) are aliases naming the
device too. A runtime that cannot run here fails in `get_runtime` with one line saying what is missing.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..runtime.names import RUNTIMES, device_kind, runtime_label
from ..runtime.plugin import RuntimePlugin
from ..runtime.registry import PLUGINS
from ..runtime.runners import Runner, onnx_bytes, time_runner
from ..runtime.select import check_runtime, module_runner
from ..runtime.timing import LatencyStats

__all__ = ['Runtime', 'get_runtime', 'onnx_bytes', 'measure_module']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """A runtime to time modules on (make one with `get_runtime`, which checks it can run here).

    Args:
        name: A canonical runtime name (`fna_zoo.runtime.names.RUNTIMES`).
        threads: CPU intra-op threads (onnxruntime session / torch), recorded with every table.
        device: 'cpu', 'cuda' or 'cuda:N'.
    """

    name: str
    threads: int
    device: str = 'cpu'

    @property
    def precision(self) -> str:
        return RUNTIMES[self.name]

    @property
    def label(self) -> str:
        """'<name>-<device>', e.g. 'onnxruntime-cpu' (the default table file names)."""
        return runtime_label(self.name, self.device)

    @property
    def device_record(self) -> str:
        """'cpu' or 'cuda (<GPU name>)', as a table records it."""
        if device_kind(self.device) == 'cpu':
            return 'cpu'
        return f'cuda ({torch.cuda.get_device_name(torch.device(self.device))})'

    @property
    def plugin(self) -> RuntimePlugin:
        """The runtime's plugin (`fna_zoo.runtime.registry`)."""
        return PLUGINS[self.name]

    @property
    def version(self) -> str:
        """Version of the library that runs the model."""
        return self.plugin.version_label(self.device)

    @property
    def options(self) -> dict[str, Any]:
        """Session settings that change timings (recorded with a table; the same dict as fna-bench's rows)."""
        return self.plugin.options(self.threads, self.device)

    def describe(self) -> dict[str, Any]:
        """The runtime record of a latency table."""
        return {'name': self.name, 'version': self.version, 'precision': self.precision,
                'device': self.device_record, 'threads': self.threads, 'options': self.options}

    @contextmanager
    def active(self) -> Iterator[None]:
        """Set torch's intra-op threads for the duration (runtimes that run on them; restored after)."""
        before = torch.get_num_threads()
        if self.plugin.torch_threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> Runner:
        """One inference of `module` on fixed `inputs` (`fna_zoo.runtime.select.module_runner`).

        Args:
            module: An eval-mode module.
            inputs: Its inputs (fp32, CPU; moved and cast as the runtime needs).

        Raises:
            ValueError: The runtime cannot run it here (e.g. torch.compile failed), in one line.
        """
        runner = module_runner(self.name, module, inputs, self.threads, self.device)
        if runner.fn is None:
            raise ValueError(f'runtime {self.label} cannot time this module: {runner.skip}')
        return runner


def get_runtime(name: str, threads: int | None = None, device: str | None = None) -> Runtime:
    """A runtime that can run on this machine, or a ValueError saying in one line why not.

    Args:
        name: A runtime name or alias (`fna_zoo.runtime.names`; e.g. 'onnxruntime', or the old 'onnxruntime-cpu').
        threads: CPU intra-op threads (default: torch's current setting, usually the physical cores).
        device: 'cpu' or 'cuda' (default: the device an alias names, else cuda for the CUDA-only runtimes and
            cpu for the others).
    """
    canonical, device = check_runtime(name, device)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f'threads is {threads!r}; expected a positive integer')
    return Runtime(canonical, int(threads or torch.get_num_threads()), device)


def measure_module(runtime: Runtime, module: nn.Module, inputs: Sequence[torch.Tensor], warmup: int,
                   repeats: int) -> LatencyStats:
    """Latency of one inference of `module` on `inputs` on `runtime` (warm-up, then `repeats` timed runs).

    Args:
        runtime: Where to run.
        module: An eval-mode module.
        inputs: Its inputs.
        warmup: Untimed runs first.
        repeats: Timed runs.
    """
    with runtime.active():
        runner = runtime.prepare(module.eval(), inputs)
        return time_runner(runner, warmup, repeats)

"""The runtime plugin interface: what one runtime says about itself and how it makes runners.

A runtime is one `RuntimePlugin` subclass (one file in `fna_zoo.runtime`) listed once in
`fna_zoo.runtime.registry.PLUGINS`. A plugin says:

* who it is: `name` (canonical), `aliases` (old names, each with the device it implies or None), `precision` (what
  it runs a float model at), `precisions` (what it can run: a file's own precision, e.g. int8 from a QDQ file),
  `devices` (device kinds it runs on) and `default_device`;
* whether it can run here: `unavailable(device)` (empty, or one line saying why not, e.g. the package to install),
  `skip_reason(device)` (the short form a result row records), `version()`;
* what it records: `options(threads, device)`, the settings that change timings, in every result row and table;
* how it runs: `module_runner` (a PyTorch module on fixed inputs; a file runtime exports it to ONNX in memory),
  `file_runner` (an ONNX file, or the runtime's own format), and for the deployment table `session` (one model
  run on named inputs) and `quantize` (its own INT8 from a float file and calibration inputs, where it has one);
* where it shows up: `format` (the deployment table's column; `quantized_format` for its own INT8), `deploy`
  (how the table runs it: `module`, the detector's modules; `sessions`, the ONNX file split at the head outputs
  into two sessions; `engine`, an engine of the raw export with PyTorch post-processing) and `deploy_cells` (its
  rows: precision, the export it runs, and whether the runtime quantizes that export itself).

Importing this module loads only the standard library; each plugin imports its package inside its methods.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from .devices import DEVICES, device_kind

if TYPE_CHECKING:
    import os

    import numpy as np
    import torch
    from torch import nn

    from .runners import Runner

__all__ = ['DEVICES', 'DeployCell', 'RuntimePlugin', 'device_kind', 'import_package']

def import_package(name: str) -> Any:
    """The imported package `name`, or None when it is missing or fails to import."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001  (absent or broken: the runtime is unavailable)
        return None


@dataclass(frozen=True)
class DeployCell:
    """One row a runtime adds to the deployment table (`fna_zoo.bench.pipelines.CELLS`).

    Args:
        precision: 'fp32', 'fp16' or 'int8'.
        export: The name of the export it runs (a writer of `fna_zoo.bench.pipelines`, e.g. 'nms_fp32'), or None
            for PyTorch.
        quantize: Whether the runtime quantizes that (float) export itself (`RuntimePlugin.quantize`).
    """

    precision: str
    export: str | None = None
    quantize: bool = False


class RuntimePlugin:
    """One runtime (subclass per runtime; see the module docstring). Instances hold no state."""

    name: ClassVar[str] = ''
    aliases: ClassVar[Mapping[str, str | None]] = {}
    precision: ClassVar[str] = 'fp32'
    precisions: ClassVar[tuple[str, ...]] = ('fp32',)
    devices: ClassVar[tuple[str, ...]] = ('cpu',)
    default_device: ClassVar[str] = 'cpu'
    package: ClassVar[str] = ''
    install: ClassVar[str] = ''
    format: ClassVar[str] = ''
    quantized_format: ClassVar[str] = ''  # the format `quantize` writes
    deploy: ClassVar[str] = ''
    deploy_cells: ClassVar[tuple[DeployCell, ...]] = ()
    torch_threads: ClassVar[bool] = False  # whether it runs on torch's intra-op threads (set by the caller)

    def version(self) -> str | None:
        """The version of the package that runs the model (None when it is not installed)."""
        mod = import_package(self.package)
        return None if mod is None else str(getattr(mod, '__version__', 'unknown'))

    def version_label(self, device: str = 'cpu') -> str:
        """'<package> <version>' as a latency table records it.

        Args:
            device: The device it runs on.
        """
        return f'{self.package} {self.version()}'

    def unavailable(self, device: str = 'cpu') -> str:
        """Why this runtime cannot run on `device` here, in one line ('' when it can).

        Args:
            device: 'cpu', 'cuda' or 'cuda:N'.
        """
        if import_package(self.package) is None:
            return (f'runtime {self.name!r} needs the {self.package} package, which is not installed here '
                    f'({self.install})')
        kind = device_kind(device)
        if kind not in self.devices:
            where = ' or '.join(d.upper() for d in self.devices)
            return (f'runtime {self.name!r} runs on {where} only, not on device {device!r}; expected --device '
                    f'{" or ".join(self.devices)}')
        if kind == 'cuda':
            import torch

            if not torch.cuda.is_available():
                return (f'runtime {self.name!r} on device {device!r} needs a CUDA GPU, and torch sees none here '
                        '(torch.cuda.is_available() is False); expected --device cpu')
        return ''

    def skip_reason(self, device: str = 'cpu') -> str:
        """The reason a result row records when this runtime cannot run on `device` ('' when it can).

        Args:
            device: 'cpu', 'cuda' or 'cuda:N'.
        """
        return self.unavailable(device)

    def options(self, threads: int | None, device: str = 'cpu', io_binding: bool = True) -> dict[str, Any]:
        """The settings that change timings, as every result row and latency table records them (JSON types).

        Args:
            threads: Intra-op threads.
            device: The device.
            io_binding: Whether inputs and outputs are bound once (the deployment table feeds each image).
        """
        return {}

    def module_runner(self, module: 'nn.Module', inputs: Sequence['torch.Tensor'], threads: int | None,
                      device: str) -> 'Runner':
        """One inference of `module` on fixed `inputs` (fp32, CPU; moved and cast as the runtime needs).

        Args:
            module: An eval-mode module.
            inputs: Its inputs.
            threads: Intra-op threads (torch's are the caller's).
            device: The device.
        """
        raise NotImplementedError(f'runtime {self.name!r} does not run PyTorch modules')

    def file_runner(self, path: 'str | os.PathLike', inputs: Sequence['np.ndarray'], threads: int | None,
                    device: str, precision: str | None = None, workdir: 'str | os.PathLike | None' = None,
                    ) -> 'Runner':
        """One inference of a model file on fixed `inputs`, or a skipped `Runner` saying why it cannot run.

        Args:
            path: An ONNX file (or the runtime's own format).
            inputs: One array per graph input.
            threads: Intra-op threads.
            device: The device.
            precision: What to record (default: what the file holds).
            workdir: Where the runtime may write what it builds (engines, caches).
        """
        from .runners import Runner

        return Runner.skipped(precision or self.precision, f'{self.name} needs a PyTorch model, not an ONNX file')

    def session(self, model: 'str | os.PathLike | bytes', threads: int | None,
                device: str) -> Callable[[Mapping[str, 'np.ndarray']], dict[str, 'np.ndarray']]:
        """A model ready to run on named inputs: feeds -> its outputs by name (the deployment table).

        Args:
            model: An ONNX file or serialized model (or the runtime's own format).
            threads: Intra-op threads.
            device: The device.
        """
        raise NotImplementedError(f'runtime {self.name!r} has no sessions')

    def quantize(self, src: 'str | os.PathLike', dst: 'str | os.PathLike',
                 calibration: Sequence['np.ndarray']) -> Path:
        """The runtime's own INT8 model of a float file, from calibration inputs (written to `dst`).

        Args:
            src: A float ONNX file.
            dst: Where to write (the runtime's format).
            calibration: Input arrays (one batch each) of the first graph input.
        """
        raise NotImplementedError(f'runtime {self.name!r} does not quantize models itself')

    def describe(self, device: str | None = None) -> dict[str, Any]:
        """What the registry lists about this runtime (`fna_zoo.runtime.registry.runtime_table`).

        Args:
            device: The device to check (default: its default device).
        """
        device = device or self.default_device
        return {'name': self.name, 'precision': self.precision, 'precisions': list(self.precisions),
                'devices': list(self.devices), 'version': self.version(), 'available': not self.unavailable(device),
                'why_not': self.unavailable(device), 'aliases': dict(self.aliases)}

"""The one registry of runtimes: every runtime of `fna-bench`, the deployment table, the latency tables and the
machine record is a `RuntimePlugin` (`fna_zoo.runtime.plugin`) listed in `PLUGINS`, in table order.

Adding a runtime is one file and one line here: write `fna_zoo/runtime/<name>.py` with a `RuntimePlugin`
subclass (name and aliases, precisions, devices, availability, version, options, runners; its deployment-table
cells), and add its class to `PLUGINS`. The vocabulary (`fna_zoo.runtime.names`), fna-bench's grid, the deployment
table, the latency tables and the machine record read it from here; none dispatches on a runtime's name.

Importing this module loads only the plugin modules, which import their packages inside their methods.
"""
from __future__ import annotations

from typing import Any

from .openvino import OpenVINORuntime
from .ort_runtime import OnnxRuntime
from .plugin import RuntimePlugin
from .tensorrt_runtime import TensorRTFp16Runtime, TensorRTRuntime
from .torch_runtime import TorchCompileRuntime, TorchFp16Runtime, TorchRuntime

__all__ = ['PLUGINS', 'plugins', 'runtime_packages', 'runtime_table']

PLUGINS: dict[str, RuntimePlugin] = {p.name: p for p in (
    TorchRuntime(),
    TorchFp16Runtime(),
    TorchCompileRuntime(),
    OnnxRuntime(),
    TensorRTRuntime(),
    TensorRTFp16Runtime(),
    OpenVINORuntime(),
)}


def plugins() -> list[RuntimePlugin]:
    """Every runtime, in registry order."""
    return list(PLUGINS.values())


def runtime_packages() -> list[str]:
    """The packages that run models (their versions are columns of the machine record), in registry order."""
    return list(dict.fromkeys(p.package for p in PLUGINS.values()))


def runtime_table(device: str | None = None) -> list[dict[str, Any]]:
    """Every runtime with its precisions, devices, version and whether it runs here (or why not).

    Args:
        device: The device to check (default: each runtime's default device).
    """
    return [p.describe(device) for p in PLUGINS.values()]

"""The one runtime vocabulary of `fna-bench`, the latency tables, export and quantization.

A runtime is a canonical name (what runs the model, at which precision) plus a device (`cpu` / `cuda`); the names,
precisions and aliases are those of the registry's plugins (`fna_zoo.runtime.registry`):

* ``torch``: PyTorch eager, fp32; ``torch-fp16``: PyTorch eager, fp16 (CUDA only);
* ``torch-compile``: `torch.compile` of the module, fp32;
* ``onnxruntime``: an onnxruntime session (`fna_zoo.runtime.ort`), fp32 (or what the ONNX file holds);
* ``tensorrt`` / ``tensorrt-fp16``: a strongly typed TensorRT engine built from the ONNX file, or from its fp16
  copy (CUDA only);
* ``openvino``: OpenVINO on the CPU (`fna_zoo.runtime.openvino`), fp32, or INT8 from a QDQ file or an NNCF IR.

The names of the two former vocabularies stay as aliases: fna-bench's backends (`eager`, `eager-fp16`,
`compile`, `ort`, `trt`, `trt-fp16`) and the latency tables' runtimes, which named the device too
(`onnxruntime-cpu`, `torch-cpu`, `torch-cuda`, `torch-cuda-fp16`). `canonical_runtime` is the one place a
name given by a user, a results file or a table is read.
"""
from __future__ import annotations

from .devices import DEVICES, device_kind
from .registry import PLUGINS

__all__ = ['RUNTIMES', 'ALIASES', 'DEVICES', 'CUDA_ONLY', 'canonical_runtime', 'runtime_precision', 'runtime_label',
           'device_kind', 'runtime_matches', 'runtime_help']

# canonical name -> precision (from the registry, `fna_zoo.runtime.registry.PLUGINS`)
RUNTIMES: dict[str, str] = {name: p.precision for name, p in PLUGINS.items()}
# old name -> (canonical name, the device it implies or None) (each plugin's `aliases`)
ALIASES: dict[str, tuple[str, str | None]] = {alias: (name, dev) for name, p in PLUGINS.items()
                                              for alias, dev in p.aliases.items()}
# runtimes whose default device is CUDA (they are not timed on a CPU)
CUDA_ONLY = tuple(name for name, p in PLUGINS.items() if p.default_device == 'cuda')


def runtime_help() -> str:
    """The canonical names and their aliases, for help texts and error messages."""
    old = ', '.join(ALIASES)
    return f'{", ".join(RUNTIMES)} (old names {old} are aliases)'


def _resolve(name: str) -> tuple[str, str | None]:
    """(canonical name, the device an alias implies or None); ValueError in one line for an unknown name."""
    key = str(name).strip()
    if key in RUNTIMES:
        return key, None
    if key in ALIASES:
        return ALIASES[key]
    raise ValueError(f'runtime {name!r} is unknown; expected one of {runtime_help()}')


def canonical_runtime(name: str, device: str | None = None) -> tuple[str, str]:
    """(canonical name, device) of a runtime name or alias.

    Args:
        name: A canonical name or an alias (see the module docstring).
        device: 'cpu', 'cuda' or 'cuda:N'; None: the device an alias names (`onnxruntime-cpu`), else 'cuda' for
            the CUDA-only runtimes (`torch-fp16`, `tensorrt*`) and 'cpu' for the others.

    Returns:
        The canonical name and the device (as given, or the default).

    Raises:
        ValueError: One line naming the bad value and listing the canonical names, for an unknown name, an
            unknown device, or a device contradicting the alias (`onnxruntime-cpu` on cuda).
    """
    canonical, implied = _resolve(name)
    if device is None:
        device = implied or ('cuda' if canonical in CUDA_ONLY else 'cpu')
    elif implied is not None and device_kind(device) != implied:
        raise ValueError(f'runtime {name!r} runs on {implied}, not on device {device!r}; expected '
                         f'{canonical!r} with device {device!r}, or device {implied!r}')
    device_kind(device)
    return canonical, str(device)


def runtime_precision(name: str) -> str:
    """'fp32' or 'fp16' of a runtime name or alias (an ONNX file given to onnxruntime may hold int8).

    Args:
        name: A canonical name or an alias.
    """
    return RUNTIMES[canonical_runtime(name)[0]]


def runtime_label(name: str, device: str | None = None) -> str:
    """'<canonical name>-<device kind>', e.g. 'onnxruntime-cpu', 'torch-cuda' (file names; the old table names).

    Args:
        name: A canonical name or an alias.
        device: See `canonical_runtime`.
    """
    canonical, dev = canonical_runtime(name, device)
    return f'{canonical}-{device_kind(dev)}'


def runtime_matches(want: str, name: str, device: str | None = None) -> bool:
    """Whether a runtime recorded as (`name`, `device`) is the runtime `want` asks for.

    `want` names a device only through an alias (`onnxruntime-cpu`); a canonical name matches any device.

    Args:
        want: A canonical name or an alias (e.g. a search config's `search.objective.runtime`).
        name: The recorded name (canonical or alias; e.g. a latency table's `runtime.name`).
        device: The recorded device ('cpu', 'cuda' or e.g. 'cuda (NVIDIA H100)'); None: not recorded.

    Raises:
        ValueError: `want` is not a runtime name (one line).
    """
    want_name, want_device = _resolve(want)
    try:
        have_name, have_device = _resolve(name)
    except ValueError:
        return False
    if want_name != have_name:
        return False
    if want_device is None:
        return True
    if have_device is None and device:
        have_device = device_kind(str(device).split(' ', 1)[0])
    return have_device is None or have_device == want_device

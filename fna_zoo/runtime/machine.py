"""What a benchmark ran on: CPU model and its widest vector/INT8 instruction set, cores, threads, GPU, and the versions
of every registered runtime's package (`fna_zoo.runtime.registry.runtime_packages`: torch, onnxruntime, tensorrt,
openvino; None where not installed)."""
from __future__ import annotations

import importlib
import logging
import os
import platform
import re
from typing import Any

__all__ = ['cpu_model', 'cpu_isa', 'cpu_label', 'machine_info', 'machine_slug', 'machine_fields', 'package_version']

_logger = logging.getLogger(__name__)


def _cpuinfo(*keys: str) -> str | None:
    """The value of /proc/cpuinfo's first line whose key starts with one of `keys` (lower case), whitespace
    collapsed; None where the file cannot be read (not Linux) or has no such line."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith(keys):
                    return ' '.join(line.split(':', 1)[1].split())
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux; `platform.processor()` elsewhere)."""
    return _cpuinfo('model name') or platform.processor() or platform.machine() or 'unknown'


# NOTE: the instruction set is part of a machine's identity: a virtual machine may report only 'AMD EPYC' for both an
# AVX2-only and an AVX512-VNNI generation, and INT8 kernels (onnxruntime's MLAS, OpenVINO, fbgemm) differ most between
# them (VNNI's one-instruction u8 x s8 dot product, AMX's tiles). First match wins, widest first.
_ISA_TIERS = (('amx', ('amx_int8',)), ('avx512-vnni', ('avx512_vnni',)), ('avx512', ('avx512f',)),
              ('avx-vnni', ('avx_vnni',)), ('avx2', ('avx2',)), ('i8mm', ('i8mm',)), ('sve', ('sve',)),
              ('dotprod', ('asimddp',)), ('neon', ('asimd',)))


def cpu_isa(flags: str | None = None) -> str | None:
    """The CPU's widest vector / INT8 instruction set, e.g. 'avx2', 'avx512-vnni', 'amx' or 'dotprod' (ARM: the
    INT8 matrix multiply 'i8mm' ranks above 'sve', which without it adds no INT8 instruction over 'dotprod').

    Args:
        flags: The CPU's flags, space-separated (default: /proc/cpuinfo's `flags` / `Features` line); None where they
            cannot be read or name none of the tiers.
    """
    flags = _cpuinfo('flags', 'features') if flags is None else flags
    if flags is None:
        return None
    have = set(flags.lower().split())
    return next((name for name, needs in _ISA_TIERS if all(n in have for n in needs)), None)


def package_version(module: str) -> str | None:
    """A module's `__version__`, else its distribution's (a compiled module without one, e.g. pywuffs); None where
    it does not import (absent or broken: not recorded) or neither names a version.

    Args:
        module: The import name, e.g. 'onnxruntime'.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001
        return None
    found = getattr(mod, '__version__', None)
    if found is not None:
        return str(found)
    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_fields() -> list[str]:
    """The keys of a `machine_info` record, in order (result files' columns)."""
    from .registry import runtime_packages

    return ['cpu_model', 'cpu_isa', 'cores', 'threads', 'gpu', 'cuda', *runtime_packages(), 'python', 'os',
            'loadavg_1m']


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The machine record every benchmark row carries.

    Args:
        threads: Intra-op threads used (default: torch's current setting).
    """
    import torch

    from .registry import runtime_packages

    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        'cpu_model': cpu_model(),
        'cpu_isa': cpu_isa(),
        'cores': os.cpu_count() or 0,
        'threads': int(threads if threads else torch.get_num_threads()),
        'gpu': gpu,
        'cuda': torch.version.cuda if gpu else None,
        'torch': torch.__version__,
        **{p: package_version(p) for p in runtime_packages() if p != 'torch'},
        'python': platform.python_version(),
        'os': f'{platform.system()} {platform.release()}',
        'loadavg_1m': round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None,
    }


def cpu_label(info: dict[str, Any]) -> str:
    """The CPU as result captions name it: model and instruction set, e.g. 'AMD EPYC [avx2]' (the model alone in
    records written before `cpu_isa` was recorded).

    Args:
        info: A `machine_info` record, or a result row holding its fields.
    """
    isa = info.get('cpu_isa')
    return f"{info.get('cpu_model') or '?'}{f' [{isa}]' if isa else ''}"


def machine_slug(info: dict[str, Any] | None = None) -> str:
    """A folder name for a machine, e.g. 'amd-epyc-2c-avx2' or 'nvidia-h100-80gb-hbm3'.

    CPU machines are named by model, cores and instruction set (`cpu_isa`; records without it, written before it
    was recorded, give the model and cores alone: the committed `amd-epyc-2c` is an AVX512-VNNI machine and
    `intel-xeon-2c` an AMX one, see benchmarks/results/README.md).

    Args:
        info: A `machine_info` record (default: this machine).
    """
    info = info or machine_info()
    name = info.get('gpu') or f"{info['cpu_model']} {info['cores']}c {info.get('cpu_isa') or ''}"
    name = re.sub(r'\((r|tm)\)|processor|\bcpu\b|\d+-core', ' ', name.lower())
    return re.sub(r'[^a-z0-9]+', '-', name).strip('-') or 'unknown'

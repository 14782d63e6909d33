"""What a benchmark ran on: CPU model, cores, threads, GPU, and the versions of every registered runtime's package
(`fna_zoo.runtime.registry.runtime_packages`: torch, onnxruntime, tensorrt, openvino; None where not installed)."""
from __future__ import annotations

import importlib
import logging
import os
import platform
import re
from typing import Any

__all__ = ['cpu_model', 'machine_info', 'machine_slug', 'machine_fields']

_logger = logging.getLogger(__name__)


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux; `platform.processor()` elsewhere)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return ' '.join(line.split(':', 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001  (absent or broken: not recorded)
        return None


def machine_fields() -> list[str]:
    """The keys of a `machine_info` record, in order (result files' columns)."""
    from .registry import runtime_packages

    return ['cpu_model', 'cores', 'threads', 'gpu', 'cuda', *runtime_packages(), 'python', 'os', 'loadavg_1m']


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
        'cores': os.cpu_count() or 0,
        'threads': int(threads if threads else torch.get_num_threads()),
        'gpu': gpu,
        'cuda': torch.version.cuda if gpu else None,
        'torch': torch.__version__,
        **{p: _version(p) for p in runtime_packages() if p != 'torch'},
        'python': platform.python_version(),
        'os': f'{platform.system()} {platform.release()}',
        'loadavg_1m': round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None,
    }


def machine_slug(info: dict[str, Any] | None = None) -> str:
    """A folder name for a machine, e.g. 'amd-epyc-2c' or 'nvidia-h100-80gb-hbm3'.

    Args:
        info: A `machine_info` record (default: this machine).
    """
    info = info or machine_info()
    name = info.get('gpu') or f"{info['cpu_model']} {info['cores']}c"
    name = re.sub(r'\((r|tm)\)|processor|\bcpu\b|\d+-core', ' ', name.lower())
    return re.sub(r'[^a-z0-9]+', '-', name).strip('-') or 'unknown'

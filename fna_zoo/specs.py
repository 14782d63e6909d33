"""What is this model string? One answer for every command.

A model argument is one of:

* an FNA arch: a registered arch name (``fna_retinanet_backbone``), an arch file (``runs/s/arch.yaml``), an
  FNA net_config string (``[[32, 16], ...]``) or an `Arch` / its dict form;
* a timm model name (``efficientnet_b0``); ``timm:NAME`` forces timm's own model where a zoo arch has the name;
* a retrain checkpoint (``.pth`` / ``.pt``): a detector, read with `fna_zoo.checkpoint.read_checkpoint`;
* an ONNX file (``.onnx``).

Seed weights have their own resolver (`fna_zoo.detection.resolve_seed`, which takes ``asset:`` names).
Ground floor: `arch` and `timm` are imported only when a spec needs them.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ['TIMM_PREFIX', 'ModelSpec', 'resolve_model', 'timm_name', 'arch_string', 'seed_network', 'arch_id']

TIMM_PREFIX = 'timm:'
Kind = Literal['arch', 'timm', 'checkpoint', 'onnx']


def _check_timm(name: str) -> str:
    import timm

    if not timm.is_model(name):
        raise ValueError(f'unknown timm model {name!r}; expected a name from timm.list_models()')
    return name


def timm_name(spec: Any) -> str | None:
    """The timm model name of a `timm:NAME` spec (checked to exist), else None.

    Args:
        spec: Any model spec.
    """
    if isinstance(spec, str) and spec.startswith(TIMM_PREFIX):
        return _check_timm(spec[len(TIMM_PREFIX):])
    return None


def _is_arch(spec: Any) -> bool:
    from .arch import is_arch_spec

    return spec is not None and timm_name(spec) is None and is_arch_spec(spec)


def arch_string(spec: Any) -> str:
    """The FNA net_config string of an arch spec, or 'timm:<name>' for a plain timm model.

    Args:
        spec: An arch spec or a timm name (with or without the prefix).
    """
    from .arch import load_arch

    if _is_arch(spec):
        return load_arch(spec).to_fna_string()
    return f'{TIMM_PREFIX}{str(spec).removeprefix(TIMM_PREFIX)}'


def seed_network(spec: Any) -> str:
    """The seed network an arch spec's weights are remapped from (a timm model is its own seed).

    Args:
        spec: An arch spec or a timm name.
    """
    from .builder import DEFAULT_SEED
    from .arch import load_arch

    if _is_arch(spec):
        return load_arch(spec).seed or DEFAULT_SEED
    return str(spec).removeprefix(TIMM_PREFIX)


def _check_onnx(path: str) -> None:
    """An ONNX file that parses and has a graph with an input, or one clear error (checked where onnx is installed)."""
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001  (protobuf decode errors of garbage or truncated files)
        raise ValueError(f'ONNX file {path!r} cannot be read ({type(e).__name__}); expected a model written by '
                         'fna-export') from None
    if not model.graph.input or not model.graph.node:
        raise ValueError(f'ONNX file {path!r} has no graph inputs or nodes; expected a model written by fna-export')


@dataclass(frozen=True)
class ModelSpec:
    """A model argument, classified.

    Args:
        name: As the user gave it.
        kind: 'arch', 'timm', 'checkpoint' or 'onnx'.
        spec: What the builders take: the arch spec, 'timm:NAME', or the file path.
    """

    name: str
    kind: Kind
    spec: str

    @property
    def is_file(self) -> bool:
        """A checkpoint or ONNX file (no backbone to build from a name)."""
        return self.kind in ('checkpoint', 'onnx')


def resolve_model(name: str) -> ModelSpec:
    """Classify a model argument, failing early (ValueError / FileNotFoundError) on unknown ones.

    Args:
        name: A zoo arch name, arch file, FNA string, timm name (or `timm:NAME`), checkpoint or .onnx file.
    """
    from .arch import is_arch_spec
    from .checks import check_input_file

    suffix = Path(name).suffix.lower()
    if suffix == '.onnx':
        check_input_file(name, 'ONNX file', 'an existing .onnx file')
        _check_onnx(name)
        return ModelSpec(name, 'onnx', name)
    if suffix in ('.pth', '.pt'):
        check_input_file(name, 'checkpoint', 'a retrain checkpoint (final.pth)')
        return ModelSpec(name, 'checkpoint', name)
    if timm_name(name) is not None:
        return ModelSpec(name, 'timm', name)
    if is_arch_spec(name):
        if suffix and not name.lstrip().startswith('['):
            check_input_file(name, 'arch file', 'an arch file (.yaml/.json/.txt)')
        return ModelSpec(name, 'arch', name)
    if os.sep in name and Path(name).is_dir():  # NOTE: a path (not a bare name, which a folder may shadow)
        check_input_file(name, 'model', 'a zoo arch name, an arch file, a timm model name, a retrain checkpoint '
                         '(.pth) or an .onnx file')
    import timm

    if timm.is_model(name):
        return ModelSpec(name, 'timm', f'{TIMM_PREFIX}{name}')
    raise ValueError(f'unknown model {name!r}; expected a zoo arch name, an arch file, a timm model name, '
                     'a retrain checkpoint (.pth) or an .onnx file')


def arch_id(spec: ModelSpec) -> str:
    """A short id of the backbone architecture (sha1 of its FNA string or 'timm:NAME'), to join rows of
    different names for the same arch; '' for checkpoints and ONNX files.

    Args:
        spec: A resolved model.
    """
    if spec.is_file:
        return ''
    return hashlib.sha1(arch_string(spec.spec).encode()).hexdigest()[:10]

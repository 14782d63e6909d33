"""The detectors by name: `DETECTORS` (name -> `DetectorSpec`), filled by each detector's file as it is imported.

`fna_zoo/detection/__init__.py` imports every detector file, so the registry is complete once
`fna_zoo.detection` is imported (importing this module imports the package first).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .spec import DetectorSpec

__all__ = ['DETECTORS', 'DEFAULT_DETECTOR', 'register_detector', 'get_detector', 'spec_of', 'build_detector']

DETECTORS: dict[str, DetectorSpec] = {}
DEFAULT_DETECTOR = 'retinanet'  # FNA's main detector; the default of run configs and fna-bench --detector


def register_detector(spec: DetectorSpec) -> DetectorSpec:
    """Add a detector to `DETECTORS` (a name already there is refused); returns the spec.

    Args:
        spec: The detector's spec.
    """
    if spec.name in DETECTORS:
        raise ValueError(f'detector {spec.name!r} is already registered; expected a new name')
    DETECTORS[spec.name] = spec
    return spec


def get_detector(name: str) -> DetectorSpec:
    """The spec of a detector name, or a clear error.

    Args:
        name: A registered name ('retinanet', 'ssdlite').
    """
    if name not in DETECTORS:
        raise ValueError(f'unknown detector {name!r}; expected one of {", ".join(DETECTORS)}')
    return DETECTORS[name]


def spec_of(detector: nn.Module) -> DetectorSpec:
    """The spec of a built detector (the first whose `detector_class` it is an instance of), or a clear error.

    Args:
        detector: A detector, e.g. from `build_retinanet` / `build_ssdlite`, or a plain torchvision one.
    """
    for spec in DETECTORS.values():
        if isinstance(detector, spec.detector_class):
            return spec
    kinds = ' or '.join(dict.fromkeys(s.detector_class.__name__ for s in DETECTORS.values()))
    raise ValueError(f'detector is a {type(detector).__name__}; expected a torchvision {kinds}')


def build_detector(name: str, **kwargs: Any) -> nn.Module:
    """Build a detector by name ('retinanet' or 'ssdlite').

    Args:
        name: Detector name.
        **kwargs: Passed to the builder.
    """
    return get_detector(name).build(**kwargs)

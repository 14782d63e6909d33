"""Deprecated: the builder is `fna_zoo.builder` (a public module: `build_backbone` and the timm model recipe
live there). The old names still import from here, with a `DeprecationWarning`, for one release.
"""
from __future__ import annotations

from . import builder as _new
from .deprecation import moved_names

__all__ = list(_new.__all__)

__getattr__ = moved_names(__name__, {name: _new for name in __all__})

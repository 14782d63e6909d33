"""Deprecated: the benchmark grid and the comparison mode are `fna_zoo.bench.grid` (a runner is one timed
inference of `fna_zoo.runtime.runners`). The old names still import from here, with a `DeprecationWarning`, for
one release.
"""
from __future__ import annotations

from ..deprecation import moved_names
from . import grid as _new

__all__ = list(_new.__all__)

__getattr__ = moved_names(__name__, {name: _new for name in __all__})

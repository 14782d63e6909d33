"""Old import paths kept for one release: a module `__getattr__` that hands out moved names with a warning.

A module whose public names moved elsewhere sets ``__getattr__ = moved_names(__name__, {name: new_module})``;
``from old.module import name`` (and ``old.module.name``) then still works, warning once per name with a
`DeprecationWarning` that names the new home. A new home given by its module name is imported only when a moved
name is asked for (an old home below its names' new one, e.g. the engine's config for the search's defaults).
A name that was renamed as it moved is given as ``(new_module, new_name)``.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any, Callable, Mapping

__all__ = ['moved_names']

Home = ModuleType | str  # a module, or its name


def moved_names(old_module: str, homes: Mapping[str, Home | tuple[Home, str]]) -> Callable[[str], Any]:
    """A module-level `__getattr__` resolving moved names in their new modules (one warning per name).

    Args:
        old_module: The module the names moved out of (its `__name__`).
        homes: Moved name -> the module that holds it now, or its name (imported at the first use); or
            (that module, the name it has there) for a name that was renamed too.

    Returns:
        The `__getattr__` to assign in `old_module` (raises AttributeError for any other name).
    """
    warned: set[str] = set()

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f'module {old_module!r} has no attribute {name!r}')
        home, new_name = home if isinstance(home, tuple) else (home, name)
        if isinstance(home, str):
            home = importlib.import_module(home)
        if name not in warned:
            warned.add(name)
            # NOTE: stacklevel 2 is the importing line: `from m import x` calls this straight from its frame
            warnings.warn(f'{old_module}.{name} moved to {home.__name__}.{new_name}; import it from there (the old '
                          'path is kept for one release)', DeprecationWarning, stacklevel=2)
        return getattr(home, new_name)

    return __getattr__

"""The command table: a command's name (`fna-export`) -> the function it runs, as the project declares it.

`python -m fna_zoo.export` and `python -m fna_zoo.assets` are second names of `fna-export` and `fna-fetch`. Their
`__main__` shims run the command by its name (`run_command`), so the low packages (`export`, `assets`) do not
import the command-line package above them: the table binds each name to its module, as it does for the
installed console scripts.

NOTE: the table is the project's `[project.scripts]`: read from the installed distribution's metadata (the
console scripts pip wrote come from the same entries), else from the `pyproject.toml` of a source checkout that
was not installed (the package imported from the working folder).
"""
from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ['DISTRIBUTION', 'command_target', 'run_command']

DISTRIBUTION = 'fna-zoo'  # the project's name in pyproject.toml


def _from_pyproject(name: str) -> str | None:
    """`name`'s entry in the `[project.scripts]` table of the checkout's pyproject.toml (None: none there)."""
    pyproject = Path(__file__).resolve().parents[1] / 'pyproject.toml'
    if not pyproject.is_file():
        return None
    # NOTE: a line scan of the one table (no tomllib: Python 3.10 is supported and has none)
    in_scripts = False
    for line in pyproject.read_text().splitlines():
        if line.startswith('['):
            in_scripts = line.strip() == '[project.scripts]'
            continue
        found = re.match(r'\s*"?([\w.-]+)"?\s*=\s*"([^"]+)"', line) if in_scripts else None
        if found and found.group(1) == name:
            return found.group(2)
    return None


def command_target(name: str) -> str:
    """The `module:function` a command runs.

    Args:
        name: The command, e.g. 'fna-export'.

    Raises:
        LookupError: No command of that name (neither installed nor in the checkout's pyproject.toml).
    """
    try:
        entries = metadata.distribution(DISTRIBUTION).entry_points
        found = [e.value for e in entries if e.group == 'console_scripts' and e.name == name]
    except metadata.PackageNotFoundError:
        found = []
    target = found[0] if found else _from_pyproject(name)
    if target is None:
        raise LookupError(f'command {name!r} is not in the {DISTRIBUTION} command table ([project.scripts]); '
                          f'expected an installed {DISTRIBUTION} (pip install -e .) or its source checkout')
    return target


def run_command(name: str) -> Any:
    """Run a command by its name, with this process's arguments (what its console script does).

    Args:
        name: The command, e.g. 'fna-export'.

    Returns:
        What the command's `main()` returns (its exit code); 2 with one `error: ...` line when the command is not
        in the table.
    """
    try:
        target = command_target(name)
    except LookupError as e:
        print(f'error: {e.args[0]}', file=sys.stderr)
        return 2
    module, _, function = target.partition(':')
    return getattr(importlib.import_module(module), function)()

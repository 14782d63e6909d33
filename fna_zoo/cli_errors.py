"""One error convention for every command line of the project.

A user error (unknown model or op, bad config key, missing data folder or file, corrupt or foreign
checkpoint, bad arch file, NaN loss, ...) prints a single `error: ...` line naming the bad value and what was
expected, and exits with code 2. Tracebacks are for bugs, or when asked for with `--debug` (or
`FNA_ZOO_DEBUG=1`). Library code raises ordinary exceptions; only the entry points go through `run_cli`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

__all__ = ['USER_ERRORS', 'CliParser', 'run_cli']

# NOTE: these are what the library raises for bad input (ValueError covers RemapError and config errors,
# FloatingPointError a diverged loss); anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError,
    FloatingPointError,
)


class CliParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one `error: ...` line (exit 2), with a `--debug` flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument('--debug', action='store_true', help='show full tracebacks for errors')

    def error(self, message: str) -> NoReturn:
        print(f'error: {message} (see {self.prog} --help)', file=sys.stderr)
        sys.exit(2)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in text:
        text = f'{text}: {e.filename!r}'
    return ' '.join(text.split())


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run a command's `main(argv)` under the error convention; returns the exit code.

    Args:
        main: The command's main function (it parses `argv` with a `CliParser`).
        argv: Arguments (default: `sys.argv[1:]`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv or os.environ.get('FNA_ZOO_DEBUG', '') not in ('', '0')
    try:
        main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f'error: {_one_line(e)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('error: interrupted', file=sys.stderr)
        return 130
    return 0

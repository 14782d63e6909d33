"""What every command line of the project shares: the error convention, the shared flags and logging.

A user error (unknown model or op, bad config key, missing data folder or file, corrupt or foreign
checkpoint, bad arch file, NaN loss, ...) prints a single `error: ...` line naming the bad value and what was
expected, and exits with code 2. Tracebacks are for bugs, or when asked for with `--debug` (or
`FNA_ZOO_DEBUG=1`). Library code raises ordinary exceptions; only the entry points go through `run_cli`.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from ..checks import check_input_file, error_line
from ..fileio import WriteError

__all__ = ['USER_ERRORS', 'GateFailed', 'CliParser', 'run_cli', 'entry_point', 'add_run_args', 'add_config_args',
           'add_data_args', 'add_output_arg', 'add_verbosity', 'setup_logging', 'run_overrides', 'is_main_process',
           'run_job', 'RUNS_DIR']

RUNS_DIR = 'runs'

# NOTE: these are what the library raises for bad input (ValueError covers RemapError and config errors,
# FloatingPointError a diverged loss, WriteError an output the OS refuses: read-only, no permission, disk full;
# ConnectionError a refused upload: offline, no token, no network); anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError,
    FloatingPointError, WriteError, ConnectionError,
)


class GateFailed(Exception):
    """A quality gate refused a result (parity, INT8 AP drop): one `error: ...` line and exit code 1, as opposed
    to a user error (exit code 2); nothing was written."""


class CliParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one `error: ...` line (exit 2), with a `--debug` flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument('--debug', action='store_true', help='show full tracebacks for errors')

    def error(self, message: str) -> NoReturn:
        """Print one `error: ...` line for a usage error and exit with code 2."""
        print(f'error: {error_line(message)} (see {self.prog} --help)', file=sys.stderr)
        sys.exit(2)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if text.startswith('Caught ') and 'Original Traceback (most recent call last)' in text:
        # NOTE: torch re-raises an error of a DataLoader worker with the worker's traceback as its message; the
        # traceback's last line is the error itself ('ValueError: image ... cannot be decoded ...')
        last = text.splitlines()[-1].strip()
        text = last.split(': ', 1)[1] if ': ' in last else last
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in text:
        text = f'{text}: {e.filename!r}'
    return error_line(text)


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run a command's `main(argv)` under the error convention; returns the exit code.

    Args:
        main: The command's main function (it parses `argv` with a `CliParser`).
        argv: Arguments (default: `sys.argv[1:]`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv or os.environ.get('FNA_ZOO_DEBUG', '') not in ('', '0')
    message, code = None, 0
    try:
        main(argv)
    except GateFailed as e:
        message, code = _one_line(e), 1
    except USER_ERRORS as e:
        if debug:
            raise
        message, code = _one_line(e), 2
    except KeyboardInterrupt:
        message, code = 'interrupted', 130
    if message is not None:
        # NOTE: printed once the exception (and the frames it held) is gone: a progress bar of those frames closes
        # as they are freed and writes its last state, which would otherwise come after the error line
        gc.collect()
        print(f'error: {message}', file=sys.stderr)
    return code


def entry_point(command: Callable[[Sequence[str] | None], Any]) -> Callable[[Sequence[str] | None], int]:
    """The `main(argv=None) -> exit code` of a command: what a console script calls (and `sys.exit`s with).

    Args:
        command: The command's main function (parses `argv`, raises library errors).
    """
    def main(argv: Sequence[str] | None = None) -> int:
        return run_cli(command, argv)

    main.__doc__ = f'`{command.__name__}` under the error convention; returns the exit code.'
    return main


# ------------------------------------------------------------------------------------------- shared flags
class _InputFile(argparse.Action):
    """Store a path after the path-kind check (`fna_zoo.checks.check_input_file`), when the arguments are parsed.

    NOTE: the check's error (FileNotFoundError, IsADirectoryError, ...) leaves `parse_args` as it is (argparse
    wraps only its own errors), so `run_cli` prints its one line: `error: config file 'x' is a directory; ...`.
    """

    what: str = 'input file'  # how the error names it
    expected: str | None = None  # the error's `expected ...` part

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        check_input_file(values, self.what, self.expected)
        setattr(namespace, self.dest, values)


class _ConfigFile(_InputFile):
    what, expected = 'config file', 'a YAML config file'


def add_config_args(p: argparse.ArgumentParser, config_help: str = 'YAML config (see configs/)') -> None:
    """`--config FILE` and `--set KEY=VALUE ...` (config overrides, applied after the file).

    Args:
        p: The command's parser.
        config_help: Help text of `--config`.
    """
    p.add_argument('--config', action=_ConfigFile, help=config_help)
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='config overrides, e.g. train.lr=0.01')


def add_data_args(p: argparse.ArgumentParser) -> None:
    """`--data-path` (`--data_path`, FNA's spelling, kept) and `--job-name` (`--job_name`).

    Args:
        p: The command's parser.
    """
    p.add_argument('--data-path', '--data_path', dest='data_path',
                   help='COCO tree root (annotations/instances_<split>.json, <split>/) or an asset:NAME; '
                        'default: the built-in synthetic set')
    p.add_argument('--job-name', '--job_name', dest='job_name',
                   help=f'run folder name: {RUNS_DIR}/<job_name> (default: the config\'s output)')


def add_output_arg(p: argparse.ArgumentParser, help_text: str, required: bool = False) -> None:
    """`-o/--output`: where the command writes (a run folder, or a file for single-file commands).

    Args:
        p: The command's parser.
        help_text: What the output is, for `--help`.
        required: Whether the command needs it.
    """
    p.add_argument('--output', '-o', required=required, help=help_text)


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """`-v/--verbose` (one log level more) and `-q/--quiet` (warnings only, no progress bars).

    Args:
        p: The command's parser.
    """
    g = p.add_mutually_exclusive_group()
    g.add_argument('--verbose', '-v', action='store_true', help='more log lines (debug)')
    g.add_argument('--quiet', '-q', action='store_true', help='warnings and errors only, no progress bars')


def add_run_args(p: argparse.ArgumentParser, output_help: str = "run folder (default: the config's output)") -> None:
    """The flags of a training run (fna-search, fna-retrain): config, data, `-o`, `--resume`, verbosity.

    Args:
        p: The command's parser.
        output_help: What `-o` names.
    """
    add_config_args(p)
    add_data_args(p)
    add_output_arg(p, output_help)
    p.add_argument('--resume', action='store_true', help='continue from <output>/last.pth')
    add_verbosity(p)


def run_job(job: Callable[..., dict[str, Any]], cfg: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Run a training job (`retrain`, `search`) and release the torchrun process group, whatever happens.

    Args:
        job: The job, called as `job(cfg, resume=resume)`.
        cfg: The run config.
        resume: Continue from the run folder's last.pth.
    """
    from ..engine.distributed import cleanup

    try:
        return job(cfg, resume=resume)
    finally:
        cleanup()


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process."""
    return int(os.environ.get('RANK', '0')) == 0


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever `sys.stderr` is when a record is emitted (it may be replaced)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(args: argparse.Namespace | None = None, default: int = logging.INFO) -> None:
    """The one logging set-up of the command lines: `default` level on stderr, one level more with -v, WARNING
    with -q or on ranks other than 0 of a torchrun job.

    Args:
        args: Parsed arguments (their `verbose` / `quiet` flags, when present).
        default: Level without -v / -q (long jobs log progress at INFO; quick commands print and log WARNING).
    """
    level = default
    if getattr(args, 'verbose', False):
        level = max(logging.DEBUG, default - 10)
    if getattr(args, 'quiet', False) or not is_main_process():
        level = logging.WARNING
    # NOTE: one stderr handler of our own on the root logger (added once per process), rather than
    # basicConfig(force=True), which would drop handlers others installed (pytest's log capture, a notebook's).
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
        root.addHandler(handler)
    root.setLevel(level)


def run_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides of the shared run flags (`--set` first; `--data-path`, `--job-name`, `--output` win).

    Args:
        args: Parsed arguments of a command with `add_config_args` / `add_data_args` / `add_output_arg`.
    """
    overrides = list(getattr(args, 'set', None) or [])
    if getattr(args, 'data_path', None):
        overrides.append(f'data.path={args.data_path}')
    if getattr(args, 'job_name', None):
        overrides.append(f'output={Path(RUNS_DIR) / args.job_name}')
    if getattr(args, 'output', None):
        overrides.append(f'output={args.output}')
    return overrides

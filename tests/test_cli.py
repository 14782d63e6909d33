"""One CLI package: every installed command is `fna_zoo.cli.<name>:main`, shares the flags and the error
convention, and the `search/*.py` and `benchmarks/run.py` scripts are shims onto it."""
import argparse
import importlib
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fna_zoo.cli.common import (CliParser, add_config_args, add_data_args, add_output_arg, add_verbosity,
                                run_overrides, setup_logging)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']
SHIMS = {'search/run.py': 'fna-search', 'search/retrain.py': 'fna-retrain', 'search/test.py': 'fna-test',
         'search/latency_table.py': 'fna-latency-table', 'benchmarks/run.py': 'fna-bench'}


def test_every_job_is_an_installed_command_of_the_cli_package():
    assert set(SCRIPTS) == {'fna-fetch', 'fna-search', 'fna-retrain', 'fna-test', 'fna-latency-table', 'fna-export',
                            'fna-bench', 'fna-publish', 'fna-predict'}
    for name, target in SCRIPTS.items():
        module, _, func = target.partition(':')
        assert module == f"fna_zoo.cli.{name.removeprefix('fna-').replace('-', '_')}" and func == 'main'
        assert callable(getattr(importlib.import_module(module), 'main'))


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_help_and_bad_flag(name, capsys):
    main = importlib.import_module(SCRIPTS[name].partition(':')[0]).main
    with pytest.raises(SystemExit) as e:
        sys.argv = [name, '--help']
        main()
    assert e.value.code == 0 and '--debug' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        sys.argv = [name, '--no-such-flag']
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('error: ')


@pytest.mark.parametrize('shim', sorted(SHIMS))
def test_shims_are_thin_and_run_the_command(shim):
    lines = [ln for ln in (ROOT / shim).read_text().splitlines() if ln.strip()]
    assert len(lines) <= 4
    r = subprocess.run([sys.executable, shim, '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f'usage: {SHIMS[shim]}' in r.stdout


def _parse(argv: list[str]) -> argparse.Namespace:
    p = CliParser(prog='x')
    add_config_args(p)
    add_data_args(p)
    add_output_arg(p, 'out')
    add_verbosity(p)
    return p.parse_args(argv)


def test_shared_flags_and_their_fna_spellings():
    a = _parse(['--data_path', 'd', '--job_name', 'j', '--set', 'train.lr=0.1'])
    b = _parse(['--data-path', 'd', '--job-name', 'j', '--set', 'train.lr=0.1'])
    assert vars(a) == vars(b)
    assert run_overrides(a) == ['train.lr=0.1', 'data.path=d', 'output=runs/j']
    assert run_overrides(_parse(['-o', 'here', '--job-name', 'j']))[-1] == 'output=here'  # -o wins


def test_one_logging_setup():
    setup_logging(_parse([]))
    assert logging.getLogger().level == logging.INFO
    setup_logging(_parse(['-q']))
    assert logging.getLogger().level == logging.WARNING
    setup_logging(_parse(['-v']), default=logging.WARNING)
    assert logging.getLogger().level == logging.INFO
    with pytest.raises(SystemExit):
        _parse(['-q', '-v'])

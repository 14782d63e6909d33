"""`python -m fna_zoo.export ...` runs `fna-export` (by its name in the command table: `fna_zoo.commands`)."""
import sys

from ..commands import run_command

if __name__ == '__main__':
    sys.exit(run_command('fna-export'))

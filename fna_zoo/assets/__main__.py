"""`python -m fna_zoo.assets ...` runs `fna-fetch` (by its name in the command table: `fna_zoo.commands`)."""
import sys

from ..commands import run_command

sys.exit(run_command('fna-fetch'))

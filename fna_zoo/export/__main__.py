"""`python -m fna_zoo.export ...` runs `fna-export`."""
import sys

from ..cli.export import main

if __name__ == '__main__':
    sys.exit(main())

"""`python -m fna_zoo.assets ...` runs `fna-fetch`."""
import sys

from ..cli.fetch import main

sys.exit(main())

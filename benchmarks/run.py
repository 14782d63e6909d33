"""Shim: `python benchmarks/run.py ...` runs `fna-bench` (fna_zoo.cli.bench) from a checkout."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702
from fna_zoo.cli.bench import main  # noqa: E402
if __name__ == '__main__': sys.exit(main())  # noqa: E701

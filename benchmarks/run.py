"""`fna-bench` from a checkout: latency across backends, comparisons and the latency-vs-AP report.

    HF_HUB_OFFLINE=1 python benchmarks/run.py fna_retinanet_backbone --backends eager ort --output out/
    HF_HUB_OFFLINE=1 python benchmarks/run.py compare fna_retinanet_backbone@eager fna_retinanet_backbone@ort
    HF_HUB_OFFLINE=1 python benchmarks/run.py report --results out/results.json --output out/

See `fna_zoo/bench/cli.py` (`fna-bench --help`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from fna_zoo.bench.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())

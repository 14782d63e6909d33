"""Latency lookup table of a search space on a runtime, for the latency search objective.

    python search/latency_table.py --config configs/fna_retinanet_search.yaml --runtime onnxruntime-cpu
                                   [--output table.json] [--threads N] [--repeats 10] [--input-size H W]
    python search/run.py --config ... --set search.objective.type=latency search.objective.table=table.json
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from fna_zoo.cli_errors import run_cli  # noqa: E402
from fna_zoo.nas.latency_cli import latency_table_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_cli(latency_table_main))

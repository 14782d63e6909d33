"""Architecture search (FNA + searched channel widths): writes <run>/arch.yaml for retrain.py --arch.

    python search/run.py --config configs/fna_retinanet_search.yaml [--data_path /data/coco] [--job_name NAME]
                         [--set search.objective.lambda=0.05 ...] [--resume]
    torchrun --nproc_per_node 8 search/run.py --config ...      # DDP (NCCL on GPU, Gloo on CPU)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from fna_zoo.cli_errors import run_cli  # noqa: E402
from fna_zoo.nas.cli import search_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_cli(search_main))

"""Retrain a detector on a (searched) FNA backbone: seed weights remapped in, then COCO training + eval.

    python search/retrain.py --config configs/retinanet_retrain.yaml [--arch runs/search/arch.yaml]
                             [--data_path /data/coco] [--set train.lr=0.01 ...] [--resume]
    torchrun --nproc_per_node 8 search/retrain.py --config ...      # DDP (NCCL on GPU, Gloo on CPU)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from fna_zoo.cli_errors import run_cli  # noqa: E402
from fna_zoo.engine.cli import retrain_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_cli(retrain_main))

"""Evaluate a retrained detector: COCO bbox AP/AP50/AP75/APs/APm/APl and the detections json.

    python search/test.py --checkpoint runs/retinanet/final.pth [--config ...] [--data_path /data/coco]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from fna_zoo.cli_errors import run_cli  # noqa: E402
from fna_zoo.engine.cli import test_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_cli(test_main))

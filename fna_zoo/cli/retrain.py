"""`fna-retrain` (also `search/retrain.py`, `python -m fna_zoo.cli.retrain` under torchrun): retrain a detector on
a derived FNA backbone, seed weights remapped in (FNA, Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525).

    fna-retrain --config configs/retinanet_retrain.yaml --arch runs/search/arch.yaml [-o runs/retrain] [--resume]
    torchrun --nproc_per_node 8 -m fna_zoo.cli.retrain --config ...
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from .common import (CliParser, add_run_args, entry_point, is_main_process, run_job, run_overrides,
                     setup_logging)

__all__ = ['retrain_main', 'main']


def retrain_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv`, retrain, print the run folder and the validation AP; returns the result.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    from ..engine.config import load_config
    from ..engine.evaluate import format_stats
    from ..engine.train import retrain

    p = CliParser(prog='fna-retrain', description='Retrain a detector on a derived FNA backbone (seed weights '
                  'remapped in).')
    add_run_args(p)
    p.add_argument('--arch', help='searched architecture file (.yaml/.json/.txt) for the backbone')
    args = p.parse_args(argv)
    setup_logging(args)
    overrides = run_overrides(args)
    if args.arch:
        overrides.append(f'model.backbone={args.arch}')
    cfg = load_config(args.config, overrides)
    result = run_job(retrain, cfg, args.resume)
    if is_main_process():
        print(f"run folder: {cfg['output']}  (steps: {result['step']})")
        if 'AP' in result:
            print(f'val bbox: {format_stats(result)}')
    return result


main = entry_point(retrain_main)


if __name__ == '__main__':
    sys.exit(main())

"""Command lines of `search/retrain.py` and `search/test.py` (the scripts are thin wrappers)."""
from __future__ import annotations

import copy
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from ..cli_errors import CliParser
from .checkpoint import load_checkpoint
from .config import apply_overrides, load_config
from .distributed import cleanup, init_distributed
from .evaluate import STAT_NAMES, evaluate
from .train import build_datasets, build_model, data_root, retrain

__all__ = ['retrain_main', 'test_main', 'format_stats', 'add_common_args', 'common_overrides', 'setup_logging']

RUNS_DIR = 'runs'


def add_common_args(p: CliParser) -> None:
    """Flags every run command shares (`--data_path` and `--job_name` as in the FNA repository)."""
    p.add_argument('--config', help='YAML config (see configs/)')
    p.add_argument('--data_path', '--data-path', help='COCO tree root (annotations/instances_<split>.json, <split>/); '
                   'default: the built-in synthetic set')
    p.add_argument('--job_name', '--job-name', help=f'run folder name: {RUNS_DIR}/<job_name> (default: config output)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='config overrides, e.g. train.lr=0.01')


def common_overrides(args: 'object') -> list[str]:
    """Config overrides of the shared flags (`--set` first, the named flags win)."""
    overrides = list(args.set)
    if args.data_path:
        overrides.append(f'data.path={args.data_path}')
    if args.job_name:
        overrides.append(f'output={Path(RUNS_DIR) / args.job_name}')
    if getattr(args, 'output', None):
        overrides.append(f'output={args.output}')
    return overrides


def setup_logging() -> None:
    rank = int(os.environ.get('RANK', '0'))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s', stream=sys.stderr)


def format_stats(stats: dict[str, float]) -> str:
    """One line of COCO bbox metrics in percent, e.g. 'AP 31.2 | AP50 ...'."""
    return ' | '.join(f'{k} {100 * stats[k]:.1f}' for k in STAT_NAMES)


def retrain_main(argv: Sequence[str] | None = None) -> dict:
    p = CliParser(description='Retrain a detector on a derived FNA backbone (seed weights remapped in).')
    add_common_args(p)
    p.add_argument('--arch', help='searched architecture file (.yaml/.json/.txt) for the backbone')
    p.add_argument('--output', help='run folder (default: config output)')
    p.add_argument('--resume', action='store_true', help='continue from <output>/last.pth')
    args = p.parse_args(argv)
    setup_logging()
    overrides = common_overrides(args)
    if args.arch:
        overrides.append(f'model.backbone={args.arch}')
    cfg = load_config(args.config, overrides)
    try:
        result = retrain(cfg, resume=args.resume)
    finally:
        cleanup()
    if int(os.environ.get('RANK', '0')) == 0:
        print(f"run folder: {cfg['output']}  (steps: {result['step']})")
        if 'AP' in result:
            print(f'val bbox: {format_stats(result)}')
    return result


def test_main(argv: Sequence[str] | None = None) -> dict:
    p = CliParser(description='Evaluate a retrained detector with COCO bbox metrics.')
    add_common_args(p)
    p.add_argument('--checkpoint', help=f'final.pth or last.pth of a retrain run (default: {RUNS_DIR}/<job_name>/final.pth)')
    p.add_argument('--out', help='detections json (default: detections_<split>.json beside the checkpoint)')
    p.add_argument('--backend', default='auto', choices=['auto', 'pycocotools', 'faster_coco_eval'])
    args = p.parse_args(argv)
    setup_logging()
    if args.checkpoint is None:
        if args.job_name is None:
            p.error('one of --checkpoint or --job_name is required')
        args.checkpoint = str(Path(RUNS_DIR) / args.job_name / 'final.pth')
    state = load_checkpoint(args.checkpoint)
    overrides = common_overrides(args)
    cfg = load_config(args.config, overrides) if args.config else apply_overrides(copy.deepcopy(state['config']), overrides)
    cfg['model'] = state['config']['model']  # the model is the checkpoint's, whatever the config says
    cfg['detector'] = state['config']['detector']
    dist_info = init_distributed(cfg['device'])
    try:
        _, val = build_datasets(cfg, data_root(cfg, dist_info), train=False)
        model = build_model(cfg, state['num_classes'], with_seed=False)
        model.load_state_dict(state['model'])
        model.to(dist_info.device)
        out = Path(args.out or Path(args.checkpoint).with_name(f"detections_{cfg['data']['val_split']}.json"))
        stats = evaluate(model, val, out, cfg['eval']['batch_size'], dist_info, cfg['data']['workers'], args.backend)
    finally:
        cleanup()
    if dist_info.is_main:
        print(f'detections: {out}')
        print(f"{cfg['data']['val_split']} bbox: {format_stats(stats)}")
    return stats

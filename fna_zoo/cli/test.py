"""`fna-test` (also `search/test.py`): COCO bbox AP of a retrained detector on the validation split.

    fna-test --checkpoint runs/retrain/final.pth [-o detections.json] [--data-path /data/coco]

The detector (its arch included) is rebuilt from the checkpoint alone (`fna_zoo.checkpoint.read_checkpoint`), so
a moved or copied run folder evaluates as it was trained.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Sequence

from .common import (RUNS_DIR, CliParser, add_config_args, add_data_args, add_verbosity, entry_point, run_overrides,
                     setup_logging)

__all__ = ['test_main', 'main']


def test_main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse `argv`, evaluate the checkpoint, print the detections file and the COCO metrics.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    from ..checkpoint import read_checkpoint
    from ..checks import check_output_path
    from ..detection import build_model
    from ..engine.config import apply_overrides, check_config, load_config
    from ..engine.distributed import cleanup, init_distributed
    from ..engine.evaluate import evaluate, format_stats
    from ..engine.train import build_datasets, data_root

    p = CliParser(prog='fna-test', description='Evaluate a retrained detector with COCO bbox metrics.')
    add_config_args(p, 'YAML config for the data and evaluation (default: the checkpoint\'s own config)')
    add_data_args(p)
    p.add_argument('--checkpoint', help=f'final.pth or last.pth of a retrain run (default: {RUNS_DIR}/<job_name>/'
                   'final.pth)')
    p.add_argument('--output', '-o', '--out', dest='detections',
                   help='detections json (default: detections_<split>.json beside the checkpoint)')
    p.add_argument('--evaluator', '--backend', dest='evaluator', default='auto',
                   choices=['auto', 'pycocotools', 'faster_coco_eval'], help='COCO evaluator (default auto)')
    add_verbosity(p)
    args = p.parse_args(argv)
    setup_logging(args)
    if args.checkpoint is None:
        if args.job_name is None:
            p.error('one of --checkpoint or --job_name is required')
        args.checkpoint = str(Path(RUNS_DIR) / args.job_name / 'final.pth')
    if args.detections is not None:  # a bad output path fails now, not after minutes of evaluation
        check_output_path(args.detections, '.json')
    ckpt = read_checkpoint(args.checkpoint)
    overrides = run_overrides(args)
    fixed = [o for o in overrides if o.partition('=')[0].strip().split('.')[0] in ('model', 'detector')]
    if fixed:
        raise ValueError(f'--set {fixed[0]!r} changes the model, which fna-test takes from the checkpoint; expected '
                         'data.* or eval.* settings')
    if args.config:
        cfg = load_config(args.config, overrides)
    else:  # the checkpoint's config, its overrides checked against its own types
        cfg = check_config(apply_overrides(copy.deepcopy(ckpt.config), overrides), ckpt.config)
    model_cfg = ckpt.model_config()  # the model is the checkpoint's, whatever the config says
    cfg['model'], cfg['detector'] = model_cfg['model'], model_cfg['detector']
    if not ckpt.num_classes:
        raise ValueError(f'checkpoint {args.checkpoint!r} records no class count; expected a retrain checkpoint')
    dist_info = init_distributed(cfg['device'])
    try:
        _, val = build_datasets(cfg, data_root(cfg, dist_info), train=False)
        trained = ckpt.state.get('cat_ids')
        if trained is not None and list(trained) != list(val.cat_ids):
            raise ValueError(f'checkpoint {args.checkpoint!r} was trained on category ids {list(trained)[:20]}, the '
                             f'evaluation annotations have {list(val.cat_ids)[:20]}; expected the same categories')
        model = build_model(cfg, ckpt.num_classes, with_seed=False)
        model.load_state_dict(ckpt.weights)
        model.to(dist_info.device)
        out = Path(args.detections or Path(args.checkpoint).with_name(f"detections_{cfg['data']['val_split']}.json"))
        stats = evaluate(model, val, out, cfg['eval']['batch_size'], dist_info, cfg['data']['workers'], args.evaluator)
    finally:
        cleanup()
    if dist_info.is_main:
        print(f'detections: {out}')
        print(f"{cfg['data']['val_split']} bbox: {format_stats(stats)}")
    return stats


main = entry_point(test_main)


if __name__ == '__main__':
    sys.exit(main())

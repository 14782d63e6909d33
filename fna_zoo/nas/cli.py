"""Command line of `search/run.py` (the script is a thin wrapper)."""
from __future__ import annotations

import os
from typing import Any, Sequence

from ..cli_errors import CliParser
from ..engine.cli import add_common_args, common_overrides, setup_logging
from ..engine.config import SEARCH_DEFAULTS, load_config
from ..engine.distributed import cleanup
from .searcher import search

__all__ = ['search_main']


def search_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = CliParser(description='Search a detection backbone (ops, depth, widths) around a seed network, FNA-style; '
                  'writes <run>/arch.yaml for search/retrain.py --arch.')
    add_common_args(p)
    p.add_argument('--output', help='run folder (default: config output)')
    p.add_argument('--resume', action='store_true', help='continue from <output>/last.pth')
    args = p.parse_args(argv)
    setup_logging()
    cfg = load_config(args.config, common_overrides(args), defaults=SEARCH_DEFAULTS)
    try:
        result = search(cfg, resume=args.resume)
    finally:
        cleanup()
    if int(os.environ.get('RANK', '0')) == 0:
        print(f"run folder: {cfg['output']}")
        print(f"derived arch ({result['seed']} seed, {result['steps']} weight / {result['arch_steps']} arch steps, "
              f"{result['wall_time_s']:.0f} s): {result['arch']}")
        size = 'x'.join(map(str, result['input_size']))
        print(f"backbone at {size}: {result['madds'] / 1e9:.3f}B MAdds, {result['params'] / 1e6:.3f}M params; "
              f"skip fraction {result['skip_fraction']:.2f}, op entropy {result['op_entropy']:.2f}")
        if result.get('predicted_latency_ms') is not None:
            print(f"predicted latency (table {result['objective']['table']}): {result['predicted_latency_ms']:.2f} ms")
        if result.get('supernet_eval'):
            print(f"derived path in the super network (BN recalibrated): AP {100 * result['supernet_eval']['AP']:.1f}")
        print(f"retrain it: python search/retrain.py --config <retrain config> --arch {result['arch_file']}")
    return result

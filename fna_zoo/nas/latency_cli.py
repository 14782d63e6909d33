"""Command line of `search/latency_table.py` (the script is a thin wrapper): build a latency table.

The table feeds the `latency` search objective (`fna_zoo.nas.latency`): FNA's architecture adaptation
(https://arxiv.org/abs/2001.02525) with Jung et al.'s widths (https://arxiv.org/abs/2206.08509), scored by
measured latency as in ProxylessNAS (https://arxiv.org/abs/1812.00332) instead of MAdds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ..cli_errors import CliParser
from ..engine.config import SEARCH_DEFAULTS, load_config, model_kwargs
from .latency import build_latency_table, table_plan
from .latency_runtime import RUNTIMES, get_runtime
from .space import SearchSpace

__all__ = ['latency_table_main', 'default_output']

_logger = logging.getLogger(__name__)


def default_output(config: str | None, runtime: str, size: Sequence[int]) -> Path:
    """runs/latency_tables/<config name>_<runtime>_<H>x<W>.json"""
    stem = Path(config).stem if config else 'default_search'
    return Path('runs') / 'latency_tables' / f'{stem}_{runtime}_{size[0]}x{size[1]}.json'


def _check_output(path: Path) -> Path:
    from ..export.onnx_export import check_output_path

    return check_output_path(path, '.json')


def latency_table_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = CliParser(description='Time every candidate block of a search space on a runtime into a latency table '
                  '(JSON) for the latency search objective (search.objective: {type: latency, table: FILE}). '
                  'Resumable: rerun the same command to finish an interrupted table.')
    p.add_argument('--config', help='search config (its search.space, detector and search.objective.input_size); '
                   'default: the built-in search defaults')
    p.add_argument('--runtime', required=True, help=f'one of {", ".join(RUNTIMES)}')
    p.add_argument('--output', help='table file (.json); default runs/latency_tables/<config>_<runtime>_<H>x<W>.json')
    p.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                   help='image size the backbone sees (default: search.objective.input_size)')
    p.add_argument('--threads', type=int, help='CPU intra-op threads (default: torch default, the physical cores)')
    p.add_argument('--warmup', type=int, default=2, help='untimed runs per part (default 2)')
    p.add_argument('--repeats', type=int, default=10, help='timed runs per part; the median is kept (default 10)')
    p.add_argument('--save-every', type=int, default=25, help='parts between writes of the file (default 25)')
    p.add_argument('--no-detector', action='store_true', help="skip timing the detector's neck and head "
                   '(information only, not in the objective)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='config overrides, e.g. '
                   'search.space.width_mults=[0.5,1.0]')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    # every check before anything is written: config, space, size, runtime, output path (an existing table is
    # checked by build_latency_table before it measures or writes anything)
    cfg = load_config(args.config, args.set, defaults=SEARCH_DEFAULTS)
    space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
    size = list(args.input_size) if args.input_size else list(cfg['search']['objective']['input_size'])
    plan = table_plan(space, size)
    runtime = get_runtime(args.runtime, args.threads)
    output = _check_output(Path(args.output) if args.output else default_output(args.config, args.runtime, size))
    detector, det_kwargs = None, None
    if not args.no_detector:
        from ..detection import DETECTORS

        detector = cfg['detector']
        det_kwargs = model_kwargs(cfg, DETECTORS[detector])
        det_kwargs['num_classes'] = cfg['model']['num_classes'] or 80
    data = build_latency_table(space, size, runtime, output, warmup=args.warmup, repeats=args.repeats,
                               save_every=args.save_every, progress=not args.no_progress, detector=detector,
                               detector_kwargs=det_kwargs)
    print(f'latency table: {output}')
    blocks = sum(part.kind == 'block' for part in plan.parts.values())
    print(f"{len(data['entries'])} parts ({blocks} blocks) of the {cfg['detector']} space at "
          f"{size[0]}x{size[1]} on {runtime.name} ({runtime.version}, {runtime.threads} threads): "
          f"{data['build_time_s']:.0f} s of measuring")
    if detector is not None:
        nh = data['entries'].get(f'{detector}_neck_head|{size[0]}x{size[1]}')
        if nh:
            print(f"{detector} neck + head at the seed widths (information, not in the objective): {nh['ms']:.2f} ms")
    print(f"search with it: --set search.objective.type=latency search.objective.table={output}")
    return data

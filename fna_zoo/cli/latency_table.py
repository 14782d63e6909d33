"""`fna-latency-table` (also `python search/latency_table.py`, a shim): build a latency table on a runtime.

The table feeds the `latency` search objective (`fna_zoo.nas.latency`): FNA's architecture adaptation
(https://arxiv.org/abs/2001.02525) with Jung et al.'s widths (https://arxiv.org/abs/2206.08509), scored by
measured latency as in ProxylessNAS (https://arxiv.org/abs/1812.00332) instead of MAdds. Runtimes are the
canonical names of `fna_zoo.runtime.names` (`onnxruntime`, `torch`, ...) with `--device cpu|cuda`; old names
such as `onnxruntime-cpu` are aliases.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ..runtime.names import runtime_help, runtime_label
from .common import CliParser, add_config_args, add_output_arg, add_verbosity, entry_point, setup_logging

__all__ = ['latency_table_main', 'default_output', 'main']

_logger = logging.getLogger(__name__)


def default_output(config: str | None, runtime: str, size: Sequence[int], device: str | None = None) -> Path:
    """runs/latency_tables/<config name>_<runtime>-<device>_<H>x<W>.json (e.g. `..._onnxruntime-cpu_320x320.json`,
    the name tables had before the runtime names were unified).

    Args:
        config: The search config file (None: the built-in defaults).
        runtime: A runtime name or alias.
        size: (H, W).
        device: 'cpu' or 'cuda' (see `fna_zoo.runtime.names.canonical_runtime`).
    """
    stem = Path(config).stem if config else 'default_search'
    return Path('runs') / 'latency_tables' / f'{stem}_{runtime_label(runtime, device)}_{size[0]}x{size[1]}.json'


def _check_output(path: Path) -> Path:
    from ..checks import check_output_path

    return check_output_path(path, '.json')


def latency_table_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv`, build (or resume) the table and return it (raises on user errors; see `main`).

    Args:
        argv: Arguments (default `sys.argv[1:]`).
    """
    from ..detection import DETECTORS, model_kwargs
    from ..engine.config import load_config
    from ..nas.config import SEARCH_DEFAULTS
    from ..nas.latency import build_latency_table, table_plan
    from ..nas.latency_runtime import get_runtime
    from ..nas.space import SearchSpace

    p = CliParser(prog='fna-latency-table', description='Time every candidate block of a search space on a runtime '
                  'into a latency table (JSON) for the latency search objective (search.objective: {type: latency, '
                  'table: FILE}). Resumable: rerun the same command to finish an interrupted table.')
    add_config_args(p, 'search config (its search.space, detector and search.objective.input_size); default: the '
                    'built-in search defaults')
    p.add_argument('--runtime', required=True, help=f'one of {runtime_help()}')
    p.add_argument('--device', choices=['cpu', 'cuda'], help='where the runtime runs (default cpu; cuda for '
                   'tensorrt, tensorrt-fp16 and torch-fp16, and the device an old name such as torch-cuda says)')
    add_output_arg(p, 'table file (.json); default runs/latency_tables/<config>_<runtime>-<device>_<H>x<W>.json')
    p.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                   help='image size the backbone sees (default: search.objective.input_size)')
    p.add_argument('--threads', type=int, help='CPU intra-op threads (default: torch default, the physical cores)')
    p.add_argument('--warmup', type=int, default=2, help='untimed runs per part (default 2)')
    p.add_argument('--runs', '--repeats', dest='runs', type=int, default=10,
                   help='timed runs per part; the median is kept (default 10; --repeats is an alias)')
    p.add_argument('--passes', type=int, default=3, help="passes over all parts, each in its own shuffled order; a "
                   "part keeps the median of its passes' medians (default 3; rerun with more to add passes)")
    p.add_argument('--save-every', type=int, default=25, help='parts between writes of the file (default 25)')
    p.add_argument('--no-detector', action='store_true', help="skip timing the detector's neck and head "
                   '(information only, not in the objective)')
    p.add_argument('--no-calibration', action='store_true', help='do not calibrate the finished table on whole '
                   'backbones (the search then uses the plain sum of parts)')
    p.add_argument('--recalibrate', action='store_true', help='time the calibration again on a finished table that '
                   'has one (e.g. after the machine drifted)')
    p.add_argument('--calibration-archs', type=int, default=6, metavar='N', help='random archs among the '
                   "calibration's whole backbones, beside the seed at each width multiplier (default 6)")
    p.add_argument('--calibration-rounds', type=int, default=30, metavar='N',
                   help='interleaved timed rounds of the calibration (default 30)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_verbosity(p)
    args = p.parse_args(argv)
    setup_logging(args)
    # every check before anything is written: config, space, size, runtime, output path (an existing table is
    # checked by build_latency_table before it measures or writes anything)
    for flag, value, low in (('--runs', args.runs, 1), ('--passes', args.passes, 1),
                             ('--calibration-archs', args.calibration_archs, 0),
                             ('--calibration-rounds', args.calibration_rounds, 3)):
        if value < low:
            raise ValueError(f'{flag} is {value}; expected an integer >= {low}')
    if args.no_calibration and args.recalibrate:
        raise ValueError('--recalibrate with --no-calibration; expected one of them')
    cfg = load_config(args.config, args.set, defaults=SEARCH_DEFAULTS)
    space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
    size = list(args.input_size) if args.input_size else list(cfg['search']['objective']['input_size'])
    plan = table_plan(space, size)
    runtime = get_runtime(args.runtime, args.threads, args.device)
    output = _check_output(Path(args.output) if args.output
                           else default_output(args.config, runtime.name, size, runtime.device))
    detector, det_kwargs = None, None
    if not args.no_detector:
        detector = cfg['detector']
        det_kwargs = model_kwargs(cfg, DETECTORS[detector])
        det_kwargs['num_classes'] = cfg['model']['num_classes'] or 80
    data = build_latency_table(space, size, runtime, output, warmup=args.warmup, repeats=args.runs,
                               save_every=args.save_every, progress=not (args.no_progress or args.quiet),
                               detector=detector, detector_kwargs=det_kwargs, calibrate=not args.no_calibration,
                               calibration_random=args.calibration_archs,
                               calibration_rounds=args.calibration_rounds, recalibrate=args.recalibrate,
                               passes=args.passes)
    print(f'latency table: {output}')
    blocks = sum(part.kind == 'block' for part in plan.parts.values())
    print(f"{len(data['entries'])} parts ({blocks} blocks) of the {cfg['detector']} space at "
          f"{size[0]}x{size[1]} on {runtime.name} ({runtime.device}; {runtime.version}, {runtime.threads} threads), "
          f"{args.passes} passes: {data['build_time_s']:.0f} s of measuring")
    if detector is not None:
        nh = data['entries'].get(f'{detector}_neck_head|{size[0]}x{size[1]}')
        if nh:
            print(f"{detector} neck + head at the seed widths (information, not in the objective): {nh['ms']:.2f} ms")
    cal = data.get('calibration')
    if cal:
        err = cal['max_abs_error_pct']
        print(f"calibrated on {len(cal['archs'])} whole backbones: measured = {cal['scale']:.3f} x sum of parts "
              f"{cal['offset_ms']:+.2f} ms; largest error {err['sum']:.1f} % (sum) -> {err['calibrated']:.1f} %")
    print(f"search with it: --set search.objective.type=latency search.objective.table={output}")
    return data


main = entry_point(latency_table_main)


if __name__ == '__main__':
    sys.exit(main())

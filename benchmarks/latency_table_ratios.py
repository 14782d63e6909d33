"""How well latency tables predict the ratio of each arch's latency to the seed's, against whole backbones timed.

The search's relative targets (`0.75x`, `fna_zoo.nas.latency`) and its verification's baseline rest on that ratio.
This script compares several tables of one search space (e.g. builds with `fna-latency-table --passes 1` and
`--passes 3`) with the measured ratios of `benchmarks/latency_table_accuracy.py --ratio-to <seed> --json` runs:

    python benchmarks/latency_table_ratios.py --config configs/trees_search.yaml \
        --tables a.json b.json ... --measured acc1.json acc2.json ... [--json out.json]

Every arch of the first run that was timed with `--arch` (the random draws are left out) is compared; the measured
ratio is its mean over the runs. Per table (each predicting the plain sum of its parts, without its calibration,
which changes ratios by well under 0.01) and for the median of all tables' parts: the predicted ratio of each arch,
and the mean and largest absolute error. Nothing is timed: the runs and tables are read.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402

from fna_zoo import load_arch  # noqa: E402
from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402
from fna_zoo.engine.config import load_config  # noqa: E402
from fna_zoo.fileio import atomic_write_text, portable_path  # noqa: E402
from fna_zoo.nas.config import SEARCH_DEFAULTS  # noqa: E402
from fna_zoo.nas.latency import check_table, load_table_file, table_costs  # noqa: E402
from fna_zoo.nas.space import SearchSpace  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency_table_accuracy import path_of  # noqa: E402


def median_table(tables: list[dict]) -> dict:
    """A table whose every part is the median of the tables' parts (one pass each)."""
    out = copy.deepcopy(tables[0])
    out.pop('calibration', None)
    out.setdefault('measurement', {})['passes'] = 1
    for key, entry in out['entries'].items():
        entry['ms'] = float(np.median([t['entries'][key]['ms'] for t in tables]))
        entry['passes'] = [entry['ms']]
    return out


def main(argv=None) -> dict:
    p = CliParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', required=True, help='search config of the tables')
    p.add_argument('--tables', nargs='+', required=True, help='latency tables (.json) of that space')
    p.add_argument('--measured', nargs='+', required=True,
                   help='--json outputs of benchmarks/latency_table_accuracy.py runs made with --ratio-to')
    p.add_argument('--json', help='write the results here')
    args = p.parse_args(argv)
    cfg = load_config(args.config, [], defaults=SEARCH_DEFAULTS)
    space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
    runs = []
    for f in args.measured:
        run = json.loads(Path(f).read_text())
        if not any('ratio_to_ref' in r for r in run.get('rows', [])):
            raise ValueError(f'{f!r} has no measured ratios; expected the --json of latency_table_accuracy.py '
                             'run with --ratio-to')
        runs.append(run)
    names = [r['name'] for r in runs[0]['rows'] if not r['name'].startswith('random')]
    measured = {n: float(np.mean([next(r for r in run['rows'] if r['name'] == n)['ratio_to_ref']['ratio']
                                  for run in runs])) for n in names}
    ref = next(n for n in names if measured[n] == 1.0)
    size = tuple(runs[0]['input_size'])
    paths = {n: path_of(space, load_arch(n)) for n in names}
    loaded = {portable_path(t): load_table_file(t) for t in args.tables}
    for label, data in loaded.items():
        check_table(data, space, size, where=f'latency table {label!r}')
    if len(loaded) > 1:
        loaded['median of the tables'] = median_table(list(loaded.values()))
    predictions = {}
    for label, data in loaded.items():
        table = table_costs(space, size, data, f'latency table {label!r}', calibrated=False)
        predictions[label] = {n: table.of_path(paths[n]) / table.of_path(paths[ref]) for n in names}
    print(f"{'arch':>28} {'measured':>9} " + ' '.join(f'{i:>7}' for i in range(len(predictions))))
    for n in names:
        print(f'{Path(n).stem[-28:]:>28} {measured[n]:9.3f} ' + ' '.join(f'{pr[n]:7.3f}' for pr in predictions.values()))
    summary: dict = {'input_size': list(size), 'reference': portable_path(ref), 'runs': len(runs),
                     'measured': {portable_path(n): v for n, v in measured.items()}, 'tables': []}
    for i, (label, pr) in enumerate(predictions.items()):
        err = np.array([abs(pr[n] - measured[n]) for n in names if n != ref])
        summary['tables'].append({'table': label, 'mean_abs_error': float(err.mean()),
                                  'max_abs_error': float(err.max()),
                                  'predicted': {portable_path(n): v for n, v in pr.items()}})
        print(f'{i}: {label}: mean |error| {err.mean():.3f}, largest {err.max():.3f}')
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(summary, indent=1) + '\n')
    return summary


if __name__ == '__main__':
    sys.exit(run_cli(main))

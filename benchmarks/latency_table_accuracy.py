"""Predicted (latency table) vs measured whole-backbone latency of random archs of a search space.

    HF_HUB_OFFLINE=1 python benchmarks/latency_table_accuracy.py \
        --table runs/latency_tables/fna_retinanet_search_onnxruntime-cpu_800x1088.json \
        --config configs/fna_retinanet_search.yaml [--random 10] [--arch runs/x/arch.yaml ...] [--rounds 10]
        [--json out.json]

Draws `--random` archs of the config's space (uniform over every slot's ops and every stage's widths,
seeded), adds any `--arch` files (e.g. derived archs of searches), builds each whole backbone (random init,
the module the table predicts: stem, blocks, head conv) on the table's runtime and thread count, and times
them interleaved (round after round, all archs once per round, `fna_zoo.runtime.timing.time_interleaved`), so
background load on a shared machine hits every arch alike. Prints per arch: MAdds, predicted ms (the
table's `CostTable.of_path`, the latency objective at one-hot probabilities, calibrated when the table is),
measured median ms and the error; then the mean absolute percentage error (MAPE) and the rank correlation over
the random archs. With `--ratio-to`, every arch's measured ratio to that arch beside the table's predicted ratio
and the plain sum of parts' (without the table's calibration).

On a shared machine the table and the whole networks are timed at different moments under different
background load; `--fresh-parts` separates that drift from the method's own error: per arch, its whole
backbone and each of its parts (with the overhead and boundary probes) are timed again in alternation (same
rounds, same load), and the sum of those fresh parts by the table's rule (`part_ms`) is compared with that
whole.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fna_zoo import count_arch, load_arch  # noqa: E402
from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402
from fna_zoo.engine.config import load_config  # noqa: E402
from fna_zoo.nas.config import SEARCH_DEFAULTS  # noqa: E402
from fna_zoo.nas.latency import (arch_module, check_table, load_table_file, part_module, part_ms,  # noqa: E402
                                  table_costs, table_plan)
from fna_zoo.nas.latency_runtime import get_runtime  # noqa: E402
from fna_zoo.nas.space import ArchPath, SearchSpace  # noqa: E402
from fna_zoo.runtime.timing import paired_ratio, time_interleaved  # noqa: E402


def random_path(space: SearchSpace, g: torch.Generator) -> ArchPath:
    pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
    return ArchPath(tuple(tuple(pick(len(slot)) for slot in st.slots) for st in space.stages),
                    tuple(pick(len(st.widths)) for st in space.stages))


def path_of(space: SearchSpace, arch) -> ArchPath:
    """The path of an arch of the space (skips fill the slots after a stage's ops)."""
    ops, widths = [], []
    for st in space.stages:
        stage = arch.stages[st.index]
        names = list(stage.ops) + ['skip'] * (len(st.slots) - len(stage.ops))
        ops.append(tuple(slot.index(n) for slot, n in zip(st.slots, names)))
        widths.append(st.widths.index(stage.out_chs))
    return ArchPath(tuple(ops), tuple(widths))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def fresh_parts(space: SearchSpace, size: tuple, runtime, rows: list, image: torch.Tensor, args,
                calibration: dict | None) -> None:
    """Per arch: its whole backbone and its parts (and the overhead probe) timed in alternation; the parts summed
    by the table's rule (its calibration included), so the error compares with the table's own."""
    plan = table_plan(space, size)
    print(f"{'arch':>40} {'whole ms':>9} {'parts ms':>9} {'err %':>7}")
    for r in rows:
        keys = plan.keys_of(r['path'])
        probes = [f'probe{n}|{c}|{h}x{w}' for _, c, h, w in dict.fromkeys(plan.parts[k].shapes[0] for k in keys[1:])
                  for n in (1, 2)]
        unique = ['overhead'] + list(dict.fromkeys(keys)) + probes
        with runtime.active():
            runners = [runtime.prepare(arch_module(space.derive(r['path'])), [image])]
            for k in unique:
                module, inputs = part_module(space, plan.parts[k])
                runners.append(runtime.prepare(module.eval(), inputs))
            times = time_interleaved([x.fn for x in runners], warmup=args.warmup, runs=args.rounds,
                                     sync=runners[0].sync)
        med = dict(zip(['whole'] + unique, (1000 * float(np.median(t)) for t in times)))
        fresh = {k: {'ms': v} for k, v in med.items()}
        parts = sum(part_ms(fresh, plan, k) for k in keys)  # the table's rule on the fresh timings
        if calibration:
            parts = calibration['scale'] * parts + calibration['offset_ms']
        r.update(fresh_whole=med['whole'], fresh_parts=parts,
                 fresh_error_pct=100 * (parts - med['whole']) / med['whole'])
        print(f"{r['name'][-40:]:>40} {med['whole']:9.2f} {parts:9.2f} {r['fresh_error_pct']:+7.1f}")


def main(argv=None) -> dict:
    p = CliParser(description=__doc__.splitlines()[0])
    p.add_argument('--table', required=True, help='latency table (search/latency_table.py)')
    p.add_argument('--config', help='search config of the table (default: the built-in search defaults)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='config overrides')
    p.add_argument('--random', type=int, default=10, help='random archs of the space (default 10)')
    p.add_argument('--arch', nargs='*', default=[], help='arch files to measure as well (e.g. derived archs)')
    p.add_argument('--rounds', type=int, default=10, help='timed rounds (default 10)')
    p.add_argument('--warmup', type=int, default=2, help='untimed rounds (default 2)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--ratio-to', help='also print every arch\'s latency as a ratio to this --arch file, round by round '
                   '(median and p10-p90 of the per-round ratios)')
    p.add_argument('--fresh-parts', action='store_true', help="also time every arch's parts in alternation with it "
                   '(the method error without load drift)')
    p.add_argument('--json', help='write the results here')
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.set, defaults=SEARCH_DEFAULTS)
    space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
    meta = load_table_file(args.table)
    size = tuple(meta['input_size'])
    check_table(meta, space, size, where=f'latency table {args.table!r}')
    table = table_costs(space, size, meta, f'latency table {args.table!r}')
    raw = table_costs(space, size, meta, f'latency table {args.table!r}', calibrated=False)  # the plain sum of parts
    runtime = get_runtime(meta['runtime']['name'], meta['runtime']['threads'],
                          str(meta['runtime'].get('device') or 'cpu').split(' ', 1)[0])
    g = torch.Generator().manual_seed(args.seed)
    rows = [{'name': f'random{i}', 'path': random_path(space, g)} for i in range(args.random)]
    rows += [{'name': a, 'path': path_of(space, load_arch(a))} for a in args.arch]
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    runners = []
    with runtime.active():
        for r in rows:
            arch = space.derive(r['path'])
            r.update(arch=arch.to_fna_string(), madds=count_arch(arch, size).madds, predicted=table.of_path(r['path']),
                     predicted_sum=raw.of_path(r['path']))
            runners.append(runtime.prepare(arch_module(arch), [image]))
        times = time_interleaved([x.fn for x in runners], warmup=args.warmup, runs=args.rounds,
                                 sync=runners[-1].sync)
    print(f"{runtime.name} on {runtime.device} ({runtime.version}), {runtime.threads} threads, "
          f"input {size[0]}x{size[1]}, "
          f"{args.rounds} interleaved rounds; table {args.table}")
    print(f"{'arch':>40} {'GMAdds':>7} {'pred ms':>9} {'meas ms':>9} {'IQR ms':>7} {'err %':>7}")
    for r, t in zip(rows, times):
        ms = np.asarray(t) * 1000
        r.update(measured=float(np.median(ms)), iqr=float(np.subtract(*np.percentile(ms, [75, 25]))))
        r['error_pct'] = 100 * (r['predicted'] - r['measured']) / r['measured']
        print(f"{r['name'][-40:]:>40} {r['madds'] / 1e9:7.3f} {r['predicted']:9.2f} {r['measured']:9.2f} "
              f"{r['iqr']:7.2f} {r['error_pct']:+7.1f}")
    if args.ratio_to:
        ref = [r['name'] for r in rows].index(args.ratio_to)
        print(f"ratio to {args.ratio_to}: measured (median of per-round ratios, p10-p90), predicted by the table, "
              'and by the plain sum of parts (without the calibration)')
        for r, t in zip(rows, times):
            q = paired_ratio(t, times[ref])
            r.update(ratio_to_ref=q, predicted_ratio=r['predicted'] / rows[ref]['predicted'],
                     predicted_sum_ratio=r['predicted_sum'] / rows[ref]['predicted_sum'])
            print(f"{r['name'][-40:]:>40}: {q['ratio']:.3f} ({q['p10']:.3f}-{q['p90']:.3f}); table "
                  f"{r['predicted_ratio']:.3f} ({r['predicted_ratio'] - q['ratio']:+.3f}); sum "
                  f"{r['predicted_sum_ratio']:.3f} ({r['predicted_sum_ratio'] - q['ratio']:+.3f})")
        others = [r for i, r in enumerate(rows) if i != ref]
        if others:
            worst = lambda k: max(abs(r[k] - r['ratio_to_ref']['ratio']) for r in others)  # noqa: E731
            summary_ratio = {'max_abs_ratio_error': worst('predicted_ratio'),
                             'max_abs_ratio_error_sum': worst('predicted_sum_ratio')}
            print(f"largest ratio error: table {summary_ratio['max_abs_ratio_error']:.3f}, plain sum "
                  f"{summary_ratio['max_abs_ratio_error_sum']:.3f}")
    if args.fresh_parts:
        fresh_parts(space, size, runtime, rows, image, args, meta.get('calibration'))
    rnd = [r for r in rows if r['name'].startswith('random')]
    summary: dict = {'runtime': meta['runtime'], 'input_size': list(size), 'rounds': args.rounds,
                     'loadavg_1m': os.getloadavg()[0], 'calibrated': 'calibration' in meta}
    if args.ratio_to and len(rows) > 1:
        summary.update(summary_ratio)
    if rnd:
        err = np.array([r['error_pct'] for r in rnd])
        pred, meas = np.array([r['predicted'] for r in rnd]), np.array([r['measured'] for r in rnd])
        summary.update(mape=float(np.abs(err).mean()), mean_error=float(err.mean()),
                       max_abs_error=float(np.abs(err).max()), spearman=spearman(pred, meas) if len(rnd) > 2 else None)
        rho = 'n/a (fewer than 3)' if summary['spearman'] is None else f"{summary['spearman']:.3f}"
        print(f"random archs: MAPE {summary['mape']:.1f}% (mean signed {summary['mean_error']:+.1f}%, max "
              f"{summary['max_abs_error']:.1f}%), Spearman rank correlation {rho}")
        if args.fresh_parts:
            ferr = np.array([r['fresh_error_pct'] for r in rnd])
            summary.update(fresh_mape=float(np.abs(ferr).mean()), fresh_mean_error=float(ferr.mean()))
            print(f"fresh parts vs whole, timed in alternation: MAPE {summary['fresh_mape']:.1f}% "
                  f"(mean signed {summary['fresh_mean_error']:+.1f}%)")
    summary['rows'] = [{k: (list(map(list, v.ops)) + [list(v.widths)] if k == 'path' else v) for k, v in r.items()}
                       for r in rows]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == '__main__':
    sys.exit(run_cli(main))

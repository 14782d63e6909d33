"""The adaptation study: does the searched backbone beat the seed, at the same cost, on the tree set?

Every model is a RetinaNet retrained with one recipe (`configs/trees_retinanet.yaml`) on the real tree-crown
set and evaluated on its validation tiles; every AP in the outputs is measured by this script:

- the seed MobileNetV2, from the ImageNet-remapped seed (two retrain seeds) and from random init;
- the published FNA RetinaNet arch (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525), remapped;
- the searched arch at the seed's MAdds (`configs/trees_search.yaml`, two retrain seeds) and the arch derived
  by a second search seed, remapped (Jung et al., ICPR 2022 - https://arxiv.org/abs/2206.08509: channel
  dimensions searched and mapped);
- (`--other-searched`) archs of further searches, e.g. other objectives or a lambda = 0 control, one retrain each;
- random archs of the same search space at MAdds within 5 % of the seed's (rejection sampling), remapped: the
  random-search baseline of Li & Talwalkar (UAI 2019 - https://arxiv.org/abs/1902.07638).

Resumable model by model: each retrain is a run folder `<runs>/<name>`; a finished one (metrics.json) is read
back, an interrupted one resumes from its last.pth. When every model is done, the backbones' onnxruntime
latency is timed interleaved (one run of each model per round, so load drifts hit all alike) and the table
(CSV, JSON, markdown) and the Pareto plot (PNG) are written into `--out`.

    python benchmarks/adaptation_study.py --searched runs/trees_search/arch.yaml \\
        --searched-seed2 runs/trees_search_s1/arch.yaml [--other-searched runs/<other search>/arch.yaml ...]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STUDY_SIZE = (320, 320)     # the recipe's input (model.kwargs min_size = max_size = 320)
PAPER_SIZE = (800, 1088)    # FNA's RetinaNet counting size
MADDS_TOLERANCE = 0.05      # random archs: MAdds within 5 % of the seed's


def random_archs(count: int, seed: int, tolerance: float = MADDS_TOLERANCE) -> list[dict[str, Any]]:
    """`count` archs drawn uniformly from the search space of `configs/trees_search.yaml`, kept when their
    backbone MAdds at the study size are within `tolerance` of the seed's (rejection sampling).

    Args:
        count: How many.
        seed: Seed of the draws.
        tolerance: Relative MAdds band around the seed's.

    Returns:
        Per arch: `name`, `arch` (its dict) and `draws` (how many paths were drawn to find it).
    """
    from fna_zoo.arch import load_arch
    from fna_zoo.complexity import count_arch
    from fna_zoo.engine.config import SEARCH_DEFAULTS, load_config
    from fna_zoo.nas.space import ArchPath, SearchSpace

    cfg = load_config(ROOT / 'configs' / 'trees_search.yaml', defaults=SEARCH_DEFAULTS)
    space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
    target = count_arch(load_arch(space.seed_name), STUDY_SIZE).madds
    rng = random.Random(seed)
    out, draws = [], 0
    while len(out) < count:
        draws += 1
        if draws > 1_000_000:
            raise RuntimeError(f'found {len(out)} of {count} archs within {tolerance:.0%} of the seed MAdds')
        path = ArchPath(tuple(tuple(rng.randrange(len(names)) for names in st.slots) for st in space.stages),
                        tuple(rng.randrange(len(st.widths)) for st in space.stages))
        arch = space.derive(path)
        if abs(count_arch(arch, STUDY_SIZE).madds / target - 1) <= tolerance:
            out.append({'name': f'random_{len(out)}', 'arch': arch.to_dict(), 'draws': draws})
            draws = 0
    return out


def study_models(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's models: name, group, backbone spec, seed weights and retrain seed."""
    seed_w = args.seed_weights
    models = [
        {'name': 'seed_imagenet_r0', 'group': 'seed (ImageNet remap)', 'backbone': 'mobilenetv2_100',
         'seed_weights': seed_w, 'seed': 0},
        {'name': 'seed_imagenet_r1', 'group': 'seed (ImageNet remap)', 'backbone': 'mobilenetv2_100',
         'seed_weights': seed_w, 'seed': 1},
        {'name': 'seed_random_init', 'group': 'seed (random init)', 'backbone': 'mobilenetv2_100',
         'seed_weights': None, 'seed': 0},
        {'name': 'fna_retinanet', 'group': 'FNA RetinaNet arch (remap)', 'backbone': 'fna_retinanet_backbone',
         'seed_weights': seed_w, 'seed': 0},
    ]
    for i, searched in enumerate(p for p in (args.searched, args.searched_seed2) if p):
        arch = _arch_dict(searched)
        seeds = (0, 1) if i == 0 else (0,)
        for r in seeds:
            models.append({'name': f'searched_s{i}_r{r}', 'group': f'searched at seed MAdds, search seed {i} (remap)',
                           'backbone': arch, 'seed_weights': seed_w, 'seed': r, 'arch_file': str(searched)})
    for searched in args.other_searched:
        folder = Path(searched).resolve().parent.name
        models.append({'name': f'other_{folder}_r0', 'group': f'searched, {folder} (remap)',
                       'backbone': _arch_dict(searched), 'seed_weights': seed_w, 'seed': 0, 'arch_file': str(searched)})
    for a in random_archs(args.random, args.random_seed):
        models.append({'name': a['name'], 'group': 'random at seed MAdds (remap)', 'backbone': a['arch'],
                       'seed_weights': seed_w, 'seed': 0})
    return models


def _arch_dict(path: str | Path) -> dict[str, Any]:
    from fna_zoo.arch import load_arch

    return load_arch(path).to_dict()


def arch_agreement(a: str | Path, b: str | Path) -> dict[str, int]:
    """How many layer slots (op, or skip) and stage widths two derived archs share."""
    from fna_zoo.arch import load_arch

    x, y = load_arch(a), load_arch(b)
    slots = [(p, q) for s, t in zip(x.stages, y.stages) for p, q in zip(s.ops, t.ops)]
    return {'slots_alike': sum(p == q for p, q in slots), 'slots': len(slots),
            'widths_alike': sum(s.out_chs == t.out_chs for s, t in zip(x.stages, y.stages)), 'stages': len(x.stages)}


def search_summary(run: Path) -> dict[str, Any] | None:
    """The figures of a finished search (its summary.json): entropy fractions, skip fraction, MAdds, wall time."""
    path = run / 'summary.json'
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    keys = ('op_entropy_fraction', 'width_entropy_fraction', 'skip_fraction', 'madds', 'params', 'wall_time_s',
            'steps', 'arch_steps', 'objective', 'arch', 'supernet_eval')
    return {'run': str(run), **{k: s.get(k) for k in keys}}


def retrain_model(m: dict[str, Any], runs: Path, overrides: list[str]) -> dict[str, Any]:
    """Retrain one study model with the recipe (resuming an interrupted run); returns its metrics.json."""
    from fna_zoo.engine.config import load_config
    from fna_zoo.engine.train import retrain

    out = runs / m['name']
    done = out / 'metrics.json'
    if not (done.is_file() and (out / 'final.pth').is_file()):
        cfg = load_config(ROOT / 'configs' / 'trees_retinanet.yaml', overrides)
        cfg['model']['backbone'] = m['backbone']
        cfg['model']['seed_weights'] = m['seed_weights']
        cfg['seed'] = m['seed']
        cfg['output'] = str(out)
        retrain(cfg, resume=True)
    result = json.loads(done.read_text())
    # NOTE: the run's wall time, from its first file (config.yaml, written at the start) to its last (metrics.json)
    result['wall_s'] = round(done.stat().st_mtime - (out / 'config.yaml').stat().st_mtime, 1)
    return result


def counts(m: dict[str, Any]) -> dict[str, float]:
    """Backbone params (M) and MAdds (G) at the study size and at the paper's 800x1088."""
    from fna_zoo.arch import load_arch
    from fna_zoo.complexity import count_arch

    arch = load_arch(m['backbone'])
    small, paper = count_arch(arch, STUDY_SIZE), count_arch(arch, PAPER_SIZE)
    return {'params_m': small.params / 1e6, 'gmadds_320': small.madds / 1e9, 'gmadds_800x1088': paper.madds / 1e9}


def ort_latencies(models: list[dict[str, Any]], rounds: int, threads: int) -> dict[str, dict[str, float]]:
    """Backbone onnxruntime latency (ms, batch 1, study size) of every model, timed interleaved."""
    import torch

    from fna_zoo.detection import create_backbone
    from fna_zoo.runtime.runners import onnx_bytes, onnxruntime_runner
    from fna_zoo.runtime.timing import stats_from_times, time_interleaved

    x = torch.randn(1, 3, *STUDY_SIZE)
    fns, names, seen = [], [], {}
    for m in models:
        key = json.dumps(m['backbone'], sort_keys=True)
        if key in seen:  # the same arch (other retrain seeds, random init) is timed once
            continue
        seen[key] = m['name']
        body = create_backbone(m['backbone'], None, features_only=True, out_indices=(2, 3, 4)).eval()
        fns.append(onnxruntime_runner(onnx_bytes(body, [x]), [x], threads=threads).fn)
        names.append(key)
    times = time_interleaved(fns, warmup=5, runs=rounds)
    by_name = {seen[k]: stats_from_times(t) for k, t in zip(names, times)}  # the first model of each arch
    first = {m['name']: seen[json.dumps(m['backbone'], sort_keys=True)] for m in models}
    return {name: {'ort_p50_ms': by_name[f].p50, 'ort_p90_ms': by_name[f].p90} for name, f in first.items()}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per group: mean AP / AP50 over its retrain seeds with their spread (max - min)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r['group'] if not r['group'].startswith('random') else r['name'], []).append(r)
    out = []
    for label, rs in groups.items():
        ap, ap50 = [r['AP'] for r in rs], [r['AP50'] for r in rs]
        out.append({'model': label, 'n': len(rs), 'params_m': rs[0]['params_m'], 'gmadds_320': rs[0]['gmadds_320'],
                    'gmadds_800x1088': rs[0]['gmadds_800x1088'], 'ort_p50_ms': rs[0].get('ort_p50_ms'),
                    'AP': statistics.mean(ap), 'AP_spread': max(ap) - min(ap),
                    'AP50': statistics.mean(ap50), 'AP50_spread': max(ap50) - min(ap50)})
    return out


def markdown(summary: list[dict[str, Any]], machine: dict[str, Any], wall_s: float, recipe: str, note: str = '') -> str:
    """The study table in markdown, its header naming the data, recipe, machine and wall time."""
    lines = [f'Tree-crown validation tiles (NEON, DeepForest; 14 tiles, 512 trees); RetinaNet, head width 64, '
             f'320 px; recipe `{recipe}`; machine: {machine.get("cpu_model")}, {machine.get("threads")} threads. '
             f'AP in %, mean over retrain seeds (± half the range when n > 1). MAdds and params: backbone. '
             f'ORT: backbone, batch 1, 320x320, p50. Retrain wall time summed over the models: {wall_s / 60:.0f} min. '
             f'{note}'.rstrip(), '',
             '| model | n | params (M) | GMAdds 320² | GMAdds 800x1088 | ORT p50 (ms) | AP | AP50 |',
             '|---|---|---|---|---|---|---|---|']
    for s in summary:
        def pm(k: str) -> str:
            v = f'{100 * s[k]:.1f}'
            return v + (f' ± {50 * s[k + "_spread"]:.1f}' if s['n'] > 1 else '')
        lat = '' if s['ort_p50_ms'] is None else f"{s['ort_p50_ms']:.2f}"
        lines.append(f"| {s['model']} | {s['n']} | {s['params_m']:.2f} | {s['gmadds_320']:.3f} | "
                     f"{s['gmadds_800x1088']:.2f} | {lat} | {pm('AP')} | {pm('AP50')} |")
    return '\n'.join(lines) + '\n'


def eval_curve(run: Path) -> list[dict[str, float]]:
    """A retrain's AP-vs-steps curve (its eval.csv), AP and AP50 as fractions."""
    import csv

    path = run / 'eval.csv'
    if not path.is_file():
        return []
    with path.open() as f:
        return [{'step': int(r['step']), 'AP': float(r['AP']), 'AP50': float(r['AP50'])} for r in csv.DictReader(f)]


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """AP50 against retrain steps, one line per model (matplotlib Agg)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from fna_zoo.fileio import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        if pts:
            style = '-' if name.startswith(('seed', 'searched')) else ':'
            ax.plot([p['step'] for p in pts], [100 * p['AP50'] for p in pts], style, marker='o', ms=3, label=name)
    ax.set_xlabel('retrain step (batch 4, 320 px)')
    ax.set_ylabel('AP50 (%) on the tree validation tiles')
    ax.set_title('AP-vs-steps of the recipe (configs/trees_retinanet.yaml)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """AP50 against backbone MAdds, one marker per run, coloured by group (matplotlib Agg)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from fna_zoo.fileio import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r['group'], []).append(r)
    for g, rs in groups.items():
        ax.scatter([r['gmadds_320'] for r in rs], [100 * r['AP50'] for r in rs], label=g, s=40)
    ax.set_xlabel('backbone GMAdds at 320x320')
    ax.set_ylabel('AP50 (%) on the tree validation tiles')
    ax.set_title('Adaptation study: retrained RetinaNet, same recipe, measured here')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from tqdm import tqdm

    from fna_zoo.fileio import atomic_write_text
    from fna_zoo.runtime.machine import machine_info, machine_slug

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--searched', help='arch.yaml of the matched-cost search (configs/trees_search.yaml)')
    p.add_argument('--searched-seed2', help='arch.yaml of the same search with another seed')
    p.add_argument('--other-searched', nargs='*', default=[], metavar='ARCH',
                   help="arch.yaml of further searches (other objectives, controls), one retrain each, labelled by "
                        "their run folder's name")
    p.add_argument('--search-runs', nargs='*', default=[], metavar='DIR',
                   help='search run folders whose summary.json figures go into the JSON (entropy, skips, wall time)')
    p.add_argument('--random', type=int, default=5, help='random archs at the seed MAdds (default 5)')
    p.add_argument('--random-seed', type=int, default=0)
    p.add_argument('--runs', default='runs/study', help='run folders, one per model (resumable)')
    p.add_argument('--out', default=None, help='results folder (default benchmarks/results/<machine>)')
    p.add_argument('--only', nargs='*', help='retrain only these models (names), then stop')
    p.add_argument('--rounds', type=int, default=50, help='interleaved onnxruntime rounds')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='recipe overrides')
    p.add_argument('--seed-weights', default='asset:mobilenetv2_100.tv_in1k',
                   help="the ImageNet seed remapped into every model but 'seed_random_init' (default: torchvision's)")
    p.add_argument('--note', default='', help='a sentence for the table header (how the runs were scheduled)')
    args = p.parse_args(argv)
    for path in (args.searched, args.searched_seed2, *args.other_searched, *args.search_runs):
        if path and not Path(path).exists():
            p.error(f'{path!r} does not exist; expected an arch.yaml (--searched) or a search run folder')

    machine = machine_info(2)
    out = Path(args.out or ROOT / 'benchmarks' / 'results' / machine_slug(machine))
    runs = Path(args.runs)
    models = study_models(args)
    todo = [m for m in models if not args.only or m['name'] in args.only]
    rows = []
    for m in tqdm(todo, desc='study', unit='model'):
        tqdm.write(f'study: {m["name"]}')
        res = retrain_model(m, runs, args.set)
        rows.append({'name': m['name'], 'group': m['group'], 'seed': m['seed'],
                     'arch': m.get('arch_file') or (m['backbone'] if isinstance(m['backbone'], str) else 'random'),
                     'seed_weights': m['seed_weights'], 'AP': res['AP'], 'AP50': res['AP50'],
                     'AP75': res.get('AP75'), 'steps': res.get('step'), 'retrain_wall_s': res.get('wall_s'),
                     **counts(m)})
    if args.only:
        return 0
    lat = ort_latencies(models, args.rounds, threads=2)
    for r in rows:
        r.update(lat[r['name']])
    summary = summarize(rows)
    wall = sum(r['retrain_wall_s'] for r in rows)
    out.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    atomic_write_text(out / 'adaptation_study.csv', ','.join(fields) + '\n' + ''.join(
        ','.join(str(r.get(f, '')) for f in fields) + '\n' for r in rows))
    curves = {r['name']: eval_curve(runs / r['name']) for r in rows}
    searches = [x for x in (search_summary(Path(r)) for r in args.search_runs) if x]
    agreement = arch_agreement(args.searched, args.searched_seed2) if args.searched and args.searched_seed2 else None
    atomic_write_text(out / 'adaptation_study.json', json.dumps(
        {'machine': machine, 'recipe': 'configs/trees_retinanet.yaml', 'overrides': args.set, 'rows': rows,
         'summary': summary, 'curves': curves, 'searches': searches, 'search_seed_agreement': agreement,
         'random_archs': [m['backbone'] for m in models if m['name'].startswith('random')]}, indent=1) + '\n')
    plot_curves(curves, out / 'adaptation_study_curves.png')
    table = markdown(summary, machine, wall, 'configs/trees_retinanet.yaml', args.note)
    atomic_write_text(out / 'adaptation_study.md', table)
    plot(rows, out / 'adaptation_study.png')
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())

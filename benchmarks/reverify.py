"""Rerun the verification stage of a finished search from its committed files, optionally with zoo archs added.

A search's verification (`fna_zoo.nas.verify`) retrains its candidates and the baseline on a held-out part of the
training data; its record (`verify.json`) names every arch, so the verification can be run again without the super
network: to check that its scores reproduce on another machine, and to ask what the search would have handed on
had `search.verify.zoo` named some archs (a published arch such as FNA's `fna_retinanet_backbone`, Fang et al.,
ICLR 2020 - https://arxiv.org/abs/2001.02525). The search's own candidates keep their names and labels; the zoo
archs join after them, within the band of the target, as `fna-search` adds them:

    python benchmarks/reverify.py benchmarks/results/amd-epyc-2c/searches/trees_search_walltime \\
        --zoo fna_retinanet_backbone --out runs/reverify_trees --results <folder>

Writes the runs and `verify.json` under `--out/verify` (resumable: finished runs are read back), prints the
verification table with the committed scores beside the new ones, and with `--results` copies `verify.json`, the
resolved `config.yaml` and that table (`verification_table.txt`) there.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import yaml  # noqa: E402

from fna_zoo import load_arch  # noqa: E402
from fna_zoo.cli.common import CliParser, run_cli  # noqa: E402
from fna_zoo.cli.search import verification_table  # noqa: E402
from fna_zoo.engine.config import load_config  # noqa: E402
from fna_zoo.engine.train import data_root  # noqa: E402
from fna_zoo.fileio import atomic_write_text, portable_path  # noqa: E402
from fna_zoo.nas.config import SEARCH_DEFAULTS, check_search_section  # noqa: E402
from fna_zoo.nas.cost import CostObjective  # noqa: E402
from fna_zoo.nas.searcher import check_search_config, verification_setup  # noqa: E402
from fna_zoo.nas.space import SearchSpace  # noqa: E402
from fna_zoo.nas.verify import Candidate, path_cost, verify_candidates, zoo_candidates  # noqa: E402


def committed_candidates(record: dict[str, Any], space: SearchSpace, objective: CostObjective) -> list[Candidate]:
    """The search's own candidates of a verification record, as it ran them (names, labels, log-probabilities), with
    their cost under today's objective.

    Args:
        record: The search's `verify.json`.
        space: The search space.
        objective: The search's cost objective.

    Raises:
        ValueError: An arch not in the space, or a cost that differs from the recorded one (another latency table).
    """
    out = []
    for a in record['archs']:
        if a['name'] == record['baseline']:
            continue
        arch = load_arch(a['arch'])
        path = space.path_of(arch)
        if path is None:
            raise ValueError(f"verify.json names {a['name']} {a['arch']!r}, which is not in the search space")
        cost = path_cost(objective, path)
        if not math.isclose(cost, a['cost'], rel_tol=1e-6):
            raise ValueError(f"verify.json's cost of {a['name']} is {a['cost']:.6g}, today's objective says "
                             f'{cost:.6g}; expected the latency table the search used')
        out.append(Candidate(a['name'], arch, path, cost, a['log_prob'], a['label']))
    return out


def side_by_side(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Each arch's held-out AP50 per rung, committed and rerun (the rerun's per retrain seed in brackets).

    Args:
        old: The committed verification record.
        new: The rerun's record.
    """
    before = {a['name']: a['scores'] for a in old['archs']}
    lines = ['held-out AP50 %, committed -> rerun (per retrain seed):']
    for a in new['archs']:
        cells = []
        for i, s in enumerate(a['scores']):
            was = before.get(a['name'], [])
            w = f"{100 * was[i]['AP50']:.1f}" if i < len(was) else '-'
            seeds = ' / '.join(f'{100 * x:.1f}' for x in s['AP50_seeds'])
            cells.append(f"{s['steps']} steps {w} -> {100 * s['AP50']:.1f} ({seeds})")
        lines.append(f"  {a['name']:<12} {'; '.join(cells)}  {a['label']}")
    lines.append(f"committed winner: {old['winner']} ({old['winner_label']}); rerun winner: {new['winner']} "
                 f"({new['winner_label']})")
    return '\n'.join(lines)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Rerun the verification; returns its record.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    p = CliParser(description=__doc__.splitlines()[0])
    p.add_argument('search', help='a finished search folder: config.yaml, summary.json and verify.json (or '
                                  'verify/verify.json)')
    p.add_argument('--zoo', nargs='+', default=[], metavar='ARCH',
                   help='registered arch names or arch files to add (search.verify.zoo)')
    p.add_argument('--out', required=True, help='run folder of the rerun (its verify/ holds the runs)')
    p.add_argument('--results', help='copy verify.json, config.yaml and verification_table.txt here')
    args = p.parse_args(argv)
    src, out = Path(args.search), Path(args.out)
    found = [f for f in (src / 'verify.json', src / 'verify' / 'verify.json') if f.is_file()]
    if not (src / 'config.yaml').is_file() or not (src / 'summary.json').is_file() or not found:
        p.error(f'{args.search!r} has no config.yaml, summary.json and verify.json; expected a finished search folder '
                '(fna-search with search.verify.candidates > 0)')
    old = json.loads(found[0].read_text())
    unit = json.loads((src / 'summary.json').read_text())['cost_unit']
    cfg = load_config(src / 'config.yaml', defaults=SEARCH_DEFAULTS)
    if _inside(out, src) or out.resolve() == Path(cfg['output']).resolve():
        p.error(f"--out {args.out!r} is the search folder, inside it, or the search's run folder; expected another "
                'folder (the rerun would overwrite its verification)')
    if args.results and (_inside(Path(args.results), src) or _inside(Path(args.results), out)):
        p.error(f'--results {args.results!r} is inside the search folder or --out; expected another folder (it would '
                'overwrite their files)')
    cfg['output'] = str(out)
    cfg['search']['verify']['zoo'] = list(args.zoo)
    check_search_section(cfg)
    space, objective, _ = check_search_config(cfg)  # the zoo archs in the space
    v = cfg['search']['verify']
    recipe, base = verification_setup(cfg, data_root(cfg), space, objective)
    committed_base = next(a for a in old['archs'] if a['name'] == old['baseline'])
    if base.arch.to_fna_string() != committed_base['arch']:
        p.error(f"the baseline of {args.search!r} under today's objective is not the committed one "
                f"({committed_base['label']}); expected the latency table the search used")
    candidates = committed_candidates(old, space, objective)
    zoo, left_out = zoo_candidates(space, objective, v['zoo'], v['band'], None, None, taken=[base, *candidates],
                                   first_index=len(candidates))
    record = verify_candidates(candidates + zoo, base, recipe, v['steps'], v['margin'], out / 'verify', v['seeds'],
                               left_out)
    text = verification_table(record, unit) + '\n\n' + side_by_side(old, record)
    print(text)
    if args.results:
        dest = Path(args.results)
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest / 'verify.json', (out / 'verify' / 'verify.json').read_text())
        cfg['output'] = portable_path(out)  # NOTE: results hold no absolute path of this machine
        atomic_write_text(dest / 'config.yaml', yaml.safe_dump(cfg, sort_keys=False))
        atomic_write_text(dest / 'verification_table.txt', text + '\n')
    return record


if __name__ == '__main__':
    sys.exit(run_cli(main))

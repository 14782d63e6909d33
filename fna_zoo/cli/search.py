"""`fna-search` (also `search/run.py`, `python -m fna_zoo.cli.search` under torchrun): architecture search
(ops, depth, channel widths) around a seed network with parameter remapping, FNA (Fang et al., ICLR 2020 -
https://arxiv.org/abs/2001.02525) with Jung et al.'s width search (ICPR 2022 - https://arxiv.org/abs/2206.08509).

    fna-search --config configs/fna_retinanet_search.yaml [--data-path /data/coco] [--job-name NAME]
               [--set search.objective.lambda=0.05 ...] [--resume]
    torchrun --nproc_per_node 8 -m fna_zoo.cli.search --config ...      # DDP (NCCL on GPU, Gloo on CPU)
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from .common import (CliParser, add_run_args, entry_point, is_main_process, run_job, run_overrides,
                     setup_logging)

__all__ = ['search_main', 'verification_table', 'main']


def search_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv`, search, print the derived arch and how to retrain it; returns the result.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    from ..engine.config import load_config
    from ..nas.config import SEARCH_DEFAULTS
    from ..nas.searcher import search

    p = CliParser(prog='fna-search', description='Search a detection backbone (ops, depth, widths) around a seed '
                  'network, FNA-style; writes <run>/arch.yaml for fna-retrain --arch.')
    add_run_args(p)
    args = p.parse_args(argv)
    setup_logging(args)
    cfg = load_config(args.config, run_overrides(args), defaults=SEARCH_DEFAULTS)
    result = run_job(search, cfg, args.resume)
    if is_main_process():
        print(f"run folder: {cfg['output']}")
        print(f"derived arch ({result['seed']} seed, {result['steps']} weight / {result['arch_steps']} arch steps, "
              f"{result['wall_time_s']:.0f} s): {result['arch']}")
        size = 'x'.join(map(str, result['input_size']))
        print(f"backbone at {size}: {result['madds'] / 1e9:.3f}B MAdds, {result['params'] / 1e6:.3f}M params; "
              f"skip fraction {result['skip_fraction']:.2f}; entropy (1 = undecided, 0 = decided) ops "
              f"{result['op_entropy_fraction']:.2f}, widths {result['width_entropy_fraction']:.2f}")
        if result.get('predicted_latency_ms') is not None:
            print(f"predicted latency (table {result['objective']['table']}): {result['predicted_latency_ms']:.2f} ms")
        if result.get('supernet_eval'):
            print(f"derived path in the super network (BN recalibrated): AP {100 * result['supernet_eval']['AP']:.1f}")
        if result.get('verify'):
            print(verification_table(result['verify'], result['cost_unit']))
        print(f"retrain it: fna-retrain --config <retrain config> --arch {result['arch_file']}")
    return result


def verification_table(record: dict[str, Any], unit: str) -> str:
    """The verification stage's scores as printed lines: every arch's held-out AP50 per rung, then the winner.

    Args:
        record: `summary.json`'s `verify` record (`fna_zoo.nas.verify.verify_candidates`).
        unit: The cost unit of the search objective.
    """
    steps, seeds = record['steps'], record.get('seeds', 1)
    per = f', the mean over {seeds} retrain seeds' if seeds > 1 else ''
    lines = [f"verification on held-out training data (successive halving, {' / '.join(map(str, steps))} retrain "
             f'steps; AP50 %{per}):',
             f"  {'arch':<12} {'cost ' + unit:>12} " + ' '.join(f'{n:>7}' for n in steps) + '  what']
    for a in record['archs']:
        scores = [f"{100 * s['AP50']:7.1f}" for s in a['scores']] + ['      -'] * (len(steps) - len(a['scores']))
        lines.append(f"  {a['name']:<12} {a['cost']:12.4g} " + ' '.join(scores) + f"  {a['label']}")
    gain = record['margin_AP50']
    versus = '' if gain is None else f" (best candidate {record['best_candidate']}: {gain:+.1f} AP50 against it)"
    if gain is not None and seeds > 1:
        versus = versus[:-1] + ', by seed ' + ' / '.join(f'{g:+.1f}' for g in record['paired_gains_AP50']) + ')'

    lines += [f"  left out: zoo: {z['zoo']}: {z['why']}" for z in record.get('zoo_left_out', [])]
    lines.append(f"winner: {record['winner']}, {record['winner_label']}; baseline held-out AP50 "
                 f"{record['baseline_AP50']:.1f}{versus}; rule: {record['rule']}")
    return '\n'.join(lines)


main = entry_point(search_main)


if __name__ == '__main__':
    sys.exit(main())

"""Time of a search weight step relative to a training step of the sampled network built on its own, and of
architecture steps (DARTS relaxation and Gumbel), on the same batch; runs are interleaved, medians printed.

    python benchmarks/search_step.py [--detector retinanet] [--size 128] [--batch 8] [--repeats 5] [--paths 3]

Target: a weight step at most 1.3x the derived network's training step (forward, backward, optimizer step).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

from fna_zoo.detection import DETECTORS  # noqa: E402
from fna_zoo.engine.config import SEARCH_DEFAULTS, load_config  # noqa: E402
from fna_zoo.nas.searcher import build_search  # noqa: E402


def _timed_step(model: torch.nn.Module, params: list, images: list, targets: list) -> float:
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    tic = time.perf_counter()
    loss = sum(model(images, targets).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - tic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--detector', default='retinanet', choices=sorted(DETECTORS))
    p.add_argument('--size', type=int, default=128, help='square input size')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--repeats', type=int, default=5, help='timed steps per path and kind (after one warm-up)')
    p.add_argument('--paths', type=int, default=3, help='sampled paths')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size_kw = ({'min_size': args.size, 'max_size': args.size, 'head_width': 64} if args.detector == 'retinanet'
               else {'image_size': args.size})
    kwargs = '{' + ', '.join(f'{k}: {v}' for k, v in size_kw.items()) + '}'
    cfg = load_config(None, [f'detector={args.detector}', f'model.kwargs={kwargs}'], defaults=SEARCH_DEFAULTS)
    space, supernet, model, _ = build_search(cfg, num_classes=6)
    model.train()
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=gen) for _ in range(args.batch)]
    targets = [{'boxes': torch.tensor([[8.0, 8.0, args.size / 2, args.size / 2]]), 'labels': torch.tensor([1])}
               for _ in range(args.batch)]
    weights = [q for q in model.parameters() if all(q is not a for a in supernet.arch_parameters())]
    ratios, rows, derived_times = [], [], []
    for _ in range(args.paths):
        path = supernet.sample_path(gen, uniform=True)
        arch = space.derive(path)
        derived = DETECTORS[args.detector](backbone=arch, num_classes=6, **size_kw).train()
        times: dict[str, list[float]] = {'weight': [], 'derived': []}
        for r in range(args.repeats + 1):  # interleaved; the first round warms up
            supernet.set_path(path)
            w = _timed_step(model, weights, images, targets)
            d = _timed_step(derived, list(derived.parameters()), images, targets)
            if r:
                times['weight'].append(w)
                times['derived'].append(d)
        w, d = statistics.median(times['weight']), statistics.median(times['derived'])
        ratios.append(w / d)
        derived_times.append(d)
        rows.append(f'  {arch.to_fna_string()[:90]}...\n    weight step {w * 1e3:7.0f} ms | derived net step '
                    f'{d * 1e3:7.0f} ms | ratio {w / d:.2f}')
    arch_times = {}
    for kind in ('darts', 'gumbel'):
        ts = []
        for r in range(max(2, args.repeats // 2) + 1):
            supernet.set_relaxed(gumbel=kind == 'gumbel', generator=gen)
            t = _timed_step(model, supernet.arch_parameters(), images, targets)
            if r:
                ts.append(t)
        arch_times[kind] = statistics.median(ts)
    med_derived = statistics.median(derived_times)
    print(f'{args.detector} {args.size}x{args.size}, batch {args.batch}, {args.threads} threads, '
          f'torch {torch.__version__}')
    print('\n'.join(rows))
    print(f'weight step / derived net training step: median ratio {statistics.median(ratios):.2f} '
          f'(max {max(ratios):.2f}; target <= 1.3)')
    for kind, t in arch_times.items():
        print(f'architecture step ({kind}): {t * 1e3:.0f} ms = {t / med_derived:.1f}x a derived net step')


if __name__ == '__main__':
    main()

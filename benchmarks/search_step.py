"""Time of a search weight step relative to a training step of the sampled network built on its own, and of
architecture steps (DARTS relaxation and Gumbel), on the same batch; runs are interleaved, medians printed.

    python benchmarks/search_step.py [--detector retinanet] [--size 128] [--batch 8] [--repeats 5] [--paths 3]
    python benchmarks/search_step.py --config configs/fna_retinanet_search.yaml --device cuda   # FNA's settings

Target: a weight step at most 1.3x the derived network's training step (forward, backward, optimizer step).
`measure_steps` is the measurement itself (benchmarks/gpu_check.py times FNA's RetinaNet search steps with it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

from fna_zoo.detection import DETECTORS  # noqa: E402
from fna_zoo.engine.config import SEARCH_DEFAULTS, load_config, model_kwargs  # noqa: E402
from fna_zoo.nas.searcher import build_search  # noqa: E402
from fna_zoo.runtime.timing import cuda_sync  # noqa: E402


def _timed_step(model: torch.nn.Module, params: list, images: list, targets: list,
                sync: Callable[[], Any] | None = None) -> float:
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    if sync:
        sync()
    tic = time.perf_counter()
    loss = sum(model(images, targets).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sync:
        sync()
    return time.perf_counter() - tic


def small_config(detector: str, size: int, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The search defaults with a small detector at `size` (this script's default setting)."""
    size_kw = ({'min_size': size, 'max_size': size, 'head_width': 64} if detector == 'retinanet'
               else {'image_size': size})
    kwargs = '{' + ', '.join(f'{k}: {v}' for k, v in size_kw.items()) + '}'
    return load_config(None, [f'detector={detector}', f'model.kwargs={kwargs}', *overrides], defaults=SEARCH_DEFAULTS)


def measure_steps(cfg: dict[str, Any], size: tuple[int, int], batch: int, num_classes: int = 6, repeats: int = 5,
                  paths: int = 3, device: str = 'cpu', kinds: Sequence[str] = ('darts', 'gumbel'), derived: bool = True,
                  seed: int = 0, arch_repeats: int | None = None) -> dict[str, Any]:
    """Median times (ms) of search weight steps, of the derived network's training steps (the same paths, built on
    their own) and of architecture steps, on one fixed batch; weight and derived steps interleaved.

    Args:
        cfg: A search config (`SEARCH_DEFAULTS` layout; its detector, kwargs and space).
        size: (H, W) of the images (the detector's transform resizes them as in training).
        batch: Images per step (per GPU).
        num_classes: Classes of the detector.
        repeats: Timed steps per path and kind (after one warm-up).
        paths: Sampled paths (uniform).
        device: 'cpu' or 'cuda' (timed with a CUDA synchronisation around each step).
        kinds: Architecture step relaxations to time ('darts': FNA's, every op; 'gumbel').
        derived: Also time the derived networks (the ratio target).
        seed: Seed of the model, the images and the paths.
        arch_repeats: Timed architecture steps per kind (default max(2, repeats // 2), after one warm-up).

    Returns:
        `weight_ms`, `derived_ms` and `ratio` per path, `arch_ms` by kind, `archs` (FNA strings), the medians
        `weight_median_ms` / `arch_median_ms` / `derived_median_ms`, and the setting.
    """
    torch.manual_seed(seed)
    sync = cuda_sync(device)
    space, supernet, model, _ = build_search(cfg, num_classes=num_classes)
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    images = [torch.rand(3, h, w, generator=gen).to(device) for _ in range(batch)]
    targets = [{'boxes': torch.tensor([[8.0, 8.0, w / 2, h / 2]], device=device),
                'labels': torch.tensor([1], device=device)} for _ in range(batch)]
    weights = [q for q in model.parameters() if all(q is not a for a in supernet.arch_parameters())]
    kwargs = model_kwargs(cfg, DETECTORS[cfg['detector']])
    out: dict[str, Any] = {'weight_ms': [], 'derived_ms': [], 'ratio': [], 'archs': [], 'arch_ms': {},
                           'size': [h, w], 'batch': batch, 'num_classes': num_classes, 'device': str(device),
                           'repeats': repeats, 'paths': paths, 'detector': cfg['detector']}
    for _ in range(paths):
        path = supernet.sample_path(gen, uniform=True)
        arch = space.derive(path)
        net = (DETECTORS[cfg['detector']](backbone=arch, num_classes=num_classes, **kwargs).to(device).train()
               if derived else None)
        times: dict[str, list[float]] = {'weight': [], 'derived': []}
        for r in range(repeats + 1):  # interleaved; the first round warms up
            supernet.set_path(path)
            t_w = _timed_step(model, weights, images, targets, sync)
            t_d = _timed_step(net, list(net.parameters()), images, targets, sync) if net is not None else float('nan')
            if r:
                times['weight'].append(t_w)
                times['derived'].append(t_d)
        wm, dm = 1e3 * statistics.median(times['weight']), 1e3 * statistics.median(times['derived'])
        out['weight_ms'].append(wm)
        out['derived_ms'].append(dm)
        out['ratio'].append(wm / dm if derived else None)
        out['archs'].append(arch.to_fna_string())
        del net
    for kind in kinds:
        ts = []
        for r in range((arch_repeats or max(2, repeats // 2)) + 1):
            supernet.set_relaxed(gumbel=kind == 'gumbel', generator=gen)
            t = _timed_step(model, supernet.arch_parameters(), images, targets, sync)
            if r:
                ts.append(t)
        out['arch_ms'][kind] = 1e3 * statistics.median(ts)
    out['weight_median_ms'] = statistics.median(out['weight_ms'])
    out['derived_median_ms'] = statistics.median(out['derived_ms']) if derived else None
    out['arch_median_ms'] = out['arch_ms'].get(kinds[0]) if kinds else None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--detector', default='retinanet', choices=sorted(DETECTORS))
    p.add_argument('--config', help="search config (its detector and settings; default: the search defaults with a "
                   'small detector at --size)')
    p.add_argument('--size', type=int, help='square input size (default 128; with --config: its objective '
                   'input_size)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--classes', type=int, default=6, help='object classes (COCO: 80)')
    p.add_argument('--repeats', type=int, default=5, help='timed steps per path and kind (after one warm-up)')
    p.add_argument('--paths', type=int, default=3, help='sampled paths')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--device', default='cpu')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.config:
        cfg = load_config(args.config, [], defaults=SEARCH_DEFAULTS)
        size = tuple(cfg['search']['objective']['input_size']) if args.size is None else (args.size, args.size)
    else:
        side = 128 if args.size is None else args.size
        cfg, size = small_config(args.detector, side), (side, side)
    res = measure_steps(cfg, size, args.batch, args.classes, args.repeats, args.paths, args.device)
    print(f"{res['detector']} {size[0]}x{size[1]}, batch {args.batch}, {args.device}, {args.threads} threads, "
          f'torch {torch.__version__}')
    for arch, w, d, r in zip(res['archs'], res['weight_ms'], res['derived_ms'], res['ratio']):
        print(f'  {arch[:90]}...\n    weight step {w:7.0f} ms | derived net step {d:7.0f} ms | ratio {r:.2f}')
    print(f"weight step / derived net training step: median ratio {statistics.median(res['ratio']):.2f} "
          f"(max {max(res['ratio']):.2f}; target <= 1.3)")
    for kind, t in res['arch_ms'].items():
        print(f"architecture step ({kind}): {t:.0f} ms = {t / res['derived_median_ms']:.1f}x a derived net step")


if __name__ == '__main__':
    main()

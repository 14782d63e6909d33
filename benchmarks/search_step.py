"""Time of a search weight step relative to a training step of the sampled network built on its own, and of
architecture steps (DARTS relaxation and Gumbel), on the same batch; runs are interleaved, medians printed.

    python benchmarks/search_step.py [--detector retinanet] [--size 128] [--batch 8] [--repeats 5] [--paths 3]
    python benchmarks/search_step.py --config configs/fna_retinanet_search.yaml --device cuda   # FNA's settings
    python benchmarks/search_step.py --compare [--config ...] [--rounds 5]     # search steps by precision setting
    python benchmarks/search_step.py --retrain configs/trees_retinanet.yaml    # retrain steps by precision setting

Target: a weight step at most 1.3x the derived network's training step (forward, backward, optimizer step).
`measure_steps` is the measurement itself (benchmarks/gpu_check.py times FNA's RetinaNet search steps with it).

`--compare` and `--retrain` time every precision setting (`train.amp` off / bf16 / fp16 where the device runs it,
each with `train.channels_last` off and on; `fna_zoo.engine.precision`) on one fixed batch, one step of each
setting in turn per round (interleaved, so a slower or busier machine moves every setting alike), and print the
median step time, steps per second and the speed-up over fp32 (issue 31's targets: a bf16 retrain step >= 1.4x
fp32 on the CPU; AMP weight and architecture steps >= 1.8x fp32 on a GPU at FNA's RetinaNet settings).
`compare_search_steps` and `compare_train_steps` are the measurements (benchmarks/gpu_check.py uses the first).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

from fna_zoo.detection import DETECTORS  # noqa: E402
from fna_zoo.detection.factory import build_model, model_kwargs  # noqa: E402
from fna_zoo.engine.config import load_config  # noqa: E402
from fna_zoo.engine.precision import apply_memory_format, forward_losses, grad_scaler  # noqa: E402
from fna_zoo.engine.run import optimizer_step  # noqa: E402
from fna_zoo.nas.config import SEARCH_DEFAULTS  # noqa: E402
from fna_zoo.nas.searcher import build_search  # noqa: E402
from fna_zoo.nas.supernet import SuperNet  # noqa: E402
from fna_zoo.runtime.timing import cuda_sync  # noqa: E402

Setting = tuple[str, bool]  # (train.amp, train.channels_last)


def _timed_step(model: torch.nn.Module, params: list, images: list, targets: list,
                sync: Callable[[], Any] | None = None, amp: str = 'off',
                scaler: torch.amp.GradScaler | None = None, opt: torch.optim.Optimizer | None = None) -> float:
    """Seconds of one training step (forward under `amp`'s autocast, backward, optimizer step), as the runs take it.

    Args:
        model: The detector in training mode.
        params: The parameters to step (a fresh SGD over them unless `opt` is given).
        images: The batch's images, on the device.
        targets: Their targets.
        sync: The device synchronisation around the step (CUDA), or None.
        amp: `train.amp`.
        scaler: fp16's gradient scaler, or None.
        opt: The optimizer to step (kept across steps: its state is allocated once), or None.
    """
    opt = opt or torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    if sync:
        sync()
    tic = time.perf_counter()
    loss = sum(forward_losses(model, images, targets, amp).values())
    optimizer_step(opt, loss, params, None, scaler=scaler)
    if sync:
        sync()
    return time.perf_counter() - tic


def _fixed_batch(size: tuple[int, int], batch: int, device: str, gen: torch.Generator,
                 num_classes: int) -> tuple[list, list]:
    """Random images of `size` with one box each (step time does not depend on the pixels); its label is 1, or 0
    for a one-class detector."""
    h, w = size
    images = [torch.rand(3, h, w, generator=gen).to(device) for _ in range(batch)]
    targets = [{'boxes': torch.tensor([[8.0, 8.0, w / 2, h / 2]], device=device),
                'labels': torch.tensor([min(1, num_classes - 1)], device=device)} for _ in range(batch)]
    return images, targets


def precision_settings(device: str) -> list[Setting]:
    """Every (amp, channels_last) setting the device runs, fp32 first: bf16 where the device has it, fp16 on CUDA.

    Args:
        device: 'cpu' or 'cuda'.
    """
    cuda = torch.device(device).type == 'cuda'
    amps = ['off'] + (['bf16'] if not cuda or torch.cuda.is_bf16_supported() else []) + (['fp16'] if cuda else [])
    return [(amp, cl) for cl in (False, True) for amp in amps]


def setting_label(amp: str, channels_last: bool) -> str:
    """'fp32', 'bf16', 'fp16 + channels_last', ...

    Args:
        amp: `train.amp`.
        channels_last: `train.channels_last`.
    """
    return ('fp32' if amp == 'off' else amp) + (' + channels_last' if channels_last else '')


def _interleaved(settings: Sequence[Setting], rounds: int,
                 steps: dict[Setting, dict[str, Callable[[], float]]]) -> list[dict[str, Any]]:
    """Time every setting's steps in turn, `rounds` times after one warm-up round; the medians against fp32's.

    Args:
        settings: The settings, the reference (fp32) first.
        rounds: Timed rounds.
        steps: Per setting, its step kinds ('weight', 'arch', 'train') -> one timed step (seconds).

    Returns:
        One row per setting: `amp`, `channels_last`, `label`, and per kind `<kind>_ms` (median), `<kind>_steps_per_s`
        and `<kind>_speedup` (fp32's median over this one's).
    """
    times: dict[Setting, dict[str, list[float]]] = {s: {k: [] for k in steps[s]} for s in settings}
    for r in range(rounds + 1):  # the first round warms up (allocations, oneDNN / cuDNN kernel choice)
        for s in settings:
            for kind, step in steps[s].items():
                t = step()
                if r:
                    times[s][kind].append(t)
    ref = {k: statistics.median(ts) for k, ts in times[settings[0]].items()}
    rows = []
    for s in settings:
        row: dict[str, Any] = {'amp': s[0], 'channels_last': s[1], 'label': setting_label(*s)}
        for kind, ts in times[s].items():
            med = statistics.median(ts)
            row.update({f'{kind}_ms': 1e3 * med, f'{kind}_steps_per_s': 1.0 / med, f'{kind}_speedup': ref[kind] / med})
        rows.append(row)
    return rows


def compare_search_steps(cfg: dict[str, Any], size: tuple[int, int], batch: int, num_classes: int = 6,
                         rounds: int = 5, device: str = 'cpu', settings: Sequence[Setting] | None = None,
                         kind: str = 'darts', seed: int = 0) -> dict[str, Any]:
    """Search weight steps (one sampled path) and architecture steps (`kind`) under every precision setting, on one
    fixed batch, interleaved; each setting runs its own copy of the same super network.

    Args:
        cfg: A search config (`SEARCH_DEFAULTS` layout).
        size: (H, W) of the images.
        batch: Images per step (per GPU).
        num_classes: Classes of the detector.
        rounds: Timed steps per setting and kind (after one warm-up round).
        device: 'cpu' or 'cuda'.
        settings: (amp, channels_last) pairs, fp32 first (default: `precision_settings(device)`).
        kind: Architecture step relaxation ('darts': every op, FNA's; 'gumbel'; 'pairs').
        seed: Seed of the model, the images and the path.

    Returns:
        `rows` (`_interleaved`'s, kinds 'weight' and 'arch') and the setting.
    """
    settings = list(settings or precision_settings(device))
    torch.manual_seed(seed)
    sync = cuda_sync(device)
    _, _, model, _ = build_search(cfg, num_classes=num_classes)
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    images, targets = _fixed_batch(size, batch, device, gen, num_classes)
    path = next(m for m in model.modules() if isinstance(m, SuperNet)).sample_path(gen, uniform=True)
    steps: dict[Setting, dict[str, Callable[[], float]]] = {}
    for amp, cl in settings:
        m = apply_memory_format(copy.deepcopy(model), cl)
        net = next(x for x in m.modules() if isinstance(x, SuperNet))
        alphas = net.arch_parameters()
        weights = [q for q in m.parameters() if all(q is not a for a in alphas)]
        w_scaler, a_scaler = grad_scaler(amp, torch.device(device)), grad_scaler(amp, torch.device(device))

        def weight_step(m=m, net=net, weights=weights, amp=amp, scaler=w_scaler) -> float:
            net.set_path(path)
            return _timed_step(m, weights, images, targets, sync, amp, scaler)

        def arch_step(m=m, net=net, alphas=alphas, amp=amp, scaler=a_scaler) -> float:
            net.set_relaxed(gumbel=kind == 'gumbel', pairs=kind == 'pairs', generator=gen)
            return _timed_step(m, alphas, images, targets, sync, amp, scaler)

        steps[(amp, cl)] = {'weight': weight_step, 'arch': arch_step}
    return {'rows': _interleaved(settings, rounds, steps), 'size': list(size), 'batch': batch, 'rounds': rounds,
            'num_classes': num_classes, 'device': str(device), 'detector': cfg['detector'], 'arch_kind': kind}


def compare_train_steps(cfg: dict[str, Any], size: tuple[int, int], batch: int, num_classes: int = 1,
                        rounds: int = 5, device: str = 'cpu', settings: Sequence[Setting] | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """Retrain steps (the config's detector, backbone and optimizer) under every precision setting, on one fixed
    batch, interleaved; each setting trains its own copy of the same random-init model with its own optimizer.

    Args:
        cfg: A retrain config (`DEFAULTS` layout; its seed weights are not read: step time does not depend on them).
        size: (H, W) of the training images (the recipe's window size).
        batch: Images per step.
        num_classes: Classes of the detector.
        rounds: Timed steps per setting (after one warm-up round).
        device: 'cpu' or 'cuda'.
        settings: (amp, channels_last) pairs, fp32 first (default: `precision_settings(device)`).
        seed: Seed of the model and the images.

    Returns:
        `rows` (`_interleaved`'s, kind 'train') and the setting.
    """
    from fna_zoo.engine.train import build_optimizer

    settings = list(settings or precision_settings(device))
    torch.manual_seed(seed)
    sync = cuda_sync(device)
    model = build_model(cfg, num_classes, with_seed=False).to(device).train()
    images, targets = _fixed_batch(size, batch, device, torch.Generator().manual_seed(seed), num_classes)
    steps: dict[Setting, dict[str, Callable[[], float]]] = {}
    for amp, cl in settings:
        m = apply_memory_format(copy.deepcopy(model), cl)
        params = list(m.parameters())
        opt, scaler = build_optimizer(params, cfg['train']), grad_scaler(amp, torch.device(device))
        steps[(amp, cl)] = {'train': lambda m=m, params=params, amp=amp, scaler=scaler, opt=opt:
                            _timed_step(m, params, images, targets, sync, amp, scaler, opt)}
    return {'rows': _interleaved(settings, rounds, steps), 'size': list(size), 'batch': batch, 'rounds': rounds,
            'num_classes': num_classes, 'device': str(device), 'detector': cfg['detector'],
            'backbone': cfg['model']['backbone']}


def settings_table(rows: Sequence[dict[str, Any]], kinds: Sequence[str]) -> str:
    """The printed table: per setting and step kind, median ms, steps per second and the speed-up over fp32.

    Args:
        rows: `_interleaved`'s rows.
        kinds: Step kinds to show ('weight', 'arch', 'train').
    """
    names = {'weight': 'weight step', 'arch': 'arch step', 'train': 'retrain step'}
    head = f"{'setting':<22}" + ''.join(f" | {names[k] + ' ms':>16} {'steps/s':>8} {'vs fp32':>7}" for k in kinds)
    lines = [head, '-' * len(head)]
    for r in rows:
        lines.append(f"{r['label']:<22}" + ''.join(
            f" | {r[f'{k}_ms']:16.1f} {r[f'{k}_steps_per_s']:8.2f} {r[f'{k}_speedup']:6.2f}x" for k in kinds))
    return '\n'.join(lines)


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
    images, targets = _fixed_batch(size, batch, device, gen, num_classes)
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
    p.add_argument('--batch', type=int, help='images per step (default 8; --retrain: the config\'s batch size)')
    p.add_argument('--classes', type=int, help="object classes (default 6; --retrain: the config's model.num_classes, "
                   'else 1, the tree set; COCO: 80)')
    p.add_argument('--repeats', type=int, default=5, help='timed steps per path and kind (after one warm-up)')
    p.add_argument('--paths', type=int, default=3, help='sampled paths')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--device', default='cpu')
    p.add_argument('--compare', action='store_true', help='search weight and architecture steps under every '
                   'precision setting the device runs, interleaved (train.amp x train.channels_last)')
    p.add_argument('--retrain', metavar='CONFIG', help='retrain steps of this retrain config under every precision '
                   'setting, interleaved (e.g. configs/trees_retinanet.yaml)')
    p.add_argument('--rounds', type=int, default=5, help='--compare / --retrain: timed steps per setting (after one '
                   'warm-up round)')
    args = p.parse_args()
    for name in ('repeats', 'paths', 'rounds', 'batch', 'size', 'threads', 'classes'):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f'--{name} is {value}; expected a positive integer')
    torch.set_num_threads(args.threads)
    head = f'{args.device}, {args.threads} threads, torch {torch.__version__}'
    try:
        cfg = (load_config(args.retrain) if args.retrain else
               load_config(args.config, [], defaults=SEARCH_DEFAULTS) if args.config else None)
    except (ValueError, OSError) as e:  # the config's own one-line message
        p.error(str(e))
    if args.retrain:
        crop = cfg['data']['train_crop']['size']
        side = args.size or crop or cfg['model']['kwargs'].get('min_size') or cfg['model']['kwargs'].get('image_size')
        if not side:
            p.error(f'--retrain {args.retrain}: the config sets no window size (data.train_crop.size) or input size; '
                    'expected --size')
        batch, classes = args.batch or int(cfg['train']['batch_size']), args.classes or cfg['model']['num_classes'] or 1
        res = compare_train_steps(cfg, (side, side), batch, classes, args.rounds, args.device)
        print(f"retrain steps of {args.retrain}: {cfg['detector']} on {cfg['model']['backbone']}, "
              f'{side}x{side} images, batch {batch}, {classes} classes, {head}; {args.rounds} timed round(s), '
              'settings interleaved, median step')
        print(settings_table(res['rows'], ['train']))
        return
    args.classes = args.classes or 6
    if cfg is not None:
        size = tuple(cfg['search']['objective']['input_size']) if args.size is None else (args.size, args.size)
    else:
        side = 128 if args.size is None else args.size
        cfg, size = small_config(args.detector, side), (side, side)
    if args.compare:
        batch = args.batch or 8
        res = compare_search_steps(cfg, size, batch, args.classes, args.rounds, args.device,
                                   kind=cfg['search']['relaxation'])
        print(f"search steps: {res['detector']} {size[0]}x{size[1]}, batch {batch}, {args.classes} classes, {head}; "
              f"architecture step {res['arch_kind']}; {args.rounds} timed round(s), settings interleaved, median step")
        print(settings_table(res['rows'], ['weight', 'arch']))
        return
    args.batch = args.batch or 8
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

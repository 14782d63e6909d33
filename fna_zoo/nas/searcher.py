"""Architecture adaptation: alternating weight and architecture steps on a detector around the super network.

The procedure of FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525; method.md section 3):
the training images are split into a weight part and an architecture part; weight steps train one sampled
path (uniform before `arch_update_epoch`, by the probabilities after); architecture steps relax every
candidate (DARTS, FNA's default) or run a Gumbel-sampled path, with loss `L_det + lambda * log10(E[cost])`;
`arch_steps` architecture steps precede every `weight_steps` weight steps. Widths are searched as in Jung et
al. (ICPR 2022 - https://arxiv.org/abs/2206.08509). The derived architecture is the argmax of every slot
and stage; retraining remaps it from the seed again (FNA), it never inherits super network weights.

NOTE: FNA's code feeds architecture steps from the part it names the weight part and vice versa (its
issue #17); here weight steps use the weight part with the training augmentation and architecture steps
use the architecture part without augmentation, as the names say.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from pathlib import Path as FsPath
from typing import Any, Iterator

import timm
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from ..complexity import count_arch
from ..data import CocoDetection, RandomCrops, collate
from ..detection import DETECTORS
from ..detection.backbones import resolve_seed
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..engine.config import model_kwargs
from ..engine.distributed import (DistInfo, all_gather_objects, average_gradients, barrier, broadcast_state,
                                  init_distributed)
from ..engine.evaluate import evaluate
from ..engine.train import SkipSampler, build_datasets, build_optimizer, data_root, lr_factor, set_lr, train_dataset
from ..fileio import atomic_write_text
from .cost import CostObjective, build_objective
from .latency import objective_latency_table, predicted_latency_ms
from .space import Path, SearchSpace
from .supernet import SuperNet

__all__ = ['split_indices', 'check_search_config', 'build_search', 'recalibrate_bn', 'search']

_logger = logging.getLogger(__name__)

_FIELDS = ['step', 'epoch', 'phase', 'lr', 'loss', 'detection', 'cost', 'cost_loss', 'op_entropy', 'width_entropy',
           'skip_fraction', 'time']


def split_indices(train_ds: CocoDetection | RandomCrops, weight_ratio: float,
                  seed: int) -> tuple[list[int], list[int]]:
    """(weight-step items, architecture-step items) of the training set, split by image as FNA splits it.

    For random windows (`RandomCrops`) every window of an image goes to the image's side. A set of one image
    (the tree set) cannot be split so: its windows are split instead, and the two sides see windows of the
    same image.

    Args:
        train_ds: The training dataset.
        weight_ratio: Share of the images (or windows) for weight steps.
        seed: Seed of the shuffle.
    """
    per = train_ds.crops_per_image if isinstance(train_ds, RandomCrops) else 1
    units = len(train_ds) // per
    if units < 2 and per > 1:
        _logger.warning('one training image: weight and architecture steps draw windows of the same image')
        units, per = len(train_ds), 1
    order = list(range(units))
    random.Random(seed).shuffle(order)
    n_weight = round(units * weight_ratio)
    if not 0 < n_weight < units:
        raise ValueError(f'{units} training images (or windows of one image) cannot be split by '
                         f'search.weight_ratio {weight_ratio}; expected at least one for weight steps and one for '
                         'architecture steps')

    def items(part: list[int]) -> list[int]:
        return [u * per + k for u in part for k in range(per)]

    return items(order[:n_weight]), items(order[n_weight:])


def check_search_config(cfg: dict[str, Any]) -> tuple[SearchSpace, CostObjective, dict[str, Any]]:
    """(space, cost objective, detector kwargs) of a search config, or a clear error for a bad value.

    Args:
        cfg: The search config (`fna_zoo.engine.config.SEARCH_DEFAULTS` layout).
    """
    s = cfg['search']
    if cfg['model']['backbone'] is not None:
        raise ValueError(f"config model.backbone is {cfg['model']['backbone']!r}; a search builds its backbone from "
                         'search.space.seed, expected null')
    for key, allowed in (('relaxation', ('darts', 'gumbel')), ('remap_width', ('leading', 'bn_gamma'))):
        if s[key] not in allowed:
            raise ValueError(f'config search.{key} is {s[key]!r}; expected one of {", ".join(allowed)}')
    if not 0 < s['weight_ratio'] < 1:
        raise ValueError(f"config search.weight_ratio is {s['weight_ratio']!r}; expected a fraction in (0, 1)")
    for key in ('arch_steps', 'weight_steps'):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ValueError(f'config search.{key} is {s[key]!r}; expected a positive integer')
    space = SearchSpace.from_config(s['space'], cfg['detector'])
    objective = build_objective(space, s['objective'])
    if s['objective']['type'] != 'latency':
        objective_latency_table(space, s['objective'])  # a table given for the summary must fit the space too
    return space, objective, model_kwargs(cfg, DETECTORS[cfg['detector']])


def build_search(cfg: dict[str, Any], num_classes: int) -> tuple[SearchSpace, SuperNet, nn.Module, CostObjective]:
    """(space, super network, detector around it, cost objective) of a search config; checks the config first.

    Args:
        cfg: The search config (`fna_zoo.engine.config.SEARCH_DEFAULTS` layout).
        num_classes: Object classes of the detector.
    """
    space, objective, kwargs = check_search_config(cfg)
    supernet = SuperNet(space, tuple(kwargs.pop('out_indices', (2, 3, 4))))
    detector = DETECTORS[cfg['detector']](backbone=supernet, num_classes=num_classes, **kwargs)
    return space, supernet, detector, objective


def _seed_state_dict(cfg: dict[str, Any], space: SearchSpace) -> dict[str, torch.Tensor]:
    """The seed's weights: timm's (hub), a file, or (null) a random-init seed model."""
    seed = resolve_seed(cfg['model']['seed_weights'], seed_model=space.seed_name)
    if isinstance(seed, str):
        return timm.create_model(space.seed_name, pretrained=True, pretrained_cfg_overlay=dict(file=seed)).state_dict()
    return seed if seed is not None else timm.create_model(space.seed_name).state_dict()


class _Stream:
    """Endless batches over a dataset: a new order each pass, resumable at any batch (`position`)."""

    def __init__(self, dataset: Any, batch_size: int, seed: int, workers: int, distributed: bool,
                 position: int = 0) -> None:
        self.dataset, self.batch_size, self.seed, self.workers = dataset, batch_size, seed, workers
        self.sampler = DistributedSampler(dataset, seed=seed) if distributed else None
        self.per_pass = math.ceil(len(self.sampler or dataset) / batch_size)
        self.position = position
        self._it: Iterator | None = None

    def _open(self) -> None:
        cycle, offset = divmod(self.position, self.per_pass)
        gen = torch.Generator().manual_seed(self.seed + 1000 * cycle)
        if self.sampler is not None:
            self.sampler.set_epoch(cycle)
        order = self.sampler or RandomSampler(self.dataset, generator=gen)
        self._it = iter(DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.workers,
                                   sampler=SkipSampler(order, offset * self.batch_size), collate_fn=collate,
                                   generator=gen))

    def __next__(self) -> tuple[list, list]:
        if self._it is None or self.position % self.per_pass == 0:
            self._open()
        batch = next(self._it)
        self.position += 1
        return batch


def recalibrate_bn(model: nn.Module, batches: Iterator[tuple[list, list]], num_batches: int,
                   device: torch.device) -> None:
    """Recompute every BN's running statistics (a cumulative average) on `num_batches` batches.

    The super network's running statistics mix every path it ran, so they are recomputed for the path
    in use before it is evaluated (FNA's issue #17; OFA's `set_running_statistics`).

    Args:
        model: A torchvision detector (run in eval mode, its BN layers in training mode).
        batches: Source of (images, targets) batches.
        num_batches: How many batches.
        device: Device of the model.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for _ in range(num_batches):
            images, _ = next(batches)
            model([im.to(device) for im in images])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * p.clamp_min(1e-12).log()).sum())


class _Monitor:
    """Probabilities, entropies, skip fraction and the argmax arch of a super network, for logs and outputs."""

    def __init__(self, space: SearchSpace, supernet: SuperNet, objective: CostObjective, input_size: list[int]) -> None:
        self.space, self.supernet, self.objective, self.input_size = space, supernet, objective, input_size

    def stats(self) -> dict[str, Any]:
        with torch.no_grad():
            ops, widths = self.supernet.probabilities()
            ops, widths = [p.detach().cpu() for p in ops], [p.detach().cpu() for p in widths]
            expected = float(self.objective.expected(ops, widths))
        slots = [(st, slot) for st in self.space.stages for slot in st.slots]
        skips = [p[names.index('skip')].item() for p, (_, names) in zip(ops, slots) if 'skip' in names]
        path = self.supernet.argmax_path()
        arch = self.space.derive(path)
        c = count_arch(arch, self.input_size)
        return {
            'ops': [p.tolist() for p in ops], 'widths': [p.tolist() for p in widths],
            'op_entropy': sum(map(_entropy, ops)) / len(ops), 'width_entropy': sum(map(_entropy, widths)) / len(widths),
            'skip_fraction': sum(skips) / len(skips) if skips else 0.0, 'expected_cost': expected,
            'arch': arch.to_fna_string(), 'madds': c.madds, 'params': c.params, 'path': path,
        }

    def named_probabilities(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Probabilities keyed by stage, slot, op name and width, for the summary."""
        slots = [(st, i, names) for st in self.space.stages for i, names in enumerate(st.slots)]
        return {
            'ops': [{'stage': st.index, 'slot': i, 'probs': dict(zip(names, map(_round, p)))}
                    for (st, i, names), p in zip(slots, stats['ops'])],
            'widths': [{'stage': st.index, 'probs': {str(w): _round(q) for w, q in zip(st.widths, p)}}
                       for st, p in zip(self.space.stages, stats['widths'])],
        }


def _round(x: float) -> float:
    return round(float(x), 4)


def _check_finite(loss: torch.Tensor, step: int, phase: str, last: FsPath) -> None:
    if not torch.isfinite(loss):
        kept = f'the last good checkpoint is {last}' if last.is_file() else 'no checkpoint was written yet'
        raise FloatingPointError(f'{phase} loss is {loss.item()} at step {step}; search stopped, {kept} '
                                 '(lower train.lr or search.arch_optimizer.lr, or check the data)')


def search(cfg: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Run an architecture search; returns its summary (also written to `<output>/summary.json`).

    Writes into `cfg['output']`: config.yaml, search.log, metrics.csv, last.pth (resumable), and at the end
    arch.yaml (the derived `Arch`), alphas.pt, summary.json, probs.json and probs.png.

    Args:
        cfg: The search config (`fna_zoo.engine.config.SEARCH_DEFAULTS` layout).
        resume: Continue from `<output>/last.pth` when it exists.
    """
    tic = time.perf_counter()
    dist_info = init_distributed(cfg['device'])
    s, t, out = cfg['search'], cfg['train'], FsPath(cfg['output'])
    last = out / 'last.pth'
    check_search_config(cfg)  # a bad config fails before anything is written
    torch.manual_seed(cfg['seed'] + dist_info.rank)
    random.seed(cfg['seed'] + dist_info.rank)

    root = data_root(cfg, dist_info)
    train_ds, val_ds = build_datasets(cfg, root)
    plain_ds = train_dataset(cfg, root, augment=False)
    weight_idx, arch_idx = split_indices(train_ds, s['weight_ratio'], cfg['seed'])
    weight_ds, arch_ds = Subset(train_ds, weight_idx), Subset(plain_ds, arch_idx)
    num_classes = cfg['model']['num_classes'] or train_ds.num_classes
    if num_classes != train_ds.num_classes:
        raise ValueError(f'config model.num_classes is {num_classes}, the training annotations have '
                         f'{train_ds.num_classes} categories; expected them to agree')

    state = load_checkpoint(last) if resume and last.is_file() else None
    space, supernet, model, objective = build_search(cfg, num_classes)
    if state is None:
        supernet.load_seed(_seed_state_dict(cfg, space), s['remap_width'])
    else:
        model.load_state_dict(state['model'])
    device = dist_info.device
    model.to(device)
    broadcast_state(model)  # new layers were initialised from per-rank seeds: every rank starts from rank 0's
    alphas = supernet.arch_parameters()
    weights = [p for p in model.parameters() if all(p is not a for a in alphas)]
    w_opt = build_optimizer(weights, t)
    a = s['arch_optimizer']
    a_opt = torch.optim.Adam(alphas, lr=a['lr'], betas=tuple(a['betas']), weight_decay=a['weight_decay'])
    gen = torch.Generator().manual_seed(cfg['seed'])  # paths and Gumbel noise: the same on every rank
    history: list[dict[str, Any]] = []
    step, arch_step = 0, 0
    if state is not None:
        w_opt.load_state_dict(state['optimizer'])
        a_opt.load_state_dict(state['arch_optimizer'])
        step, arch_step, history = state['step'], state['arch_step'], state['history']
        torch.set_rng_state(state['rng'])
        gen.set_state(state['generator'])
        _logger.info('resumed from %s at step %d', last, step)
    elif dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / 'config.yaml', yaml.safe_dump(cfg, sort_keys=False))
    log_handler, pkg_logger = None, logging.getLogger('fna_zoo')
    pkg_level = pkg_logger.level
    if dist_info.is_main:  # the run's own log: INFO records of the package, whatever the console shows
        out.mkdir(parents=True, exist_ok=True)
        log_handler = logging.FileHandler(out / 'search.log')
        log_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
        pkg_logger.addHandler(log_handler)
        pkg_logger.setLevel(logging.INFO)
        if state is None:
            _logger.info('search space: %s', space.describe())
    try:
        result = _loop(cfg, dist_info, space, supernet, model, objective, weight_ds, arch_ds, val_ds, w_opt, a_opt,
                       weights, alphas, gen, history, step, arch_step, last, state is not None)
    finally:
        if log_handler is not None:
            pkg_logger.removeHandler(log_handler)
            pkg_logger.setLevel(pkg_level)
            log_handler.close()
    result['wall_time_s'] = round(time.perf_counter() - tic, 1)
    if dist_info.is_main:
        atomic_write_text(out / 'summary.json', json.dumps(result, indent=2) + '\n')
    return result


def _loop(cfg: dict[str, Any], dist_info: DistInfo, space: SearchSpace, supernet: SuperNet, model: nn.Module,
          objective: CostObjective, weight_ds: Any, arch_ds: Any, val_ds: CocoDetection,
          w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer, weights: list[nn.Parameter],
          alphas: list[nn.Parameter], gen: torch.Generator, history: list[dict[str, Any]], step: int,
          arch_step: int, last: FsPath, resumed: bool) -> dict[str, Any]:
    s, t, out, device = cfg['search'], cfg['train'], FsPath(cfg['output']), dist_info.device
    workers, bs = cfg['data']['workers'], t['batch_size']
    w_stream = _Stream(weight_ds, bs, cfg['seed'], workers, dist_info.distributed, step)
    a_stream = _Stream(arch_ds, bs, cfg['seed'] + 1, workers, dist_info.distributed, arch_step)
    epoch_batches = w_stream.per_pass
    total = t['epochs'] * epoch_batches if t['max_iters'] is None else min(t['max_iters'], t['epochs'] * epoch_batches)
    monitor = _Monitor(space, supernet, objective, s['objective']['input_size'])
    metrics_csv = out / 'metrics.csv'
    if dist_info.is_main and (not resumed or not metrics_csv.exists()):
        metrics_csv.write_text(','.join(_FIELDS) + '\n')
    history[:] = [h for h in history if h['step'] <= step]

    def to_device(batch: tuple[list, list]) -> tuple[list, list]:
        images, targets = batch
        return ([im.to(device) for im in images],
                [{k: v.to(device) if torch.is_tensor(v) else v for k, v in tt.items()} for tt in targets])

    def log_row(phase: str, epoch: int, lr: float, loss: torch.Tensor, det: torch.Tensor, cost: float,
                cost_loss: float, tic: float) -> None:
        if not dist_info.is_main:
            return
        st = monitor.stats()
        with metrics_csv.open('a') as f:
            csv.writer(f).writerow([step, epoch, phase, f'{lr:.6g}', f'{loss.item():.5f}', f'{det.item():.5f}',
                                    f'{cost:.5g}', f'{cost_loss:.5f}', f"{st['op_entropy']:.4f}",
                                    f"{st['width_entropy']:.4f}", f"{st['skip_fraction']:.4f}",
                                    f'{time.perf_counter() - tic:.3f}'])

    def snapshot() -> None:
        st = monitor.stats()
        history.append({'step': step, 'ops': st['ops'], 'widths': st['widths'], 'arch': st['arch'],
                        'madds': st['madds']})
        _logger.info('step %d: argmax arch %s | %.3fB MAdds, %.3fM params | E[cost] %.4g %s | op entropy %.3f, '
                     'width entropy %.3f, skip fraction %.3f', step, st['arch'], st['madds'] / 1e9, st['params'] / 1e6,
                     st['expected_cost'], objective.unit, st['op_entropy'], st['width_entropy'], st['skip_fraction'])

    def checkpoint() -> None:
        if dist_info.is_main:
            save_checkpoint({'model': model.state_dict(), 'optimizer': w_opt.state_dict(),
                             'arch_optimizer': a_opt.state_dict(), 'step': step, 'arch_step': a_stream.position,
                             'rng': torch.get_rng_state(), 'generator': gen.get_state(), 'history': history,
                             'config': cfg, 'num_classes': val_ds.num_classes}, last)
        barrier()

    def arch_update(epoch: int) -> None:
        tic = time.perf_counter()
        supernet.set_relaxed(gumbel=s['relaxation'] == 'gumbel', generator=gen, tau=s['gumbel_tau'])
        for p in weights:
            p.requires_grad_(False)
        try:
            images, targets = to_device(next(a_stream))
            det = sum(model(images, targets).values())
            expected = objective.expected(*supernet.probabilities())
            cost_loss = objective.loss(expected).float()
            loss = det + cost_loss
            _check_finite(loss, step, 'architecture', last)
            a_opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(alphas)
            if s['arch_optimizer']['grad_clip']:
                nn.utils.clip_grad_norm_(alphas, s['arch_optimizer']['grad_clip'])
            a_opt.step()
        finally:
            for p in weights:
                p.requires_grad_(True)
        if a_stream.position % t['log_interval'] == 0:
            log_row('arch', epoch, s['arch_optimizer']['lr'], loss.detach(), det.detach(), float(expected.detach()),
                    float(cost_loss.detach()), tic)

    if not resumed:
        snapshot()
    bar = tqdm(total=total, initial=step, desc='search', disable=not dist_info.is_main)
    model.train()
    while step < total:
        epoch = step // epoch_batches
        searching = epoch >= s['arch_update_epoch']
        if searching and step % s['weight_steps'] == 0:
            for _ in range(s['arch_steps']):
                arch_update(epoch)
        tic = time.perf_counter()
        # FNA: uniform paths while the weights warm up, then paths drawn by the architecture probabilities
        supernet.set_path(supernet.sample_path(gen, uniform=not searching))
        lr = t['lr'] * lr_factor(step, epoch, t)
        set_lr(w_opt, lr)
        images, targets = to_device(next(w_stream))
        det = sum(model(images, targets).values())
        _check_finite(det, step, 'weight', last)
        w_opt.zero_grad(set_to_none=True)
        det.backward()
        average_gradients(weights)
        if t['grad_clip']:
            nn.utils.clip_grad_norm_(weights, t['grad_clip'])
        w_opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f'{det.item():.3f}', lr=f'{lr:.4f}', arch='on' if searching else 'warm-up')
        if step % t['log_interval'] == 0 or step == total:
            log_row('weight', epoch, lr, det, det, float('nan'), 0.0, tic)
        if dist_info.is_main and (step % s['arch_log_interval'] == 0 or step % epoch_batches == 0 or step == total):
            snapshot()
        if step % t['ckpt_interval'] == 0 or step % epoch_batches == 0 or step == total:
            checkpoint()
    bar.close()
    return _finish(cfg, dist_info, space, supernet, model, monitor, history, a_stream, val_ds, step)


def _finish(cfg: dict[str, Any], dist_info: DistInfo, space: SearchSpace, supernet: SuperNet, model: nn.Module,
            monitor: _Monitor, history: list[dict[str, Any]], a_stream: _Stream, val_ds: CocoDetection,
            step: int) -> dict[str, Any]:
    """Derive the arch, check every rank agrees, optionally evaluate it, and write the run's outputs."""
    s, out = cfg['search'], FsPath(cfg['output'])
    st = monitor.stats()
    path: Path = st['path']
    archs = all_gather_objects(st['arch'])
    if len(set(archs)) != 1:
        raise RuntimeError(f'processes derived different architectures: {archs}')
    arch = space.derive(path)
    latency = predicted_latency_ms(space, s['objective'], path, monitor.objective)
    result: dict[str, Any] = {
        'arch': st['arch'], 'arch_file': str(out / 'arch.yaml'), 'seed': space.seed_name, 'detector': cfg['detector'],
        'input_size': list(s['objective']['input_size']), 'madds': st['madds'], 'params': st['params'],
        'objective': {k: s['objective'][k] for k in ('type', 'lambda', 'target', 'table')},
        'expected_cost': st['expected_cost'], 'cost_unit': monitor.objective.unit,
        'predicted_latency_ms': None if latency is None else round(latency, 4),
        'op_entropy': st['op_entropy'], 'width_entropy': st['width_entropy'],
        'skip_fraction': st['skip_fraction'], 'probabilities': monitor.named_probabilities(st),
        'steps': step, 'arch_steps': a_stream.position, 'processes': dist_info.world_size,
    }
    if s['eval_derived']:
        # NOTE: evaluated with the super network's weights on the derived path after BN recalibration: a
        # ranking signal only; the derived net is retrained from the seed (search/retrain.py --arch).
        supernet.set_path(path)
        recalibrate_bn(model, a_stream, s['bn_calib_batches'], dist_info.device)
        stats = evaluate(model, val_ds, out / 'detections_derived_val.json', cfg['eval']['batch_size'], dist_info,
                         cfg['data']['workers'])
        result['supernet_eval'] = stats or None
    if dist_info.is_main:
        from .plot import plot_probabilities

        arch.save(out / 'arch.yaml')
        save_checkpoint({'op_alphas': [a.detach().cpu() for a in supernet.op_alphas],
                         'width_alphas': [a.detach().cpu() for a in supernet.width_alphas],
                         'op_names': [list(names) for st_ in space.stages for names in st_.slots],
                         'widths': [list(st_.widths) for st_ in space.stages], 'temperature': space.temperature},
                        out / 'alphas.pt')
        atomic_write_text(out / 'probs.json', json.dumps(history) + '\n')
        plot_probabilities(history, space, out / 'probs.png')
        _logger.info('derived arch %s: %.3fB MAdds, %.3fM params at %s', st['arch'], st['madds'] / 1e9,
                     st['params'] / 1e6, 'x'.join(map(str, s['objective']['input_size'])))
        if latency is not None:
            _logger.info('derived arch predicted latency: %.3f ms (latency table %s)', latency, s['objective']['table'])
    barrier()
    return result

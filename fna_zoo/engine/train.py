"""Retraining a detector (the FNA "parameter adaptation" phase): seed weights remapped into the derived
backbone, then detection training with warm-up + step LR, gradient clipping, resumable checkpoints,
a metrics CSV and COCO evaluation; single process or DDP under torchrun.

FNA: Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525 (retrain settings in method.md section 4).
"""
from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from ..arch import is_arch_spec, load_arch
from ..assets import resolve_asset
from ..data import CocoDetection, RandomCrops, coco_split_paths, collate, make_synthetic_coco, train_transforms
from ..detection import DETECTORS
from ..detection.backbones import check_backbone
from ..fileio import atomic_write_text
from .checkpoint import load_checkpoint, save_checkpoint
from .config import model_kwargs
from .distributed import DistInfo, barrier, init_distributed
from .evaluate import evaluate

__all__ = ['data_root', 'train_dataset', 'build_datasets', 'build_model', 'build_optimizer', 'lr_factor', 'set_lr',
           'SkipSampler', 'retrain']

_logger = logging.getLogger(__name__)


def data_root(cfg: dict[str, Any], dist_info: DistInfo | None = None) -> Path:
    """The COCO tree to use: `data.path`, or the built-in synthetic set (written by the main process)."""
    if cfg['data']['path'] is not None:
        return resolve_asset(cfg['data']['path'])
    syn = dict(cfg['data']['synthetic'])
    root = Path(syn.pop('root'))
    if dist_info is None or dist_info.is_main:
        make_synthetic_coco(root, **syn)
    barrier()
    return root


def train_dataset(cfg: dict[str, Any], root: Path, augment: bool = True) -> CocoDetection | RandomCrops:
    """The training split of the COCO tree at `root`: whole images, or random windows (`data.train_crop`).

    Args:
        cfg: The run config.
        root: The COCO tree.
        augment: Apply the detector's training augmentation (off for the search's architecture steps; random
            windows are still drawn, as the images may be far larger than the input).
    """
    transforms = train_transforms(cfg['detector']) if augment else None
    crop = cfg['data']['train_crop']
    paths = coco_split_paths(root, cfg['data']['train_split'])
    if crop['size'] is None:
        return CocoDetection(*paths, transforms=transforms, train=True)
    return RandomCrops(CocoDetection(*paths, train=True), crop['size'], crop['crops_per_image'], transforms,
                       crop['min_visible'])


def build_datasets(cfg: dict[str, Any], root: Path, train: bool = True) -> tuple[CocoDetection | RandomCrops | None,
                                                                                  CocoDetection]:
    """(train dataset or None, val dataset) of the COCO tree at `root`."""
    val = CocoDetection(*coco_split_paths(root, cfg['data']['val_split']))
    return (train_dataset(cfg, root) if train else None), val


def build_model(cfg: dict[str, Any], num_classes: int, with_seed: bool = True) -> nn.Module:
    """The configured detector (seed weights remapped into its backbone when `with_seed`).

    Args:
        cfg: The run config.
        num_classes: Object classes.
        with_seed: Load `model.seed_weights` (off when a checkpoint will overwrite the weights anyway).
    """
    builder = DETECTORS[cfg['detector']]
    kwargs = model_kwargs(cfg, builder)
    if cfg['model']['backbone'] is not None:
        kwargs['backbone'] = cfg['model']['backbone']
    seed = cfg['model']['seed_weights'] if with_seed else None
    return builder(num_classes=num_classes, seed_weights=seed, **kwargs)


def lr_factor(it: int, epoch: int, cfg_train: dict[str, Any]) -> float:
    """LR multiplier: linear warm-up from `warmup_ratio` over `warmup_iters`, then x`lr_gamma` at each `lr_steps` epoch."""
    factor = cfg_train['lr_gamma'] ** sum(epoch >= s for s in cfg_train['lr_steps'])
    if it < cfg_train['warmup_iters']:
        r = cfg_train['warmup_ratio']
        factor *= r + (1 - r) * it / cfg_train['warmup_iters']
    return factor


def build_optimizer(params: Iterable[nn.Parameter], t: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of a config's `train` section ('sgd', 'adamw' or 'rmsprop').

    Args:
        params: The parameters to optimise (those without `requires_grad` are left out).
        t: The `train` section.
    """
    params = [p for p in params if p.requires_grad]
    if t['optimizer'] == 'sgd':
        return torch.optim.SGD(params, lr=t['lr'], momentum=t['momentum'], weight_decay=t['weight_decay'])
    if t['optimizer'] == 'adamw':
        return torch.optim.AdamW(params, lr=t['lr'], weight_decay=t['weight_decay'])
    return torch.optim.RMSprop(params, lr=t['lr'], eps=t['eps'], momentum=t['momentum'], weight_decay=t['weight_decay'])


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g['lr'] = lr


class SkipSampler(Sampler):
    """The indices of `sampler` after the first `skip`."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def retrain(cfg: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train the configured detector and evaluate it; returns the final metrics.

    Writes into `cfg['output']`: config.yaml (resolved), arch.yaml (the backbone arch, when FNA),
    last.pth (resumable, every `ckpt_interval` iterations and each epoch), final.pth, metrics.csv,
    detections_val.json and metrics.json.

    Args:
        cfg: The run config (see `fna_zoo.engine.config.DEFAULTS`).
        resume: Continue from `output/last.pth` when it exists.
    """
    dist_info = init_distributed(cfg['device'])
    out = Path(cfg['output'])
    t = cfg['train']
    torch.manual_seed(cfg['seed'] + dist_info.rank)
    random.seed(cfg['seed'] + dist_info.rank)

    if cfg['model']['backbone'] is not None:  # a bad backbone fails before any data is written
        check_backbone(cfg['model']['backbone'])
    root = data_root(cfg, dist_info)
    train_ds, val_ds = build_datasets(cfg, root)
    num_classes = cfg['model']['num_classes'] or train_ds.num_classes
    if num_classes != train_ds.num_classes:
        raise ValueError(f'config model.num_classes is {num_classes}, the training annotations have '
                         f'{train_ds.num_classes} categories; expected them to agree')
    last = out / 'last.pth'
    state = load_checkpoint(last) if resume and last.is_file() else None
    model = build_model(cfg, num_classes, with_seed=state is None).to(dist_info.device)
    if t['sync_bn'] and dist_info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = build_optimizer(model.parameters(), t)
    epoch, step, done_in_epoch = 0, 0, 0
    if state is not None:
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        epoch, step, done_in_epoch = state['epoch'], state['step'], state['done_in_epoch']
        torch.set_rng_state(state['rng'])
        _logger.info('resumed from %s at epoch %d, step %d', last, epoch, step)
    elif dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / 'config.yaml', yaml.safe_dump(cfg, sort_keys=False))
        backbone = cfg['model']['backbone']
        if backbone is not None and is_arch_spec(backbone):
            load_arch(backbone).save(out / 'arch.yaml')
    ddp = DistributedDataParallel(model) if dist_info.distributed else model

    sampler = DistributedSampler(train_ds, seed=cfg['seed']) if dist_info.distributed else None
    epoch_batches = math.ceil(len(sampler or train_ds) / t['batch_size'])  # this process's batches per epoch
    total = t['epochs'] * epoch_batches if t['max_iters'] is None else min(t['max_iters'], t['epochs'] * epoch_batches)
    fields = ['step', 'epoch', 'lr', 'loss', 'classification', 'bbox_regression', 'time']
    metrics_csv = out / 'metrics.csv'
    if dist_info.is_main and (state is None or not metrics_csv.exists()):  # a fresh run starts a fresh log
        metrics_csv.parent.mkdir(parents=True, exist_ok=True)
        metrics_csv.write_text(','.join(fields) + '\n')

    def checkpoint(epoch_: int, done: int) -> None:
        if dist_info.is_main:
            save_checkpoint({'model': model.state_dict(), 'optimizer': opt.state_dict(), 'epoch': epoch_, 'step': step,
                             'done_in_epoch': done, 'rng': torch.get_rng_state(), 'config': cfg,
                             'num_classes': num_classes}, last)
        barrier()

    bar = tqdm(total=total, initial=step, desc='retrain', disable=not dist_info.is_main)
    while step < total and epoch < t['epochs']:
        if sampler is not None:
            sampler.set_epoch(epoch)
        # NOTE: the epoch's order and worker seeds come from a per-epoch generator, and a resumed run skips
        # the done samples in the sampler (without loading them), so it continues exactly where it stopped.
        gen = torch.Generator().manual_seed(cfg['seed'] + epoch)
        order = sampler or RandomSampler(train_ds, generator=gen)
        loader = DataLoader(train_ds, batch_size=t['batch_size'], num_workers=cfg['data']['workers'],
                            sampler=SkipSampler(order, done_in_epoch * t['batch_size']), collate_fn=collate,
                            generator=gen)
        ddp.train()
        for images, targets in loader:
            tic = time.perf_counter()
            lr = t['lr'] * lr_factor(step, epoch, t)
            set_lr(opt, lr)
            images = [im.to(dist_info.device) for im in images]
            targets = [{k: v.to(dist_info.device) if torch.is_tensor(v) else v for k, v in tt.items()} for tt in targets]
            losses = ddp(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss is {loss.item()} at step {step}; lower train.lr or check the data')
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t['grad_clip']:
                nn.utils.clip_grad_norm_(model.parameters(), t['grad_clip'])
            opt.step()
            step += 1
            done_in_epoch += 1
            bar.update(1)
            loss_value = loss.item()
            bar.set_postfix(loss=f'{loss_value:.3f}', lr=f'{lr:.4f}')
            if dist_info.is_main and (step % t['log_interval'] == 0 or step == total):
                cls, reg = (float(losses[k].detach()) if k in losses else float('nan')
                            for k in ('classification', 'bbox_regression'))
                with metrics_csv.open('a') as f:
                    csv.writer(f).writerow([step, epoch, f'{lr:.6g}', f'{loss_value:.5f}', f'{cls:.5f}', f'{reg:.5f}',
                                            f'{time.perf_counter() - tic:.3f}'])
            # the epoch end and the run end write their own checkpoint below
            if step % t['ckpt_interval'] == 0 and step < total and done_in_epoch < epoch_batches:
                checkpoint(epoch, done_in_epoch)
            if step >= total:
                break
        else:
            epoch, done_in_epoch = epoch + 1, 0
        checkpoint(epoch, done_in_epoch)
    bar.close()

    if dist_info.is_main:
        save_checkpoint({'model': model.state_dict(), 'config': cfg, 'num_classes': num_classes, 'step': step},
                        out / 'final.pth')
    result: dict[str, Any] = {'step': step}
    if t['eval_at_end']:
        stats = evaluate(model, val_ds, out / 'detections_val.json', cfg['eval']['batch_size'], dist_info,
                         cfg['data']['workers'])
        result.update(stats)
    if dist_info.is_main:
        atomic_write_text(out / 'metrics.json', json.dumps(result, indent=2))
    return result

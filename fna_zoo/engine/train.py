"""Retraining a detector (the FNA "parameter adaptation" phase): seed weights remapped into the derived
backbone, then detection training with warm-up + step LR, gradient clipping, resumable checkpoints,
a metrics CSV and COCO evaluation; single process or DDP under torchrun. The run's bookkeeping (run folder,
checkpoints, metrics.csv, resuming) is `fna_zoo.engine.run.TrainingRun`, shared with the architecture search.

FNA: Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525 (retrain settings in method.md section 4).
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..arch import is_arch_spec, load_arch
from ..assets.store import resolve_asset
from ..checkpoint import stored_arch
from ..data import (CocoDetection, RandomCrops, coco_split_paths, make_synthetic_coco, synthetic_set_path,
                    train_transforms)
from ..detection import build_model, get_detector
from ..detection.backbones import check_backbone
from .distributed import DistInfo, barrier, init_distributed
from .evaluate import STAT_NAMES, evaluate, format_stats
from .precision import (apply_memory_format, check_precision, check_resume_precision, forward_losses, grad_scaler,
                        restore_scalers, scaler_states)
from .run import (SkipSampler, TrainingRun, batches_per_epoch, check_categories, check_num_classes, epoch_loader, optimizer_step,
                  seed_process, to_device, total_steps)

__all__ = ['data_root', 'train_dataset', 'build_datasets', 'build_optimizer', 'lr_factor', 'set_lr',
           'apply_lr', 'freeze_backbone_bn', 'train_mode', 'SkipSampler', 'retrain']

_logger = logging.getLogger(__name__)
_FIELDS = ['step', 'epoch', 'lr', 'loss', 'classification', 'bbox_regression', 'time']
_EVAL_FIELDS = ['step', 'epoch', 'AP', 'AP50', 'AP75']


def _eval_point(model: nn.Module, val_ds: CocoDetection, run: TrainingRun, curve: Any, cfg: dict[str, Any],
                step: int, epoch: int) -> None:
    """One point of the AP-vs-steps curve (eval.csv): COCO AP of the model as it is now on the validation set."""
    stats = evaluate(model, val_ds, run.out / 'detections_val.json', cfg['eval']['batch_size'], run.dist_info,
                     cfg['data']['workers'])
    if run.is_main:
        _logger.info('step %d: %s', step, format_stats(stats))
    _curve_row(curve, stats, step, epoch)


def _curve_row(curve: Any, stats: dict[str, float], step: int, epoch: int) -> None:
    """Append one AP-vs-steps row (AP, AP50, AP75; NaN for a metric the evaluation did not give)."""
    curve.write([step, epoch, *(f'{stats.get(k, float("nan")):.5f}' for k in STAT_NAMES[:3])])


def data_root(cfg: dict[str, Any], dist_info: DistInfo | None = None) -> Path:
    """The COCO tree to use: `data.path`, or the built-in synthetic set (written by the main process)."""
    if cfg['data']['path'] is not None:
        return resolve_asset(cfg['data']['path'])
    syn = dict(cfg['data']['synthetic'])
    root = Path(syn.pop('root'))
    if dist_info is None or dist_info.is_main:
        make_synthetic_coco(root, **syn)
    barrier()
    # NOTE: the set's own folder (<root>/<hash of the settings>), now written; other ranks find it the same way
    return synthetic_set_path(root, **syn)


def train_dataset(cfg: dict[str, Any], root: Path, augment: bool = True) -> CocoDetection | RandomCrops:
    """The training split of the COCO tree at `root`: whole images, or random windows (`data.train_crop`).

    Args:
        cfg: The run config.
        root: The COCO tree.
        augment: Apply the detector's training augmentation (off for the search's architecture steps; random
            windows are still drawn, as the images may be far larger than the input).
    """
    data = cfg['data']
    recipe = get_detector(cfg['detector']).train_recipe
    transforms = train_transforms(recipe, data['augment'], data['color_jitter']) if augment else None
    crop = cfg['data']['train_crop']
    paths = coco_split_paths(root, cfg['data']['train_split'])
    if crop['size'] is None:
        return CocoDetection(*paths, transforms=transforms, train=True)
    return RandomCrops(CocoDetection(*paths, train=True), crop['size'], crop['crops_per_image'], transforms,
                       crop['min_visible'], scale=tuple(crop['scale']))


def build_datasets(cfg: dict[str, Any], root: Path, train: bool = True) -> tuple[CocoDetection | RandomCrops | None,
                                                                                  CocoDetection]:
    """(train dataset or None, val dataset) of the COCO tree at `root`."""
    val = CocoDetection(*coco_split_paths(root, cfg['data']['val_split']))
    return (train_dataset(cfg, root) if train else None), val


def lr_factor(it: int, epoch: int, cfg_train: dict[str, Any], total: int | None = None) -> float:
    """LR multiplier: linear warm-up from `warmup_ratio` over `warmup_iters`, then x`lr_gamma` at each `lr_steps`
    epoch ('step') or a cosine from 1 to 0 over the run's `total` steps ('cosine').

    Args:
        it: Steps done.
        epoch: The current epoch.
        cfg_train: The config's `train` section.
        total: The run's steps (needed by 'cosine').
    """
    if cfg_train.get('lr_schedule', 'step') == 'cosine':
        if total is None:
            raise ValueError("train.lr_schedule 'cosine' needs the run's total steps")
        factor = 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
    else:
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


def apply_lr(opt: torch.optim.Optimizer, t: dict[str, Any], step: int, epoch: int, total: int | None = None) -> float:
    """Set the LR of `step` (in `epoch`) by the `train` section's schedule (`lr_factor`); returns it.

    Args:
        opt: The optimizer.
        t: The config's `train` section.
        step: Steps done.
        epoch: The current epoch.
        total: The run's steps (the cosine schedule's length).
    """
    lr = t['lr'] * lr_factor(step, epoch, t, total)
    set_lr(opt, lr)
    return lr


def _backbone_bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.backbone.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_backbone_bn(model: nn.Module) -> int:
    """Stop training the BatchNorm layers of a detector's backbone body (affine parameters and statistics stay
    the seed's); returns how many. Call `train_mode(model, True)` for each training phase after it.

    NOTE: torchvision's detection references freeze BN in pretrained backbones (FrozenBatchNorm2d), as batches
    of a few images give poor statistics. Done here with the layers kept as they are (eval mode, no gradients),
    so checkpoints keep the ordinary BatchNorm keys and load in any tool.

    Args:
        model: A torchvision detector built by `build_model` (its `backbone.body` is the timm/FNA network).
    """
    bns = _backbone_bns(model)
    for m in bns:
        for p in m.parameters():
            p.requires_grad_(False)
    return len(bns)


def train_mode(model: nn.Module, frozen_bn: bool) -> None:
    """`model.train()`, keeping the backbone's BatchNorm layers in eval mode when they are frozen.

    Args:
        model: The detector (or its DDP wrapper's module).
        frozen_bn: Whether `freeze_backbone_bn` was applied.
    """
    model.train()
    if frozen_bn:
        for m in _backbone_bns(model):
            m.eval()


def _config_arch(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The backbone arch the config names (`Arch.to_dict()`; None for a timm model or the detector's default)."""
    backbone = cfg['model']['backbone']
    if backbone is None or not is_arch_spec(backbone):
        return None
    return load_arch(backbone).to_dict()


def _run_arch(cfg: dict[str, Any], run: TrainingRun, fresh: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The backbone arch the run trains (`Arch.to_dict()`; None for a timm model or the detector's default).

    NOTE: the arch goes into every checkpoint (and arch.yaml), so later commands read it from the checkpoint
    and never resolve the config's path again; a resumed run keeps the arch it started with.

    Args:
        cfg: The run config.
        run: The run (its checkpoint, when resumed).
        fresh: The config's arch as already resolved (`_config_arch`) for a fresh run, if it was.
    """
    if run.state is not None:  # resumed: the arch it started with (older checkpoints: the arch.yaml snapshot)
        return stored_arch(run.out / 'last.pth', run.state)
    arch = fresh if fresh is not None else _config_arch(cfg)
    if arch is not None:
        run.write_text('arch.yaml', load_arch(arch).to_yaml())
    return arch


def _with_arch(cfg: dict[str, Any], arch: dict[str, Any] | None) -> dict[str, Any]:
    """The config with `model.backbone` set to `arch` (the config itself when None)."""
    # NOTE: the model is built from the resolved arch, not from the config's path, whose file may change meanwhile
    return cfg if arch is None else {**cfg, 'model': {**cfg['model'], 'backbone': arch}}


def _train_step(ddp: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[list, list],
                grad_clip: float | None, step: int, amp: str = 'off',
                scaler: torch.amp.GradScaler | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """One optimisation step on `batch` (on the device); returns (the loss terms, the total loss).

    Args:
        ddp: The model to run (its DDP wrapper when distributed).
        model: The model itself (its gradients are clipped).
        opt: The optimizer.
        batch: (images, targets).
        grad_clip: Max gradient norm (falsy: no clipping).
        step: Steps done, for the error message.
        amp: `train.amp` (the forward runs under its autocast).
        scaler: fp16's gradient scaler, or None.
    """
    losses = forward_losses(ddp, *batch, amp)  # fp32 terms, summed and checked in fp32
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f'loss is {loss.item()} at step {step}; lower train.lr or check the data')
    optimizer_step(opt, loss, list(model.parameters()), grad_clip, scaler=scaler)
    return losses, loss.item()


def _on_device(model: nn.Module, t: dict[str, Any], dist_info: DistInfo) -> nn.Module:
    """The model on its device, in its memory format (`train.channels_last`), with the backbone's BatchNorm frozen
    (`train.freeze_bn`) or synchronised across processes (`train.sync_bn`, distributed runs)."""
    model = apply_memory_format(model.to(dist_info.device), t['channels_last'])
    if t['freeze_bn']:
        _logger.info('froze %d BatchNorm layers of the backbone', freeze_backbone_bn(model))
    elif t['sync_bn'] and dist_info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


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
    t = cfg['train']
    check_precision(t['amp'], dist_info.device)
    seed_process(cfg['seed'], dist_info)
    if cfg['model']['backbone'] is not None:  # a bad backbone fails before any data is written
        check_backbone(cfg['model']['backbone'])
    root = data_root(cfg, dist_info)
    train_ds, val_ds = build_datasets(cfg, root)
    cat_ids = check_categories(train_ds, val_ds)
    num_classes = check_num_classes(cfg, train_ds)
    # NOTE: a fresh run builds its model (seed weights remapped into the arch) before the run folder exists, so a bad
    # model setting, seed weights file or arch leaves nothing behind; nothing between here and the build below draws
    # random numbers, so the model is the same as built after the folder
    fresh_arch, model = None, None
    if not (resume and (Path(cfg['output']) / 'last.pth').is_file()):
        fresh_arch = _config_arch(cfg)
        model = build_model(_with_arch(cfg, fresh_arch), num_classes, with_seed=True)
    with TrainingRun(cfg, dist_info, resume, num_classes) as run:
        arch = _run_arch(cfg, run, fresh_arch)
        if model is None or run.resumed:
            model = build_model(_with_arch(cfg, arch), run.num_classes, with_seed=not run.resumed)
        model = _on_device(model, t, dist_info)
        opt = build_optimizer(model.parameters(), t)
        epoch, step, done_in_epoch = 0, 0, 0
        scaler = grad_scaler(t['amp'], dist_info.device)
        if run.state is not None:
            check_resume_precision(run.state['config']['train'], t)
        if (state := run.begin(model, {'optimizer': opt})) is not None:
            epoch, step, done_in_epoch = state['epoch'], state['step'], state['done_in_epoch']
            restore_scalers(state, {'scaler': scaler})
            _logger.info('resumed from %s at epoch %d, step %d', run.last, epoch, step)
        ddp = DistributedDataParallel(model) if dist_info.distributed else model

        sampler = DistributedSampler(train_ds, seed=cfg['seed']) if dist_info.distributed else None
        epoch_batches = batches_per_epoch(train_ds, sampler, t['batch_size'])  # this process's batches per epoch
        total = total_steps(t, epoch_batches)
        metrics = run.metrics_log(_FIELDS)
        curve = run.metrics_log(_EVAL_FIELDS, 'eval.csv') if t['eval_interval'] else None
        bar = run.progress(total, step, 'retrain')
        while step < total and epoch < t['epochs']:
            # a resumed run skips the epoch's done batches (see `epoch_loader`)
            loader = epoch_loader(train_ds, sampler, t['batch_size'], cfg['data']['workers'], cfg['seed'] + epoch,
                                  epoch, done_in_epoch)
            train_mode(model, t['freeze_bn'])
            for batch in loader:
                tic = time.perf_counter()
                lr = apply_lr(opt, t, step, epoch, total)
                losses, loss = _train_step(ddp, model, opt, to_device(batch, run.device), t['grad_clip'], step,
                                           t['amp'], scaler)
                step += 1
                done_in_epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f'{loss:.3f}', lr=f'{lr:.4f}')
                if run.is_main and (step % t['log_interval'] == 0 or step == total):
                    cls, reg = (float(losses[k].detach()) if k in losses else float('nan')
                                for k in ('classification', 'bbox_regression'))
                    metrics.write([step, epoch, f'{lr:.6g}', f'{loss:.5f}', f'{cls:.5f}', f'{reg:.5f}',
                                   f'{time.perf_counter() - tic:.3f}'])
                if curve is not None and step % t['eval_interval'] == 0 and step < total:
                    _eval_point(model, val_ds, run, curve, cfg, step, epoch)
                    train_mode(model, t['freeze_bn'])
                # the epoch end and the run end write their own checkpoint below
                if step % t['ckpt_interval'] == 0 and step < total and done_in_epoch < epoch_batches:
                    run.save_last(epoch=epoch, step=step, done_in_epoch=done_in_epoch, arch=arch, cat_ids=cat_ids,
                                  **scaler_states({'scaler': scaler}))
                if step >= total:
                    break
            else:
                epoch, done_in_epoch = epoch + 1, 0
            run.save_last(epoch=epoch, step=step, done_in_epoch=done_in_epoch, arch=arch, cat_ids=cat_ids,
                          **scaler_states({'scaler': scaler}))
        bar.close()

        run.save_final(step=step, arch=arch, cat_ids=cat_ids)
        result: dict[str, Any] = {'step': step}
        if t['eval_at_end']:
            stats = evaluate(model, val_ds, run.out / 'detections_val.json', cfg['eval']['batch_size'], dist_info,
                             cfg['data']['workers'])
            result.update(stats)
            if curve is not None:
                _curve_row(curve, stats, step, epoch)
        run.write_text('metrics.json', json.dumps(result, indent=2))
    return result

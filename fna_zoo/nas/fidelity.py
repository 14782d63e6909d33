"""Rank fidelity of a search: what the super network's weights say of an arch, to compare with its retrained AP.

A weight-sharing search ranks archs by the super network's shared weights; whether that ranking agrees with
the ranking of the same archs retrained alone is the question of "evaluating the search phase" (Sciuto, Yu et
al., *Evaluating the Search Phase of Neural Architecture Search*, 2019; Yu et al., ICLR 2020 -
https://arxiv.org/abs/1902.08142), answered with Kendall's tau between the two rankings.

`supernet_estimates` gives the first ranking: every arch of the search space evaluated on the search's
validation set with the weights of the search's last checkpoint, its BN statistics recomputed for that path
first (as the search evaluates its derived arch).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Subset

from ..arch import Arch
from ..checkpoint import read_checkpoint
from ..engine.config import load_config
from ..engine.distributed import init_distributed
from ..engine.evaluate import evaluate
from ..engine.run import epoch_loader
from ..engine.train import build_datasets, data_root, train_dataset
from .config import SEARCH_DEFAULTS
from .searcher import build_search, recalibrate_bn, split_indices

__all__ = ['supernet_estimates']

_logger = logging.getLogger(__name__)


def _batches(dataset: Any, batch_size: int, seed: int, workers: int) -> Iterator[tuple[list, list]]:
    """Endless batches of `dataset`, a new order each pass (as the search's architecture-step stream)."""
    cycle = 0
    while True:
        yield from epoch_loader(dataset, None, batch_size, workers, seed + 1000 * cycle, cycle)
        cycle += 1


def supernet_estimates(run_dir: str | os.PathLike, archs: dict[str, Arch], calib_batches: int | None = None
                       ) -> dict[str, dict[str, float] | None]:
    """COCO stats (AP, AP50, ...) of each arch on the search's validation set with the super network's weights.

    Args:
        run_dir: A search run folder (its config.yaml and last.pth).
        archs: The archs to estimate, by name.
        calib_batches: Batches of BN recalibration per arch (None: the search's `search.bn_calib_batches`).

    Returns:
        Per name, the stats, or None for an arch outside the search's space (`SearchSpace.path_of`).
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / 'config.yaml', defaults=SEARCH_DEFAULTS)
    ckpt = read_checkpoint(run_dir / 'last.pth')
    if not ckpt.is_search:
        raise ValueError(f'{str(run_dir / "last.pth")!r} is not a search checkpoint; expected the last.pth of an '
                         'fna-search run')
    dist_info = init_distributed(cfg['device'])
    space, supernet, model, _ = build_search(cfg, ckpt.num_classes)
    paths = {name: space.path_of(arch) for name, arch in archs.items()}
    out: dict[str, dict[str, float] | None] = {name: None for name in archs}
    if all(p is None for p in paths.values()):
        return out  # nothing of the space: no weights or data to read
    model.load_state_dict(ckpt.weights)
    model.to(dist_info.device)
    root = data_root(cfg)
    _, val_ds = build_datasets(cfg, root, train=False)
    plain = train_dataset(cfg, root, augment=False)
    # NOTE: the architecture part of the training set, unaugmented, as `searcher.search` feeds architecture steps
    # and its BN recalibration (the split depends on the set's size only, so the plain set splits the same)
    _, arch_idx = split_indices(plain, cfg['search']['weight_ratio'], cfg['seed'])
    calib = Subset(plain, arch_idx)
    n = cfg['search']['bn_calib_batches'] if calib_batches is None else calib_batches
    bs, workers = cfg['search']['arch_batch_size'] or cfg['train']['batch_size'], cfg['data']['workers']
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in paths.items():
            if path is None:
                continue
            supernet.set_path(path)
            # NOTE: random windows are drawn from torch's global RNG: reseeded per arch, every arch is calibrated on
            # the same windows (and the caller's RNG state is left alone)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg['seed'])
                recalibrate_bn(model, _batches(calib, bs, cfg['seed'] + 1, workers), n, dist_info.device)
            stats = evaluate(model, val_ds, Path(tmp) / 'detections.json', cfg['eval']['batch_size'], dist_info,
                             workers)
            out[name] = {k: float(v) for k, v in stats.items()}
            _logger.info('supernet estimate of %s: AP %.4f, AP50 %.4f', name, out[name].get('AP', float('nan')),
                         out[name].get('AP50', float('nan')))
    return out

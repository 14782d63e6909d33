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

Mixed precision (`train.amp`, `train.channels_last`; `fna_zoo.engine.precision`): the detector's forward of
weight and architecture steps runs under autocast, fp16 with one gradient scaler per optimizer; the architecture
probabilities, the cost objective, the entropy term, BN recalibration and evaluation stay fp32.

The run's bookkeeping (run folder, config.yaml, metrics.csv, last.pth, resuming) is `fna_zoo.engine.run.TrainingRun`,
shared with retraining; `_Search` holds the search's own state and steps.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import timm
import torch
from torch import nn
from torch.utils.data import DistributedSampler, Subset

from ..complexity import count_arch
from ..checkpoint import check_weights_file, save_checkpoint
from ..data import CocoDetection, RandomCrops
from ..detection import DETECTORS, model_kwargs
from ..detection.backbones import resolve_seed
from ..engine.distributed import all_gather_objects, barrier, broadcast_state, init_distributed
from ..engine.evaluate import evaluate
from ..engine.precision import (apply_memory_format, check_precision, check_resume_precision, forward_losses,
                                grad_scaler, restore_scalers, scaler_states)
from ..engine.run import (TrainingRun, batches_per_epoch, check_categories, check_num_classes, epoch_loader,
                          optimizer_step, seed_process, to_device, total_steps)
from ..engine.train import apply_lr, build_datasets, build_optimizer, data_root, train_dataset
from ..fileio import atomic_write_text
from .cost import CostObjective, build_objective
from .latency import objective_latency_table, predicted_latency_ms
from .space import ArchPath, SearchSpace
from .supernet import SuperNet

if TYPE_CHECKING:
    from .verify import Candidate

__all__ = ['entropy_fraction', 'split_indices', 'check_search_config', 'verify_recipe', 'verification_setup',
           'build_search', 'recalibrate_bn', 'search']

_logger = logging.getLogger(__name__)

_FIELDS = ['step', 'epoch', 'phase', 'lr', 'loss', 'detection', 'cost', 'cost_loss', 'op_entropy', 'width_entropy',
           'op_entropy_fraction', 'width_entropy_fraction', 'skip_fraction', 'time']


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

    The section's values (counts, shares, choices) were checked when the config was loaded
    (`fna_zoo.nas.config.check_search_section`); what is checked here needs more: the space's seed, the objective's
    table, the verification recipe.

    Args:
        cfg: The search config (`fna_zoo.nas.config.SEARCH_DEFAULTS` layout).
    """
    s = cfg['search']
    if cfg['model']['backbone'] is not None:
        raise ValueError(f"config model.backbone is {cfg['model']['backbone']!r}; a search builds its backbone from "
                         'search.space.seed, expected null')
    space = SearchSpace.from_config(s['space'], cfg['detector'])
    objective = build_objective(space, s['objective'])
    if s['verify']['candidates'] > 0:
        from .verify import zoo_paths

        verify_recipe(cfg)
        zoo_paths(space, s['verify']['zoo'])
    elif s['verify']['zoo']:
        raise ValueError(f"config search.verify.zoo is {s['verify']['zoo']!r} but search.verify.candidates is 0 (no "
                         'verification); expected candidates >= 1 for zoo archs to be verified')
    if s['objective']['type'] != 'latency':
        objective_latency_table(space, s['objective'])  # a table given for the summary must fit the space too
    return space, objective, model_kwargs(cfg, DETECTORS[cfg['detector']])


def verify_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """The retrain config of the verification runs (`search.verify.recipe`), on the search's detector, seed weights,
    seed and device, with the search's split names (the caller sets `data.path` to the held-out tree); or a clear
    error for a bad `search.verify`.

    Args:
        cfg: The search config.
    """
    from ..engine.config import load_config

    v = cfg['search']['verify']
    steps = v['steps']
    if not steps or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in steps) or \
            list(steps) != sorted(set(steps)):
        raise ValueError(f"config search.verify.steps is {steps!r}; expected increasing positive step counts, one per "
                         'successive-halving rung (e.g. [100, 200])')
    if not isinstance(v['recipe'], str) or not v['recipe'].strip():
        raise ValueError(f"config search.verify.recipe is {v['recipe']!r}; expected the retrain config file of the "
                         'verification runs (e.g. configs/trees_retinanet.yaml)')
    if Path(v['recipe']).is_dir():
        raise ValueError(f"config search.verify.recipe {v['recipe']!r} is a directory; expected a retrain config file")
    recipe = load_config(v['recipe'])
    if recipe['detector'] != cfg['detector']:
        raise ValueError(f"config search.verify.recipe {v['recipe']!r} trains {recipe['detector']!r}; expected the "
                         f"search's detector {cfg['detector']!r}")
    recipe['model']['seed_weights'] = cfg['model']['seed_weights']
    recipe.update(seed=cfg['seed'], device=cfg['device'])
    # NOTE: the held-out tree keeps the search's split names (`holdout_split`): its val split is the held-out part
    recipe['data'].update(path=None, train_split=cfg['data']['train_split'], val_split=cfg['data']['val_split'])
    recipe['train']['eval_interval'] = None
    return recipe


def build_search(cfg: dict[str, Any], num_classes: int) -> tuple[SearchSpace, SuperNet, nn.Module, CostObjective]:
    """(space, super network, detector around it, cost objective) of a search config; checks the config first.

    Args:
        cfg: The search config (`fna_zoo.nas.config.SEARCH_DEFAULTS` layout).
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
        path = check_weights_file(seed)  # random bytes, truncated files, pickle payloads: one line
        try:
            model = timm.create_model(space.seed_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        except RuntimeError as e:  # NOTE: torch's load_state_dict: missing / unexpected keys, wrong shapes
            raise ValueError(f'seed weights file {seed!r} does not fit timm {space.seed_name} '
                             f'({str(e).strip().splitlines()[0][:200]}); expected the weights of the search space '
                             'seed, with timm keys') from None
        return model.state_dict()
    return seed if seed is not None else timm.create_model(space.seed_name).state_dict()


class _Stream:
    """Endless batches over a dataset: a new order each pass, resumable at any batch (`position`)."""

    def __init__(self, dataset: Any, batch_size: int, seed: int, workers: int, distributed: bool,
                 position: int = 0) -> None:
        self.dataset, self.batch_size, self.seed, self.workers = dataset, batch_size, seed, workers
        self.sampler = DistributedSampler(dataset, seed=seed) if distributed else None
        self.per_pass = batches_per_epoch(dataset, self.sampler, batch_size)
        self.position = position
        self._it: Iterator | None = None

    def _open(self) -> None:
        cycle, offset = divmod(self.position, self.per_pass)
        self._it = iter(epoch_loader(self.dataset, self.sampler, self.batch_size, self.workers,
                                     self.seed + 1000 * cycle, cycle, offset))

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


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum()


def mean_entropy_fraction(probs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over slots (or stages) of each one's entropy over its maximum, ln(candidates), differentiable: 1 is
    uniform (nothing decided), 0 is one-hot; slots with one candidate are left out (0 when none is left).

    Args:
        probs: One probability vector per slot.
    """
    fracs = [_entropy(p) / math.log(len(p)) for p in probs if len(p) > 1]
    return torch.stack(fracs).mean() if fracs else torch.zeros(())


def entropy_fraction(probs: list[torch.Tensor]) -> float:
    """`mean_entropy_fraction` as a number.

    Args:
        probs: One probability vector per slot.
    """
    return float(mean_entropy_fraction([p.detach() for p in probs]))


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
            'op_entropy': float(sum(map(_entropy, ops))) / len(ops),
            'width_entropy': float(sum(map(_entropy, widths))) / len(widths),
            'op_entropy_fraction': entropy_fraction(ops), 'width_entropy_fraction': entropy_fraction(widths),
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


def search(cfg: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Run an architecture search; returns its summary (also written to `<output>/summary.json`).

    Writes into `cfg['output']`: config.yaml, search.log, metrics.csv, last.pth (resumable), and at the end
    arch.yaml (the derived `Arch`), alphas.pt, summary.json, probs.json and probs.png.

    Args:
        cfg: The search config (`fna_zoo.nas.config.SEARCH_DEFAULTS` layout).
        resume: Continue from `<output>/last.pth` when it exists.
    """
    tic = time.perf_counter()
    dist_info = init_distributed(cfg['device'])
    space = check_search_config(cfg)[0]  # a bad config fails before anything is written
    check_precision(cfg['train']['amp'], dist_info.device)
    seed_process(cfg['seed'], dist_info)
    root = data_root(cfg, dist_info)
    train_ds, val_ds = build_datasets(cfg, root)
    check_categories(train_ds, val_ds)
    plain_ds = train_dataset(cfg, root, augment=False)
    weight_idx, arch_idx = split_indices(train_ds, cfg['search']['weight_ratio'], cfg['seed'])
    num_classes = check_num_classes(cfg, train_ds)
    # NOTE: a fresh run reads its seed weights file before the run folder exists, so a bad one leaves nothing
    # behind (reading a file draws no random numbers; a random-init seed, null, is made later, as it always was)
    seed_sd = None
    if cfg['model']['seed_weights'] is not None and not (resume and (Path(cfg['output']) / 'last.pth').is_file()):
        seed_sd = _seed_state_dict(cfg, space)
    with TrainingRun(cfg, dist_info, resume, num_classes) as run:
        with run.log_file('search.log'):
            job = _Search(run, Subset(train_ds, weight_idx), Subset(plain_ds, arch_idx), val_ds, seed_sd)
            if run.is_main and not run.resumed:
                _logger.info('search space: %s', job.space.describe())
            result = job.loop()
        result['wall_time_s'] = round(time.perf_counter() - tic, 1)
        run.write_text('summary.json', json.dumps(result, indent=2) + '\n')
    if cfg['search']['verify']['candidates'] > 0:
        if dist_info.distributed:
            _logger.warning('search.verify runs in a single process; skipped (run fna-search again without torchrun '
                            'with --resume to verify this search)')
        else:
            tic = time.perf_counter()
            result['verify'] = _verify(cfg, job, root)
            result['verify_wall_time_s'] = round(time.perf_counter() - tic, 1)
            result['arch_file'] = str(Path(cfg['output']) / 'arch.yaml')
            atomic_write_text(Path(cfg['output']) / 'summary.json', json.dumps(result, indent=2) + '\n')
    return result


def verification_setup(cfg: dict[str, Any], root: Path, space: SearchSpace,
                       objective: CostObjective) -> tuple[dict[str, Any], Candidate]:
    """(the retrain config of the verification runs on the held-out tree, the baseline) of a search config: the
    held-out tree is cut from the training split under `<output>/verify/data` (`holdout_split`).

    Args:
        cfg: The search config.
        root: Its COCO tree (`data_root`).
        space: Its search space.
        objective: Its cost objective.
    """
    from .verify import Candidate, baseline, holdout_split

    out, v = Path(cfg['output']), cfg['search']['verify']
    recipe = verify_recipe(cfg)
    crop = recipe['data']['train_crop']['size'] or 512
    tree = holdout_split(root, cfg['data']['train_split'], v['holdout'], crop, out / 'verify' / 'data',
                         cfg['data']['val_split'], cfg['seed'])
    recipe['data']['path'] = str(tree)
    arch, path, cost = baseline(space, objective)
    label = 'the seed' if path == space.seed_path() else 'the width-scaled seed at the target'
    return recipe, Candidate('baseline', arch, path, cost, 0.0, label)


def _verify(cfg: dict[str, Any], job: '_Search', root: Path) -> dict[str, Any]:
    """The verification stage (`fna_zoo.nas.verify`) of a finished search: its record; `arch.yaml` becomes the
    winner, `searched_arch.yaml` keeps the search's argmax."""
    from .verify import top_candidates, verify_candidates, zoo_candidates

    out, v = Path(cfg['output']), cfg['search']['verify']
    space, objective = job.space, job.objective
    recipe, base = verification_setup(cfg, root, space, objective)
    with torch.no_grad():
        ops, widths = job.supernet.probabilities()
    candidates = top_candidates(space, objective, ops, widths, job.supernet.argmax_path(), v['candidates'], v['band'],
                                exclude=[base.arch], seed=cfg['seed'])
    zoo, left_out = zoo_candidates(space, objective, v['zoo'], v['band'], ops, widths, taken=[base, *candidates],
                                   first_index=len(candidates))
    candidates += zoo
    searched = space.derive(job.supernet.argmax_path())
    searched.save(out / 'searched_arch.yaml')
    record = verify_candidates(candidates, base, recipe, v['steps'], v['margin'], out / 'verify', v['seeds'],
                               left_out)
    winner = base if record['winner'] == base.name else next(c for c in candidates if c.name == record['winner'])
    winner.arch.save(out / 'arch.yaml')
    _logger.info('verification: %s wins (%s); baseline held-out AP50 %.1f, best candidate %s', record['winner'],
                 record['winner_label'], record['baseline_AP50'], record['best_candidate_AP50'])
    return record


class _Search:
    """A search in progress: the detector around the super network, its two optimizers, the batch streams of
    the weight and architecture parts, the step counter and the probability history.

    Builds the super network (seed remapped in on a fresh run) and restores a resumed run's state.

    Args:
        run: The run (config, process, checkpoint).
        weight_ds: Items of the weight steps (with the training augmentation).
        arch_ds: Items of the architecture steps (without).
        val_ds: The validation set (to evaluate the derived path).
        seed_sd: The seed weights when already read (`_seed_state_dict`); None: read them here (a fresh run).
    """

    def __init__(self, run: TrainingRun, weight_ds: Subset, arch_ds: Subset, val_ds: CocoDetection,
                 seed_sd: dict[str, torch.Tensor] | None = None) -> None:
        cfg = run.cfg
        self.run, self.s, self.t, self.val_ds = run, cfg['search'], cfg['train'], val_ds
        self.space, self.supernet, self.model, self.objective = build_search(cfg, run.num_classes)
        if not run.resumed:
            self.supernet.load_seed(seed_sd if seed_sd is not None else _seed_state_dict(cfg, self.space),
                                    self.s['remap_width'])
            if self.s['seed_prior'] > 0:
                self.supernet.set_prior(self.space.seed_path(), self.s['seed_prior'], ops=self.s['search_ops'])
        apply_memory_format(self.model.to(run.device), self.t['channels_last'])
        broadcast_state(self.model)  # new layers were initialised from per-rank seeds: every rank starts from rank 0's
        self.alphas = self.supernet.arch_parameters()
        self.weights = [p for p in self.model.parameters() if all(p is not a for a in self.alphas)]
        self.w_opt = build_optimizer(self.weights, self.t)
        a = self.s['arch_optimizer']
        self.a_opt = torch.optim.Adam(self.alphas, lr=a['lr'], betas=tuple(a['betas']), weight_decay=a['weight_decay'])
        self.gen = torch.Generator().manual_seed(cfg['seed'])  # paths and Gumbel noise: the same on every rank
        # fp16: one scaler per optimizer (each skips its own overflowed steps and keeps its own scale)
        self.scalers = {'scaler': grad_scaler(self.t['amp'], run.device),
                        'arch_scaler': grad_scaler(self.t['amp'], run.device)}
        if run.state is not None:
            check_resume_precision(run.state['config']['train'], self.t)
        # NOTE: `begin` restores torch's RNG and `gen` only now, after the super network (random init) is built
        state = run.begin(self.model, {'optimizer': self.w_opt, 'arch_optimizer': self.a_opt}, self.gen) or {}
        if not self.s['search_ops']:  # a channel search: the seed's ops (after a resume's logits), widths searched
            self.supernet.fix_ops(self.space.seed_path())
        if run.resumed:
            restore_scalers(state, self.scalers)
        self.step: int = state.get('step', 0)
        self.history: list[dict[str, Any]] = [h for h in state.get('history', []) if h['step'] <= self.step]
        if run.resumed:
            _logger.info('resumed from %s at step %d', run.last, self.step)
        bs, workers, distributed = self.t['batch_size'], cfg['data']['workers'], run.dist_info.distributed
        self.w_stream = _Stream(weight_ds, bs, cfg['seed'], workers, distributed, self.step)
        self.a_stream = _Stream(arch_ds, self.s['arch_batch_size'] or bs, cfg['seed'] + 1, workers, distributed,
                                state.get('arch_step', 0))
        self.total = total_steps(self.t, self.w_stream.per_pass)
        self.monitor = _Monitor(self.space, self.supernet, self.objective, self.s['objective']['input_size'])
        self.metrics = run.metrics_log(_FIELDS)

    def loop(self) -> dict[str, Any]:
        """Alternate architecture and weight steps to the last step, then derive the arch (`_finish`)."""
        s, t = self.s, self.t
        epoch_batches, total = self.w_stream.per_pass, self.total
        if not self.run.resumed:
            self._snapshot()
        bar = self.run.progress(total, self.step, 'search')
        self.model.train()
        while self.step < total:
            epoch = self.step // epoch_batches
            searching = epoch >= s['arch_update_epoch']
            # NOTE: the architecture steps (Gumbel relaxation) draw from `gen` before the weight step's path does;
            # a resumed run repeats this order from the restored `gen`
            if searching and self.step % s['weight_steps'] == 0:
                for _ in range(s['arch_steps']):
                    self._arch_step(epoch)
            tic = time.perf_counter()
            lr, det = self._weight_step(epoch, searching)
            self.step += 1
            step = self.step
            bar.update(1)
            bar.set_postfix(loss=f'{det.item():.3f}', lr=f'{lr:.4f}', arch='on' if searching else 'warm-up')
            if step % t['log_interval'] == 0 or step == total:
                self._log_row('weight', epoch, lr, tic, (det.detach(), det.detach(), float('nan'), 0.0))
            if self.run.is_main and (step % s['arch_log_interval'] == 0 or step % epoch_batches == 0 or step == total):
                self._snapshot()
            if step % t['ckpt_interval'] == 0 or step % epoch_batches == 0 or step == total:
                self.run.save_last(step=step, arch_step=self.a_stream.position, history=self.history,
                                   **scaler_states(self.scalers))
        bar.close()
        return self._finish()

    def _weight_step(self, epoch: int, searching: bool) -> tuple[float, torch.Tensor]:
        """One weight step on a sampled path; returns (LR, detection loss).

        Args:
            epoch: The current epoch (of the weight part).
            searching: Whether the architecture is being updated (else the weights warm up).
        """
        # FNA: uniform paths while the weights warm up, then paths drawn by the architecture probabilities
        self.supernet.set_path(self.supernet.sample_path(self.gen, uniform=not searching))
        lr = apply_lr(self.w_opt, self.t, self.step, epoch, self.total)
        images, targets = to_device(next(self.w_stream), self.run.device)
        det = sum(forward_losses(self.model, images, targets, self.t['amp']).values())
        self._check_finite(det, 'weight')
        optimizer_step(self.w_opt, det, self.weights, self.t['grad_clip'], average=True,
                       scaler=self.scalers['scaler'])
        return lr, det

    def _arch_step(self, epoch: int) -> None:
        """One architecture step: the relaxed (or Gumbel-sampled) super network, loss `L_det + cost loss`.

        Args:
            epoch: The current epoch (for the log).
        """
        s = self.s
        tic = time.perf_counter()
        self.supernet.set_relaxed(gumbel=s['relaxation'] == 'gumbel', generator=self.gen, tau=s['gumbel_tau'],
                                  pairs=s['relaxation'] == 'pairs')
        for p in self.weights:
            p.requires_grad_(False)
        try:
            images, targets = to_device(next(self.a_stream), self.run.device)
            det = sum(forward_losses(self.model, images, targets, self.t['amp']).values())
            # NOTE: outside autocast: the probabilities, the expected MAdds/latency (a sum of products over
            # thousands of table entries, then a log) and the entropy term are fp32 (the relaxed forward's
            # softmax is fp32 under autocast too: `SuperNet._choice`)
            ops_p, widths_p = self.supernet.probabilities()
            expected = self.objective.expected(ops_p, widths_p)
            cost_loss = self.objective.loss(expected).float()
            loss = det + cost_loss
            if (w := self._entropy_weight()) > 0:
                loss = loss + w * (mean_entropy_fraction(ops_p) + mean_entropy_fraction(widths_p)) / 2
            self._check_finite(loss, 'architecture')
            optimizer_step(self.a_opt, loss, self.alphas, s['arch_optimizer']['grad_clip'], average=True,
                           scaler=self.scalers['arch_scaler'])
        finally:
            for p in self.weights:
                p.requires_grad_(True)
        if self.a_stream.position % self.t['log_interval'] == 0:
            self._log_row('arch', epoch, s['arch_optimizer']['lr'], tic,
                          (loss.detach(), det.detach(), expected.detach(), cost_loss.detach()))

    def _entropy_weight(self) -> float:
        """`search.entropy_weight` ramped linearly from 0 at the first architecture step to all of it at the end.

        NOTE: the ramp lets the detection and cost gradients order the candidates first; the entropy term then
        pushes each slot to the candidate it already favours (a search ending near uniform derives the argmax of
        noise). It decides ties, it does not choose: compare the derived archs of two seeds.
        """
        weight = self.s['entropy_weight']
        start = self.s['arch_update_epoch'] * self.w_stream.per_pass
        if weight <= 0 or self.total <= start:
            return 0.0
        return weight * min(max((self.step - start) / (self.total - start), 0.0), 1.0)

    def _check_finite(self, loss: torch.Tensor, phase: str) -> None:
        if not torch.isfinite(loss):
            last = self.run.last
            kept = f'the last good checkpoint is {last}' if last.is_file() else 'no checkpoint was written yet'
            raise FloatingPointError(f'{phase} loss is {loss.item()} at step {self.step}; search stopped, {kept} '
                                     '(lower train.lr or search.arch_optimizer.lr, or check the data)')

    def _log_row(self, phase: str, epoch: int, lr: float, tic: float,
                 values: tuple[torch.Tensor | float, ...]) -> None:
        """A metrics.csv row (main process) with the super network's entropies and skip fraction.

        Args:
            phase: 'weight' or 'arch'.
            epoch: The current epoch.
            lr: The step's LR.
            tic: When the step began (`time.perf_counter`).
            values: (loss, detection loss, expected cost, cost loss).
        """
        if not self.run.is_main:
            return
        loss, det, cost, cost_loss = map(float, values)
        st = self.monitor.stats()
        self.metrics.write([self.step, epoch, phase, f'{lr:.6g}', f'{loss:.5f}', f'{det:.5f}', f'{cost:.5g}',
                            f'{cost_loss:.5f}', f"{st['op_entropy']:.4f}", f"{st['width_entropy']:.4f}",
                            f"{st['op_entropy_fraction']:.4f}", f"{st['width_entropy_fraction']:.4f}",
                            f"{st['skip_fraction']:.4f}", f'{time.perf_counter() - tic:.3f}'])

    def _snapshot(self) -> None:
        """Record the probabilities in the history (probs.json) and log the argmax arch."""
        st = self.monitor.stats()
        self.history.append({'step': self.step, 'ops': st['ops'], 'widths': st['widths'], 'arch': st['arch'],
                             'madds': st['madds']})
        _logger.info('step %d: argmax arch %s | %.3fB MAdds, %.3fM params | E[cost] %.4g %s | op entropy %.3f, '
                     'width entropy %.3f, skip fraction %.3f', self.step, st['arch'], st['madds'] / 1e9,
                     st['params'] / 1e6, st['expected_cost'], self.objective.unit, st['op_entropy'],
                     st['width_entropy'], st['skip_fraction'])

    def _finish(self) -> dict[str, Any]:
        """Derive the arch, check every rank agrees, optionally evaluate it, and write the run's outputs."""
        s, out, run, space = self.s, self.run.out, self.run, self.space
        st = self.monitor.stats()
        path: ArchPath = st['path']
        archs = all_gather_objects(st['arch'])
        if len(set(archs)) != 1:
            raise RuntimeError(f'processes derived different architectures: {archs}')
        arch = space.derive(path)
        latency = predicted_latency_ms(space, s['objective'], path, self.objective)
        result: dict[str, Any] = {
            'arch': st['arch'], 'arch_file': str(out / 'arch.yaml'), 'seed': space.seed_name,
            'detector': run.cfg['detector'], 'input_size': list(s['objective']['input_size']), 'madds': st['madds'],
            'params': st['params'],
            'objective': {**{k: s['objective'][k] for k in ('type', 'lambda', 'target', 'target_mode', 'table')},
                          'target_value': self.objective.target},  # a '0.75x' target resolved, in `cost_unit`
            'expected_cost': st['expected_cost'], 'cost_unit': self.objective.unit,
            'predicted_latency_ms': None if latency is None else round(latency, 4),
            'op_entropy': st['op_entropy'], 'width_entropy': st['width_entropy'],
            'op_entropy_fraction': round(st['op_entropy_fraction'], 4),
            'width_entropy_fraction': round(st['width_entropy_fraction'], 4), 'skip_fraction': st['skip_fraction'], 'probabilities': self.monitor.named_probabilities(st),
            'steps': self.step, 'arch_steps': self.a_stream.position, 'processes': run.dist_info.world_size,
        }
        if s['eval_derived']:
            # NOTE: evaluated with the super network's weights on the derived path after BN recalibration: a
            # ranking signal only; the derived net is retrained from the seed (fna-retrain --arch). Both run
            # without autocast (fp32 statistics and detections, whatever train.amp).
            self.supernet.set_path(path)
            recalibrate_bn(self.model, self.a_stream, s['bn_calib_batches'], run.device)
            stats = evaluate(self.model, self.val_ds, out / 'detections_derived_val.json',
                             run.cfg['eval']['batch_size'], run.dist_info, run.cfg['data']['workers'])
            result['supernet_eval'] = stats or None
        if run.is_main:
            self._write_outputs(arch, st, latency)
        barrier()
        return result

    def _write_outputs(self, arch: Any, st: dict[str, Any], latency: float | None) -> None:
        """arch.yaml, alphas.pt, probs.json and probs.png of the finished search (main process).

        Args:
            arch: The derived `Arch`.
            st: The final `_Monitor.stats`.
            latency: Its predicted latency (ms), if a latency table is configured.
        """
        from .plot import plot_probabilities

        s, out, space, supernet = self.s, self.run.out, self.space, self.supernet
        arch.save(out / 'arch.yaml')
        save_checkpoint({'op_alphas': [a.detach().cpu() for a in supernet.op_alphas],
                         'width_alphas': [a.detach().cpu() for a in supernet.width_alphas],
                         'op_names': [list(names) for st_ in space.stages for names in st_.slots],
                         'widths': [list(st_.widths) for st_ in space.stages], 'temperature': space.temperature},
                        out / 'alphas.pt')
        atomic_write_text(out / 'probs.json', json.dumps(self.history) + '\n')
        plot_probabilities(self.history, space, out / 'probs.png')
        _logger.info('derived arch %s: %.3fB MAdds, %.3fM params at %s', st['arch'], st['madds'] / 1e9,
                     st['params'] / 1e6, 'x'.join(map(str, s['objective']['input_size'])))
        if latency is not None:
            _logger.info('derived arch predicted latency: %.3f ms (latency table %s)', latency, s['objective']['table'])

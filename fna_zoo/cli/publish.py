"""`fna-publish` (also `python -m fna_zoo.cli.publish`): an FNA arch + weights as a timm model folder.

    fna-publish --checkpoint runs/retrain/final.pth --output hub/fna_retinanet_coco [--arch arch.yaml]
                [--name NAME] [--dataset coco] [--ap 0.339] [--push <user>/<repo>]
    fna-publish --arch runs/search/arch.yaml --seed-weights mobilenetv2_100.safetensors --output hub/my_fna

The folder is in timm's Hugging Face layout (config.json naming `fna_custom` with the arch in `model_args`,
model.safetensors, README.md model card with Hub metadata): `timm.create_model('local-dir:hub/fna_retinanet_coco',
pretrained=True)` loads it, and after `--push <user>/<repo>` (or `hf upload <user>/<repo> hub/fna_retinanet_coco .`)
so does `hf-hub:<user>/<repo>`. FNA: Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525; Jung et al., ICPR
2022 - https://arxiv.org/abs/2206.08509.

Exit codes: 0 written (and pushed); 2 user error (one `error: ...` line; nothing is written), or `--push` failed
(offline mode, no token, network or Hub error: one `error: cannot push to REPO: ...` line; the folder is written).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ..assets.store import resolve_asset
from ..checks import check_input_file, check_output_path
from .common import CliParser, add_output_arg, add_verbosity, entry_point, setup_logging

__all__ = ['publish_main', 'main']


def _parser() -> CliParser:
    p = CliParser(prog='fna-publish', description='Publish an FNA arch and its weights (a retrain checkpoint, or '
                  'seed weights remapped into the arch) as a timm model folder in the Hugging Face layout.')
    p.add_argument('--arch', help='arch file (.yaml/.json/.txt) or registered arch name; with --checkpoint optional '
                   '(it must be the arch the checkpoint was trained with)')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--checkpoint', help='retrain checkpoint (final.pth of fna-retrain): its backbone weights')
    src.add_argument('--seed-weights', help="seed weights to remap into --arch: a .pth/.safetensors file or 'timm' "
                     '(the hub weights of the arch\'s seed)')
    add_output_arg(p, 'folder to write (must not exist, or be empty)', required=True)
    p.add_argument('--name', help='model name in the model card (default: the output folder name)')
    p.add_argument('--dataset', help="dataset id for the model card's datasets and model-index (e.g. coco)")
    p.add_argument('--ap', type=float, help="box AP in [0, 1] for the model card (default: the run's metrics.json)")
    p.add_argument('--push', metavar='REPO', help='then upload the folder to this Hugging Face model repo '
                   '(<user>/<name>, created when missing; needs a token: hf auth login or HF_TOKEN)')
    add_verbosity(p)
    return p


def _validate(args: Any) -> None:
    """Checks that need no model, so a bad argument fails before any heavy work."""
    if args.seed_weights and not args.arch:
        raise ValueError('--seed-weights are remapped into an arch; expected --arch with them')
    if args.arch and Path(args.arch).suffix:
        check_input_file(args.arch, 'arch file', 'a .yaml/.json/.txt arch file')
    if args.checkpoint:
        check_input_file(args.checkpoint, 'checkpoint', 'a final.pth of fna-retrain')
    if args.seed_weights and args.seed_weights != 'timm':
        check_input_file(resolve_asset(args.seed_weights), 'seed weights file',
                         "a .pth/.safetensors file, 'asset:mobilenetv2_100.tv_in1k' or 'timm'")
    if args.ap is not None and not 0 <= args.ap <= 1:
        raise ValueError(f'--ap is {args.ap}; expected box AP in [0, 1] (0.339 = 33.9 points)')
    if args.push:
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(args.push)
        except ValueError:
            raise ValueError(f"--push {args.push!r} is not a Hugging Face repo id; expected <user>/<name> (letters, "
                             "digits, '-', '_', '.')") from None
    out = Path(args.output)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise FileExistsError(f'--output {args.output!r} exists and is not an empty folder; expected a new (or empty) '
                              'folder')
    check_output_path(out / 'config.json')  # a folder that cannot be made (under a file, read-only) fails now


def publish_main(argv: Sequence[str] | None = None) -> Path:
    """Run `fna-publish`; returns the written folder."""
    args = _parser().parse_args(argv)
    setup_logging(args, default=logging.WARNING)
    _validate(args)

    from ..arch import Arch
    from ..complexity import count_arch
    from ..publish import CARD_INPUT_SIZES, publish, push

    folder = publish(args.arch, args.output, checkpoint=args.checkpoint, seed_weights=args.seed_weights,
                     name=args.name, dataset=args.dataset, ap=args.ap)
    config = json.loads((folder / 'config.json').read_text())
    arch = Arch.from_dict(config['model_args']['arch'])  # the arch as written (a RetinaNet drops the head conv)
    h, w = CARD_INPUT_SIZES[0]
    c = count_arch(arch, (h, w))
    print(f'wrote {folder} (fna_custom: config.json, model.safetensors, README.md; {c.mparams:.2f}M params, '
          f'{c.gmadds:.2f}B MAdds at {h}x{w})')
    print(f"load it with timm.create_model('local-dir:{folder}', pretrained=True) after import fna_zoo"
          + ('' if args.push else f'; push it with hf upload <user>/<repo> {folder} .'))
    if args.push:
        url = push(folder, args.push)  # NOTE: after the local write: a failed push leaves the folder for a retry
        print(f"pushed to {url}: timm.create_model('hf-hub:{args.push}', pretrained=True)")
    return folder


main = entry_point(publish_main)


if __name__ == '__main__':
    sys.exit(main())

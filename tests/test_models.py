"""Every registered fna* model behaves like a timm model (parametrized over timm.list_models('fna*'))."""
import pytest
import timm
import torch

from fna_zoo import DETECTION_OUT_INDICES, Arch, count_arch, count_model, get_arch
from fna_zoo.fna import ZOO_ARCHS

MODELS = timm.list_models('fna*')
# the zoo's seeds are 1000-class ImageNet classifiers like timm's own; the FNA backbones default to no classifier
SEED_MODELS = {'fna_efficientnet_lite0'}
# fna_custom takes its architecture as the model argument `arch=`: here an unregistered one (FNA's SSDLite arch
# with other ops in stages 1 and 5), passed the way config.json's model_args carry it (Arch.to_dict()).
CUSTOM_ARCH = get_arch('fna_ssdlite_backbone').to_dict()
CUSTOM_ARCH['stages'][1]['ops'] = ['k7_e3', 'k3_e6', 'skip', 'skip']
CUSTOM_ARCH['stages'][5]['ops'] = ['k3_e6', 'skip', 'skip', 'skip']


def _arch(name: str) -> Arch:
    return Arch.from_dict(CUSTOM_ARCH) if name == 'fna_custom' else get_arch(ZOO_ARCHS.get(name, name))


def _create(name: str, **kwargs) -> torch.nn.Module:
    if name == 'fna_custom':
        kwargs['arch'] = CUSTOM_ARCH
    return timm.create_model(name, **kwargs)


def test_registry():
    assert MODELS == ['fna_custom', 'fna_efficientnet_lite0', 'fna_retinanet_backbone', 'fna_ssdlite_backbone']
    # fna_custom has no weight source of its own (overlay file, local-dir: or hf-hub: bring them); the Lite0 seed's
    # only weights are the fetched ones (fna-fetch lite0)
    assert timm.list_models('fna*', pretrained=True) == ['fna_efficientnet_lite0.paramremap_lite0_in1k'] + [
        f'{m}.{tag}' for m in MODELS if m.endswith('_backbone') for tag in ('paramremap_in1k', 'paramremap_tv_in1k')]


@pytest.mark.parametrize('name', MODELS)
def test_forward_backward(name):
    model = _create(name, num_classes=7)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features and feats.shape[-2:] == (2, 3)


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    model = _create(name, features_only=True, out_indices=DETECTION_OUT_INDICES).eval()
    lite0 = name == 'fna_efficientnet_lite0'
    assert model.feature_info.channels() == ([24, 40, 112, 320] if lite0 else [24, 32, 96, 320])
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    outs = model(torch.randn(1, 3, 64, 128))
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    assert [64 // o.shape[2] for o in outs] == model.feature_info.reduction()
    assert [128 // o.shape[3] for o in outs] == model.feature_info.reduction()
    default = _create(name, features_only=True)
    assert default.feature_info.reduction() == [2, 4, 8, 16, 32]


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg(name):
    model = _create(name)
    cfg = model.pretrained_cfg
    if name == 'fna_custom':
        assert cfg['architecture'] == name and cfg['tag'] == 'untrained' and 'hf_hub_id' not in cfg
    elif name == 'fna_efficientnet_lite0':
        assert cfg['architecture'] == name and cfg['tag'] == 'paramremap_lite0_in1k' and 'hf_hub_id' not in cfg
    else:
        assert cfg['architecture'] == name and cfg['tag'] == 'paramremap_in1k'
        assert cfg['hf_hub_id'] == 'timm/mobilenetv2_100.ra_in1k'
    # the seed's input normalisation, recorded with the weights (timm's pretrained cfg of the seed model)
    seed_cfg = timm.models.get_pretrained_cfg(_arch(name).seed or 'mobilenetv2_100')
    assert (cfg['mean'], cfg['std']) == (tuple(seed_cfg.mean), tuple(seed_cfg.std))
    assert isinstance(model.get_submodule(cfg['first_conv']), torch.nn.Conv2d)
    assert cfg['num_classes'] == model.num_classes == (1000 if name in SEED_MODELS else 0)
    c, h, w = cfg['input_size']
    feats = model.forward_features(torch.randn(1, c, h, w))
    assert tuple(feats.shape[-2:]) == cfg['pool_size']
    with_head = _create(name, num_classes=10)
    assert with_head.get_submodule(cfg['classifier']).out_features == 10
    assert model.fna_arch == _arch(name) and (name == 'fna_custom' or model.fna_arch is _arch(name))


@pytest.mark.parametrize('name', MODELS)
def test_analytic_count_matches_hooks(name):
    model = _create(name, num_classes=1000)
    assert count_model(model, (3, 320, 256)) == count_arch(_arch(name), (320, 256), num_classes=1000)


def test_pretrained_offline_without_file_fails_fast():
    # HF_HUB_OFFLINE=1 (conftest/CI): hub weights are not reachable, timm raises instead of hanging
    with pytest.raises(Exception, match='(?i)offline|cannot find|not found|local'):
        timm.create_model('fna_retinanet_backbone', pretrained=True)


def test_demo_tour_lists_the_registered_archs(tmp_path, capsys):
    from fna_zoo.demo import main

    main(['--out', str(tmp_path)])
    printed = capsys.readouterr().out
    assert 'fna_retinanet_backbone' in printed and 'fna_custom' not in printed  # fna_custom takes arch=
    assert sorted(p.stem for p in tmp_path.glob('*.yaml')) == ['fna_retinanet_backbone', 'fna_ssdlite_backbone']


@pytest.mark.parametrize('name', MODELS)
def test_constructs_by_name_alone(name):
    """As timm's own model tests require: no argument but the name, forward, and features_only."""
    model = timm.create_model(name).eval()
    c, h, w = model.pretrained_cfg['input_size']
    x = torch.randn(1, c, h // 2, w // 2)
    with torch.no_grad():
        assert model(x).shape == (1, model.num_classes or model.num_features)
        feats = timm.create_model(name, features_only=True).eval()(x)
    assert [f.shape[1] for f in feats] == timm.create_model(name, features_only=True).feature_info.channels()

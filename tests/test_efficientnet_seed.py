"""The EfficientNet seeds: EfficientNet-B0 (SiLU, SE) and EfficientNet-Lite0 (ReLU6, no SE, TF "same" padding, BN eps
1e-3): each `Arch` is timm's model, remaps, counts and feeds both detectors."""
import pytest
import timm
import torch

from conftest import randomize_bn
from fna_zoo import build_backbone, count_arch, count_model
from fna_zoo.arch import Arch, Stage, se_reduce_chs
from fna_zoo.archs import get_arch
from fna_zoo.detection import build_retinanet, build_ssdlite
from fna_zoo.remap import RemapError, remap_state_dict

# timm efficientnet.py:_gen_efficientnet
EFFNET_B0_TIMM_ARCH_DEF = [
    ['ds_r1_k3_s1_e1_c16_se0.25'],
    ['ir_r2_k3_s2_e6_c24_se0.25'],
    ['ir_r2_k5_s2_e6_c40_se0.25'],
    ['ir_r3_k3_s2_e6_c80_se0.25'],
    ['ir_r3_k5_s1_e6_c112_se0.25'],
    ['ir_r4_k5_s2_e6_c192_se0.25'],
    ['ir_r1_k3_s1_e6_c320_se0.25'],
]
# timm efficientnet.py:_gen_efficientnet_lite
LITE0_TIMM_ARCH_DEF = [
    ['ds_r1_k3_s1_e1_c16'],
    ['ir_r2_k3_s2_e6_c24'],
    ['ir_r2_k5_s2_e6_c40'],
    ['ir_r3_k3_s2_e6_c80'],
    ['ir_r3_k5_s1_e6_c112'],
    ['ir_r4_k5_s2_e6_c192'],
    ['ir_r1_k3_s1_e6_c320'],
]
# seed -> (timm arch_def, its family: act, se_ratio, pad_type, bn_eps)
SEEDS = {
    'efficientnet_b0': (EFFNET_B0_TIMM_ARCH_DEF, dict(act='silu', pad_type='', bn_eps=None)),
    'tf_efficientnet_lite0': (LITE0_TIMM_ARCH_DEF, dict(act='relu6', pad_type='same', bn_eps=1e-3)),
}


def _timm_seed(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(timm.create_model(name, num_classes=0)).eval()


@pytest.fixture(scope='module')
def effnet() -> torch.nn.Module:
    return _timm_seed('efficientnet_b0')


@pytest.fixture(scope='module')
def effnet_file(effnet, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('effnet') / 'efficientnet_b0.pth'
    torch.save(effnet.state_dict(), path)
    return str(path)


@pytest.fixture(scope='module', params=list(SEEDS))
def seed_net(request, tmp_path_factory) -> tuple[str, torch.nn.Module, str]:
    """(seed name, timm's model with non-trivial BN statistics, its weights file), for each EfficientNet seed."""
    model = _timm_seed(request.param)
    path = tmp_path_factory.mktemp('seed') / f'{request.param}.pth'
    torch.save(model.state_dict(), path)
    return request.param, model, str(path)


def _with_ops(arch: Arch, fn) -> Arch:
    return arch.replace(stages=tuple(Stage(s.out_chs, s.stride, tuple(fn(si, o) for o in s.ops))
                                     for si, s in enumerate(arch.stages)))


def test_arch_is_timms_model(seed_net):
    name, net, file = seed_net
    arch_def, family = SEEDS[name]
    seed = get_arch(name)
    assert (seed.seed, seed.head_chs) == (name, 1280)
    assert seed == Arch.from_timm_arch_def(arch_def, stem_chs=32, head_chs=1280, seed=name, **family)
    assert seed.se_ratio == (0.25 if name == 'efficientnet_b0' else None)
    model = build_backbone(seed, file).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    # the same modules: activation, BN eps, and TF "same" padding (timm's Conv2dSame where it is not static)
    assert str(model) == str(net)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    x = torch.randn(1, 3, 97, 131)  # odd sizes: TF "same" pads stride-2 convs asymmetrically
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def test_lite0_family_fields():
    lite0 = get_arch('tf_efficientnet_lite0')
    model = build_backbone(lite0)
    assert isinstance(model.blocks[1][0].bn1.act, torch.nn.ReLU6) and model.bn1.eps == 1e-3
    assert type(model.blocks[1][0].conv_dw).__name__ == 'Conv2dSame'  # stride 2: asymmetric, dynamic
    assert model.blocks[1][1].conv_dw.padding == (1, 1)  # stride 1: "same" is static, symmetric
    # the fields round-trip the arch's spellings and stay out of MobileNetV2's
    for text in (lite0.to_yaml(), lite0.to_json()):
        assert 'pad_type' in text and 'bn_eps' in text
        assert (Arch.from_yaml(text) if text.startswith('stem') else Arch.from_json(text)) == lite0
    assert 'pad_type' not in get_arch('mobilenetv2_100').to_yaml()
    tiny = lite0.replace(bn_eps=1e-5)  # PyTorch's eps is the default, stored as None
    assert tiny.bn_eps is None and tiny.replace(bn_eps=2e-5).to_yaml().endswith('bn_eps: 2.0e-05\n')
    assert Arch.from_yaml(tiny.replace(bn_eps=2e-5).to_yaml()).bn_eps == 2e-5
    # whatever builds it records the seed's normalisation ((x - 0.5) / 0.5); an explicit overlay still wins
    custom = timm.create_model('fna_custom', arch=lite0.to_dict())
    assert custom.pretrained_cfg['mean'] == custom.pretrained_cfg['std'] == (0.5, 0.5, 0.5)
    assert model.pretrained_cfg['mean'] == (0.5, 0.5, 0.5)
    mine = build_backbone(lite0, pretrained_cfg_overlay=dict(mean=(0.1, 0.2, 0.3)))
    assert mine.pretrained_cfg['mean'] == (0.1, 0.2, 0.3) and mine.pretrained_cfg['std'] == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="arch pad_type is 'valid'; expected '' .* or 'same'"):
        lite0.replace(pad_type='valid')
    with pytest.raises(ValueError, match=r"arch bn_eps is 0; expected a number in \(0, 1\)"):
        Arch.from_dict({**lite0.to_dict(), 'bn_eps': 0})


def test_se_widths_follow_timm():
    # timm divides the ratio by the expansion, then rounds mid * ratio; widths must agree for any e and input
    from timm.models._efficientnet_blocks import SqueezeExcite

    for in_chs in (8, 13, 24, 40, 112, 190):
        for e in (1, 3, 6):
            se = SqueezeExcite(in_chs * e, rd_ratio=0.25 / float(e))
            assert se.conv_reduce.out_channels == se_reduce_chs(0.25, in_chs, e)


def test_remap_into_itself_is_identity(seed_net):
    name, net, _ = seed_net
    seed = get_arch(name)
    sd = net.state_dict()
    out = remap_state_dict(sd, seed, seed, sd)
    assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)


@pytest.mark.parametrize('size', [(128, 128), (97, 131)])
def test_larger_kernels_preserve_the_function(seed_net, size):
    # centred kernels stay exact under TF "same" padding too: its left / top pad grows by one as the kernel by two
    name, net, file = seed_net
    grown = _with_ops(get_arch(name), lambda si, o: o if o == 'skip' else f"k7_e{o.split('_e')[1]}")
    model = build_backbone(grown, file).eval()
    assert model.blocks[5][0].conv_dw.kernel_size == (7, 7)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        diff = (model(x) - net(x)).abs().max().item()
    assert diff < 1e-4, diff


def test_width_depth_expansion_remap_moves_se(effnet, effnet_file):
    seed = get_arch('efficientnet_b0')
    sd = effnet.state_dict()
    wide = seed.replace(stages=(seed.stages[0],) + tuple(
        Stage(s.out_chs + 8, s.stride, s.ops + ('k5_e3',)) for s in seed.stages[1:]))
    model = build_backbone(wide, effnet_file)
    got = model.state_dict()
    # the extra (depth rule) layer of stage 1 copies seed layer 1, its e3 expansion keeps the leading channels
    mid = 32 * 3  # stage-1 width 24 + 8
    assert got['blocks.1.2.se.conv_reduce.weight'].shape == (se_reduce_chs(0.25, 32, 3), mid, 1, 1)
    assert torch.equal(got['blocks.1.2.se.conv_reduce.weight'][:6, :mid], sd['blocks.1.1.se.conv_reduce.weight'][:, :mid])
    assert torch.equal(got['blocks.1.2.se.conv_expand.bias'][:mid], sd['blocks.1.1.se.conv_expand.bias'][:mid])
    assert torch.equal(got['blocks.1.0.se.conv_expand.weight'][:, :4], sd['blocks.1.0.se.conv_expand.weight'])


@pytest.mark.parametrize('name', list(SEEDS))
@pytest.mark.parametrize('change', ['seed', 'k7', 'wide', 'narrow'])
def test_count_arch_equals_count_model(name, change):
    seed = get_arch(name)
    arch = {
        'seed': seed,
        'k7': _with_ops(seed, lambda si, o: 'k7_e3' if si and o != 'skip' else o),
        'wide': seed.replace(stages=tuple(Stage(s.out_chs + 8, s.stride, s.ops) for s in seed.stages), head_chs=None),
        'narrow': seed.replace(stages=tuple(Stage(s.out_chs - 4, s.stride, s.ops[:1] + ('skip',) * (len(s.ops) - 1))
                                            for s in seed.stages)),
    }[change]
    for size in ((224, 224), (800, 1088)):
        assert count_arch(arch, size) == count_model(build_backbone(arch), (3, *size))


def test_se_is_counted(effnet):
    seed = get_arch('efficientnet_b0')
    no_se = count_arch(seed.replace(se_ratio=None), (224, 224))
    with_se = count_arch(seed, (224, 224))
    # the SE convs of timm's EfficientNet-B0 (weights and biases), and as many MAdds on their 1x1 maps
    se_params = sum(p.numel() for n, p in effnet.named_parameters() if '.se.' in n)
    assert with_se.params - no_se.params == with_se.madds - no_se.madds == se_params > 600_000


def test_detectors_take_the_effnet_arch(seed_net):
    name, net, file = seed_net
    retina = build_retinanet(name, seed_weights=file, num_classes=3)
    body = retina.backbone.body
    assert body.feature_info.channels() == [40, 112, 320] and body.feature_info.reduction() == [8, 16, 32]
    assert torch.equal(body.blocks[5][0].conv_pw.weight, net.blocks[5][0].conv_pw.weight)
    if name == 'efficientnet_b0':
        assert torch.equal(body.blocks[5][0].se.conv_reduce.weight, net.blocks[5][0].se.conv_reduce.weight)
    ssd = build_ssdlite(name, seed_weights=file, num_classes=3).eval()
    # the tap: the expansion of the first stride-32 layer (112 x 6), then the 1280 head conv
    assert ssd.backbone.out_channels == [672, 1280, 512, 256, 256, 128]
    feats = ssd.backbone(torch.zeros(1, 3, 320, 320))
    assert [f.shape[1] for f in feats.values()] == ssd.backbone.out_channels
    # both normalise images as the seed's weights expect: ImageNet's mean and std, or Lite0's (x - 0.5) / 0.5
    want = timm.models.get_pretrained_cfg(name)
    for det in (retina, ssd):
        assert det.transform.image_mean == pytest.approx(list(want.mean))
        assert det.transform.image_std == pytest.approx(list(want.std))


def test_family_mismatch_and_bad_fields_are_clear(effnet_file, seed_file):
    with pytest.raises(RemapError, match="target arch has act 'relu6', seed arch has 'silu'"):
        build_backbone(get_arch('mobilenetv2_100'), effnet_file, seed_arch='efficientnet_b0')
    with pytest.raises(RemapError, match="target arch has se_ratio 0.25, seed arch has None"):
        build_backbone(get_arch('mobilenetv2_100').replace(se_ratio=0.25), seed_file)
    with pytest.raises(ValueError, match="arch act is 'gelu'; expected one of relu6, relu, silu"):
        Arch.from_dict({**get_arch('efficientnet_b0').to_dict(), 'act': 'gelu'})
    with pytest.raises(ValueError, match=r"arch se_ratio is 1.5; expected a number in \(0, 1\]"):
        get_arch('efficientnet_b0').replace(se_ratio=1.5)
    # Lite0's TF padding and BN eps are its family too: a derived arch keeps them
    lite0 = get_arch('tf_efficientnet_lite0')
    lite0_sd = _timm_seed('tf_efficientnet_lite0').state_dict()
    with pytest.raises(RemapError, match="target arch has pad_type '', seed arch has 'same'"):
        remap_state_dict(lite0_sd, lite0, lite0.replace(pad_type=''), lite0_sd)
    with pytest.raises(RemapError, match="target arch has bn_eps None, seed arch has 0.001"):
        remap_state_dict(lite0_sd, lite0, lite0.replace(bn_eps=None), lite0_sd)


def test_timm_seed_weights_come_from_the_arch_seed(effnet, monkeypatch):
    # seed_weights='timm' asks timm's hub mechanism for the seed the arch records (offline here: intercepted)
    import fna_zoo.detection.backbones as backbones

    asked = []

    def fake_create_model(name, pretrained=False, **kwargs):
        asked.append((name, pretrained))
        return effnet

    monkeypatch.setattr(backbones.timm, 'create_model', fake_create_model)
    derived = _with_ops(get_arch('efficientnet_b0'), lambda si, o: 'k5_e3' if si == 3 and o != 'skip' else o)
    model = build_retinanet(derived, seed_weights='timm', num_classes=3)
    assert asked == [('efficientnet_b0', True)]
    assert torch.equal(model.backbone.body.conv_stem.weight, effnet.conv_stem.weight)
    assert timm.models.get_pretrained_cfg('efficientnet_b0').hf_hub_id == 'timm/efficientnet_b0.ra_in1k'

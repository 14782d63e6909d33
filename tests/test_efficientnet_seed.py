"""EfficientNet-B0 as a seed: its `Arch` (SiLU, SE) is timm's model, remaps, counts and feeds both detectors."""
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


@pytest.fixture(scope='module')
def effnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(timm.create_model('efficientnet_b0', num_classes=0)).eval()


@pytest.fixture(scope='module')
def effnet_file(effnet, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('effnet') / 'efficientnet_b0.pth'
    torch.save(effnet.state_dict(), path)
    return str(path)


def _with_ops(arch: Arch, fn) -> Arch:
    return arch.replace(stages=tuple(Stage(s.out_chs, s.stride, tuple(fn(si, o) for o in s.ops))
                                     for si, s in enumerate(arch.stages)))


def test_arch_is_timms_efficientnet_b0(effnet, effnet_file):
    seed = get_arch('efficientnet_b0')
    assert (seed.act, seed.se_ratio, seed.seed, seed.head_chs) == ('silu', 0.25, 'efficientnet_b0', 1280)
    assert seed == Arch.from_timm_arch_def(EFFNET_B0_TIMM_ARCH_DEF, stem_chs=32, head_chs=1280, act='silu',
                                           seed='efficientnet_b0')
    model = build_backbone(seed, effnet_file).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in effnet.state_dict().items()}
    assert isinstance(model.blocks[1][0].bn1.act, torch.nn.SiLU)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), effnet(x))


def test_se_widths_follow_timm():
    # timm divides the ratio by the expansion, then rounds mid * ratio; widths must agree for any e and input
    from timm.models._efficientnet_blocks import SqueezeExcite

    for in_chs in (8, 13, 24, 40, 112, 190):
        for e in (1, 3, 6):
            se = SqueezeExcite(in_chs * e, rd_ratio=0.25 / float(e))
            assert se.conv_reduce.out_channels == se_reduce_chs(0.25, in_chs, e)


def test_remap_into_itself_is_identity(effnet):
    seed = get_arch('efficientnet_b0')
    sd = effnet.state_dict()
    out = remap_state_dict(sd, seed, seed, sd)
    assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)


def test_larger_kernels_preserve_the_function(effnet, effnet_file):
    seed = get_arch('efficientnet_b0')
    grown = _with_ops(seed, lambda si, o: o if o == 'skip' else f"k7_e{o.split('_e')[1]}")
    model = build_backbone(grown, effnet_file).eval()
    assert model.blocks[5][0].conv_dw.kernel_size == (7, 7)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        diff = (model(x) - effnet(x)).abs().max().item()
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


@pytest.mark.parametrize('change', ['seed', 'k7', 'wide', 'narrow'])
def test_count_arch_equals_count_model(change):
    seed = get_arch('efficientnet_b0')
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


def test_detectors_take_the_effnet_arch(effnet_file, effnet):
    retina = build_retinanet('efficientnet_b0', seed_weights=effnet_file, num_classes=3)
    body = retina.backbone.body
    assert body.feature_info.channels() == [40, 112, 320] and body.feature_info.reduction() == [8, 16, 32]
    assert torch.equal(body.blocks[5][0].se.conv_reduce.weight, effnet.blocks[5][0].se.conv_reduce.weight)
    ssd = build_ssdlite('efficientnet_b0', seed_weights=effnet_file, num_classes=3).eval()
    # the tap: the expansion of the first stride-32 layer (112 x 6), then the 1280 head conv
    assert ssd.backbone.out_channels == [672, 1280, 512, 256, 256, 128]
    feats = ssd.backbone(torch.zeros(1, 3, 320, 320))
    assert [f.shape[1] for f in feats.values()] == ssd.backbone.out_channels


def test_family_mismatch_and_bad_fields_are_clear(effnet_file, seed_file):
    with pytest.raises(RemapError, match="target arch has act 'relu6', seed arch has 'silu'"):
        build_backbone(get_arch('mobilenetv2_100'), effnet_file, seed_arch='efficientnet_b0')
    with pytest.raises(RemapError, match="target arch has se_ratio 0.25, seed arch has None"):
        build_backbone(get_arch('mobilenetv2_100').replace(se_ratio=0.25), seed_file)
    with pytest.raises(ValueError, match="arch act is 'gelu'; expected one of relu6, relu, silu"):
        Arch.from_dict({**get_arch('efficientnet_b0').to_dict(), 'act': 'gelu'})
    with pytest.raises(ValueError, match=r"arch se_ratio is 1.5; expected a number in \(0, 1\]"):
        get_arch('efficientnet_b0').replace(se_ratio=1.5)


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

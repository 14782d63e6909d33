"""Parameter remapping: function preservation, the depth/width/kernel rules, and loading through timm."""
import pytest
import timm
import torch

from fna_zoo import Arch, RemapError, Stage, build_backbone, get_arch, remap_state_dict
from fna_zoo.remap import check_state_dict

SEED = get_arch('mobilenetv2_100')


def _with_ops(arch: Arch, op: str) -> Arch:
    """Same depths, every searchable layer (stages 1..6) set to `op`."""
    stages = [arch.stages[0]] + [Stage(s.out_chs, s.stride, tuple(op for _ in s.ops)) for s in arch.stages[1:]]
    return Arch(arch.stem_chs, tuple(stages), arch.head_chs)


def test_same_arch_is_identity(seed_model, seed_state_dict, image):
    model = build_backbone(SEED, seed_state_dict, num_classes=1000).eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, seed_state_dict[k]), k
    assert torch.equal(model(image), seed_model(image))


@pytest.mark.parametrize('features_only', [False, True])
def test_kernel_remap_is_function_preserving(seed_model, seed_state_dict, image, features_only):
    k7 = _with_ops(SEED, 'k7_e6')
    kw = dict(features_only=True, out_indices=(1, 2, 3, 4)) if features_only else dict(num_classes=1000)
    model = build_backbone(k7, seed_state_dict, **kw).eval()
    assert model.blocks[3][0].conv_dw.kernel_size == (7, 7)
    ref = timm.create_model('mobilenetv2_100', features_only=True, out_indices=(1, 2, 3, 4)).eval() \
        if features_only else seed_model
    if features_only:
        ref.load_state_dict(seed_state_dict, strict=False)
    outs, refs = model(image), ref(image)
    for o, r in zip(outs if features_only else [outs], refs if features_only else [refs]):
        assert (o - r).abs().max() < 1e-5


def test_published_retinanet_remap_rules(seed_state_dict):
    arch = get_arch('fna_retinanet_backbone')
    sd = build_backbone(arch, seed_state_dict).state_dict()
    for k in [k for k in sd if k.startswith(('conv_stem', 'bn1', 'blocks.0.0'))]:
        assert torch.equal(sd[k], seed_state_dict[k]), k  # stem and first block are the seed's
    # stage 2 layer 0 is k7_e6: the seed 3x3 at the centre, zeros around
    w, s = sd['blocks.2.0.conv_dw.weight'], seed_state_dict['blocks.2.0.conv_dw.weight']
    assert w.shape == (144, 1, 7, 7) and torch.equal(w[:, :, 2:5, 2:5], s)
    ring = w.clone()
    ring[:, :, 2:5, 2:5] = 0
    assert ring.abs().sum() == 0
    # stage 3 (seed depth 4) maps one to one; its layer 2 is k7_e6 from seed layer 2
    assert torch.equal(sd['blocks.3.2.conv_dw.weight'][:, :, 2:5, 2:5], seed_state_dict['blocks.3.2.conv_dw.weight'])
    # stage 5 has 4 layers, the seed 3: layer 3 copies the last seed layer (2)
    for name in ('conv_pw.weight', 'bn1.running_var', 'conv_pwl.weight', 'bn3.weight'):
        assert torch.equal(sd[f'blocks.5.3.{name}'], seed_state_dict[f'blocks.5.2.{name}']), name
    # stage 5 layer 2 is k7_e3: the leading 3*C_in of the seed's 6*C_in expansion channels
    assert torch.equal(sd['blocks.5.2.conv_pw.weight'], seed_state_dict['blocks.5.2.conv_pw.weight'][:480])
    assert torch.equal(sd['blocks.5.2.conv_pwl.weight'], seed_state_dict['blocks.5.2.conv_pwl.weight'][:, :480])
    assert torch.equal(sd['blocks.5.2.bn2.running_mean'], seed_state_dict['blocks.5.2.bn2.running_mean'][:480])


def test_bn_gamma_width_selection(seed_state_dict):
    arch = get_arch('fna_retinanet_backbone')
    sd = build_backbone(arch, seed_state_dict, width='bn_gamma').state_dict()
    gamma = seed_state_dict['blocks.5.2.bn1.weight'].abs() + seed_state_dict['blocks.5.2.bn2.weight'].abs()
    keep = torch.topk(gamma, 480).indices.sort().values
    assert not torch.equal(keep, torch.arange(480))
    assert torch.equal(sd['blocks.5.2.conv_pw.weight'], seed_state_dict['blocks.5.2.conv_pw.weight'][keep])
    assert torch.equal(sd['blocks.5.2.conv_dw.weight'][:, :, 2:5, 2:5], seed_state_dict['blocks.5.2.conv_dw.weight'][keep])
    assert torch.equal(sd['blocks.5.2.conv_pwl.weight'], seed_state_dict['blocks.5.2.conv_pwl.weight'][:, keep])


def test_shrinking_stage_width_keeps_residuals_aligned(seed_state_dict):
    # stage 2 (32 ch) shrinks to 24 with bn_gamma: every tensor touching that group uses the same channels
    a = SEED
    stages = list(a.stages)
    stages[2] = Stage(24, 2, stages[2].ops)
    narrow = Arch(a.stem_chs, tuple(stages), a.head_chs)
    sd = build_backbone(narrow, seed_state_dict, width='bn_gamma').state_dict()
    imp = sum(seed_state_dict[f'blocks.2.{i}.bn3.weight'].abs() for i in range(3))
    keep = torch.topk(imp, 24).indices.sort().values
    for i in range(3):
        assert torch.equal(sd[f'blocks.2.{i}.bn3.weight'], seed_state_dict[f'blocks.2.{i}.bn3.weight'][keep])
    # the next stage's first layer reads those channels; its expansion (6 * 24 = 144 of 192) shrinks too
    mid = seed_state_dict['blocks.3.0.bn1.weight'].abs() + seed_state_dict['blocks.3.0.bn2.weight'].abs()
    rows = torch.topk(mid, 144).indices.sort().values
    assert torch.equal(sd['blocks.3.0.conv_pw.weight'], seed_state_dict['blocks.3.0.conv_pw.weight'][rows][:, keep])


def test_grown_widths_get_noise_not_dead_channels(seed_model, seed_state_dict, image):
    wide = _with_ops(SEED, 'k3_e9')  # expansion 6 -> 9 everywhere: new channels
    model = build_backbone(wide, seed_state_dict, num_classes=1000).eval()
    sd = model.state_dict()
    w = sd['blocks.3.1.conv_pw.weight']  # (576, 64, 1, 1), seed has 384 filters
    assert torch.equal(w[:384], seed_state_dict['blocks.3.1.conv_pw.weight'])
    new = w[384:]
    assert new.abs().min() > 0 and new.abs().max() < 1e-4
    assert torch.equal(sd['blocks.3.1.bn1.weight'][384:], torch.ones(192))  # BN keeps its init
    assert sd['blocks.3.1.conv_pwl.weight'][:, 384:].abs().max() < 1e-4
    # near function-preserving, and the new channels receive gradient
    assert (model(image) - seed_model(image)).abs().max() < 1e-3
    model.train()
    model(image).sum().backward()
    assert model.blocks[3][1].conv_pw.weight.grad[384:].abs().sum() > 0
    assert model.blocks[3][1].conv_pwl.weight.grad[:, 384:].abs().sum() > 0


def test_noise_is_seeded(seed_state_dict):
    wide = _with_ops(SEED, 'k3_e9')
    init = build_backbone(wide).state_dict()
    a = remap_state_dict(seed_state_dict, SEED, wide, init, seed=3)
    b = remap_state_dict(seed_state_dict, SEED, wide, init, seed=3)
    c = remap_state_dict(seed_state_dict, SEED, wide, init, seed=4)
    key = 'blocks.3.1.conv_pw.weight'
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_kernel_shrink_is_centre_crop(seed_state_dict):
    k7 = _with_ops(SEED, 'k7_e6')
    big = build_backbone(k7, seed_state_dict)
    sd7 = big.state_dict()
    back = remap_state_dict(sd7, k7, SEED, build_backbone(SEED).state_dict())
    assert torch.equal(back['blocks.4.1.conv_dw.weight'], seed_state_dict['blocks.4.1.conv_dw.weight'])


def test_errors_name_key_and_shapes(seed_state_dict):
    arch = get_arch('fna_retinanet_backbone')
    init = build_backbone(arch).state_dict()
    bad = dict(seed_state_dict)
    bad['blocks.1.0.conv_pw.weight'] = torch.zeros(10, 16, 1, 1)
    with pytest.raises(RemapError, match=r"key 'blocks.1.0.conv_pw.weight' has shape \(10, 16, 1, 1\), "
                                         r"expected \(96, 16, 1, 1\)"):
        remap_state_dict(bad, SEED, arch, init)
    missing = {k: v for k, v in seed_state_dict.items() if k != 'bn1.running_var'}
    with pytest.raises(RemapError, match=r"no key 'bn1.running_var' \(expected shape \(32,\)\)"):
        remap_state_dict(missing, SEED, arch, init)
    short = Arch(SEED.stem_chs, SEED.stages[:4] + SEED.stages[5:6], None)  # still output stride 32 (buildable)
    with pytest.raises(RemapError, match='target arch has 5 stages, seed arch has 7'):
        remap_state_dict(seed_state_dict, SEED, short, build_backbone(short).state_dict())
    e1 = Arch.from_fna_string("[[32, 16], ['k3_e6'], 1]")
    with pytest.raises(RemapError, match=r"target key 'blocks.0.0.conv_pw.weight' \(ir block\) has no counterpart"):
        remap_state_dict(seed_state_dict, SEED, e1.replace(stages=e1.stages + SEED.stages[1:]),
                         build_backbone(e1.replace(stages=e1.stages + SEED.stages[1:])).state_dict())
    with pytest.raises(ValueError, match="width mode 'top' is unknown"):
        remap_state_dict(seed_state_dict, SEED, arch, init, width='top')


# ------------------------------------------------------------------ through timm.create_model
def test_timm_pretrained_file_remaps_seed(seed_file, seed_state_dict, image):
    ref = build_backbone('fna_retinanet_backbone', seed_state_dict).eval()
    model = timm.create_model('fna_retinanet_backbone', pretrained=True,
                              pretrained_cfg_overlay=dict(file=seed_file)).eval()
    assert model.pretrained_cfg['tag'] == 'paramremap_in1k'
    assert torch.equal(model(image), ref(image))
    feats = timm.create_model('fna_retinanet_backbone', pretrained=True, features_only=True,
                              out_indices=(1, 2, 3, 4), pretrained_cfg_overlay=dict(file=seed_file)).eval()
    assert torch.equal(feats(image)[-1], ref.forward_features(image))


def test_timm_pretrained_safetensors(seed_state_dict, tmp_path, image):
    safetensors = pytest.importorskip('safetensors.torch')
    path = tmp_path / 'seed.safetensors'
    safetensors.save_file({k: v.contiguous() for k, v in seed_state_dict.items()}, str(path))
    model = timm.create_model('fna_ssdlite_backbone', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    ref = build_backbone('fna_ssdlite_backbone', seed_state_dict).eval()
    assert torch.equal(model(image), ref(image))


def test_retrained_weights_load_unchanged(seed_state_dict, tmp_path, image):
    trained = build_backbone('fna_retinanet_backbone', seed_state_dict)
    with torch.no_grad():
        trained.blocks[2][0].conv_dw.weight.add_(0.5)  # "retraining"
    trained.eval()
    path = tmp_path / 'fna_retinanet_coco.pth'
    torch.save(trained.state_dict(), path)
    for kw in (dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path))), dict(checkpoint_path=str(path))):
        model = timm.create_model('fna_retinanet_backbone.coco_retrain', **kw).eval()
        assert torch.equal(model(image), trained(image))


def test_local_dir_round_trip(seed_state_dict, tmp_path, image):
    from timm.models import save_for_hf

    trained = build_backbone('fna_ssdlite_backbone', seed_state_dict).eval()
    timm_model = timm.create_model('fna_ssdlite_backbone')
    timm_model.load_state_dict(trained.state_dict())
    save_for_hf(timm_model, str(tmp_path / 'export'))
    model = timm.create_model(f'local-dir:{tmp_path / "export"}', pretrained=True).eval()
    assert torch.equal(model(image), trained(image))


def test_pretrained_errors(tmp_path):
    other = tmp_path / 'resnet.pth'
    torch.save(timm.create_model('resnet18').state_dict(), other)
    with pytest.raises(RemapError, match=r"checkpoint fits neither the model \(key 'conv_stem.weight': missing"):
        timm.create_model('fna_retinanet_backbone', pretrained=True, pretrained_cfg_overlay=dict(file=str(other)))
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(Exception):
        timm.create_model('fna_retinanet_backbone', pretrained=True, pretrained_cfg_overlay=dict(file=str(corrupt)))
    with pytest.raises(FileNotFoundError, match='seed weights file'):
        build_backbone('fna_retinanet_backbone', tmp_path / 'nope.pth')


def test_check_state_dict_accepts_full_checkpoint_for_backbone_arch(seed_state_dict):
    check_state_dict(seed_state_dict, get_arch('mobilenetv2_100').replace(head_chs=None))

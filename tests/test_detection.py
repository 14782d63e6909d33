"""Detectors: the paper's whole-detector counts, forward/loss on FNA and plain timm backbones, errors."""
import pytest
import torch

from fna_zoo import count_model
from fna_zoo.detection import DetectorCore, build_detector, build_retinanet, build_ssdlite


@pytest.mark.parametrize('builder, backbone, size, gmadds, mparams', [
    # FNA paper table (method.md section 6): whole detectors, 80 classes
    (build_retinanet, 'mobilenetv2_100', (800, 1088), 133.05, 11.49),
    (build_retinanet, 'fna_retinanet_backbone', (800, 1088), 133.03, 11.73),
    (build_ssdlite, 'mobilenetv2_100', (320, 320), 0.81, 4.32),
    (build_ssdlite, 'fna_ssdlite_backbone', (320, 320), 0.88, 4.63),
])
def test_paper_detector_counts(builder, backbone, size, gmadds, mparams):
    c = count_model(DetectorCore(builder(backbone, num_classes=80)), (3, *size))
    assert round(c.gmadds, 2) == gmadds and round(c.mparams, 2) == mparams


@pytest.mark.parametrize('backbone, head_norm, madds, params', [
    # whole SSDLite at 320x320, 81 classes (80 + background); head_norm=False: torchvision's biased 1x1 conv ends,
    # True: FNA's 1x1 conv + BN (SSDLightHead)
    ('mobilenetv2_100', False, 808_424_344, 4_320_438),
    ('mobilenetv2_100', True, 808_218_304, 4_322_988),
    ('fna_ssdlite_backbone', False, 880_539_544, 4_627_766),
    ('fna_ssdlite_backbone', True, 880_333_504, 4_630_316),
])
def test_ssdlite_head_forms_exact_counts(backbone, head_norm, madds, params):
    c = count_model(DetectorCore(build_ssdlite(backbone, num_classes=80, head_norm=head_norm)), (3, 320, 320))
    assert (c.madds, c.params) == (madds, params)


def test_ssdlite_head_forms_differ_by_the_bias_and_bn():
    # torchvision's form: + one bias add per output element (20x20x4 + 10x10x6 + 5x5x6 + 3x3x6 + 2x2x4 + 1x1x4
    # anchors x (81 + 4) = 206,040 MAdds); one bias per channel instead of BN gamma/beta (-30 anchors x 85 = -2,550)
    tv, fna = (count_model(DetectorCore(build_ssdlite('fna_ssdlite_backbone', num_classes=80, head_norm=h)),
                           (3, 320, 320)) for h in (False, True))
    assert (tv.madds - fna.madds, tv.params - fna.params) == (206_040, -2_550)
    model = build_ssdlite('fna_ssdlite_backbone', num_classes=80, head_norm=True)
    block = model.head.classification_head.module_list[0]
    assert block[1].bias is None and isinstance(block[2], torch.nn.BatchNorm2d) and block[2].eps == 1e-3
    assert block[1].out_channels == block[2].num_features == 4 * 81


def test_fna_ssdlite_configs_use_fna_head_form():
    from pathlib import Path

    from fna_zoo.engine import DEFAULTS, load_config
    from fna_zoo.detection import model_kwargs
    from fna_zoo.nas.config import SEARCH_DEFAULTS

    root = Path(__file__).resolve().parents[1] / 'configs'
    for name, defaults in (('ssdlite_retrain', DEFAULTS), ('fna_ssdlite_search', SEARCH_DEFAULTS)):
        cfg = load_config(root / f'{name}.yaml', defaults=defaults)
        assert model_kwargs(cfg, build_ssdlite)['head_norm'] is True, name


def _targets(n: int, num_classes: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * 60
        wh = 20 + torch.rand(3, 2, generator=g) * 40
        out.append({'boxes': torch.cat([xy, xy + wh], 1), 'labels': torch.randint(0, num_classes, (3,), generator=g)})
    return out


@pytest.mark.parametrize('name, backbone, kwargs', [
    ('retinanet', 'fna_retinanet_backbone', dict(min_size=128, max_size=128, head_width=32)),
    ('retinanet', 'efficientnet_b0', dict(min_size=128, max_size=128, head_width=32)),
    ('ssdlite', 'fna_ssdlite_backbone', dict(image_size=128)),
    ('ssdlite', 'fna_ssdlite_backbone', dict(image_size=128, head_norm=True)),
    ('ssdlite', 'efficientnet_b0', dict(image_size=128)),
])
def test_train_and_eval_forward(name, backbone, kwargs):
    torch.manual_seed(0)
    model = build_detector(name, backbone=backbone, num_classes=5, score_thresh=0.0, **kwargs)
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    losses = model(images, _targets(2, 5))
    assert set(losses) == {'classification', 'bbox_regression'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2 and len(dets[0]['boxes']) > 0
    assert dets[0]['labels'].min() >= 0 and dets[0]['labels'].max() < 5  # labels 0..C-1 for both detectors
    assert (dets[1]['boxes'][:, 2] <= 128 + 1e-3).all() and (dets[1]['boxes'][:, 3] <= 96 + 1e-3).all()


def test_ssdlite_taps_fna_features():
    model = build_ssdlite('fna_ssdlite_backbone').eval()
    assert model.backbone.out_channels == [576, 1280, 512, 256, 256, 128]
    feats = model.backbone(torch.zeros(1, 3, 320, 320))
    assert [f.shape[1] for f in feats.values()] == model.backbone.out_channels
    assert [f.shape[-1] for f in feats.values()] == [20, 10, 5, 3, 2, 1]


def test_retinanet_fpn_levels():
    model = build_retinanet('fna_retinanet_backbone')
    assert model.backbone.body.feature_info.channels() == [32, 96, 320]
    feats = model.backbone(torch.zeros(1, 3, 800, 1088))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    assert all(f.shape[1] == 256 for f in feats.values())


def test_seed_weights_reach_the_backbone(seed_file, seed_state_dict):
    model = build_retinanet('fna_retinanet_backbone', seed_weights=seed_file)
    body = model.backbone.body
    assert torch.equal(body.conv_stem.weight, seed_state_dict['conv_stem.weight'])
    assert torch.equal(body.blocks[2][0].conv_dw.weight[:, :, 2:5, 2:5], seed_state_dict['blocks.2.0.conv_dw.weight'])


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown detector 'yolo'; expected one of retinanet, ssdlite"):
        build_detector('yolo')
    with pytest.raises(ValueError, match="unknown backbone 'resnet_nope'"):
        build_retinanet('resnet_nope')
    with pytest.raises(ValueError, match='SSDLite needs a timm EfficientNet-family model with a 1x1 head conv'):
        build_ssdlite('fna_retinanet_backbone')  # the RetinaNet arch has no 1280 head conv
    with pytest.raises(FileNotFoundError, match="seed weights file '.*nope.pth' does not exist"):
        build_retinanet('fna_retinanet_backbone', seed_weights=str(tmp_path / 'nope.pth'))


def test_plain_timm_backbone_takes_its_own_weights(tmp_path):
    import timm

    ref = timm.create_model('efficientnet_b0')
    path = tmp_path / 'effb0.pth'
    torch.save(ref.state_dict(), path)
    model = build_retinanet('efficientnet_b0.ra_in1k', seed_weights=str(path), num_classes=3)  # a tagged timm name
    assert model.backbone.body.feature_info.channels() == [40, 112, 320]
    assert torch.equal(model.backbone.body.conv_stem.weight, ref.conv_stem.weight)


def test_retinanet_anchor_size_scales_every_level():
    from torchvision.models.detection.retinanet import _default_anchorgen

    default = build_retinanet('mobilenetv2_100', num_classes=1, head_width=16).anchor_generator
    assert default.sizes == _default_anchorgen().sizes and default.aspect_ratios == _default_anchorgen().aspect_ratios
    small = build_retinanet('mobilenetv2_100', num_classes=1, head_width=16, anchor_size=16).anchor_generator
    assert small.sizes[0] == (16, 20, 25) and small.sizes[1:] == default.sizes[:-1]
    assert small.num_anchors_per_location() == default.num_anchors_per_location()


# ------------------------------------------------------------------------------------------- detector specs
@pytest.mark.parametrize('name', ['retinanet', 'ssdlite'])
def test_spec_builds_and_recognises_its_detector(name):
    import inspect

    from fna_zoo.detection import DETECTORS, get_detector, spec_of

    spec = get_detector(name)
    assert DETECTORS[name] is spec and spec.name == name
    assert inspect.signature(spec) == inspect.signature(spec.build)  # a spec stands where its builder did
    kwargs = {spec.size_kwarg: 64} if spec.size_kwarg else dict(min_size=64, max_size=64, head_width=16)
    torch.manual_seed(0)
    model = spec(backbone='mobilenetv2_100', num_classes=3, **kwargs).eval()
    assert spec_of(model) is spec
    assert spec.export_size(kwargs) == (64, 64)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # the neck on the neck's inputs gives the maps the detector's head reads
        maps = spec.neck(model)(*spec.neck_inputs(model, x))
        assert [m.shape for m in maps] == [m.shape for m in model.backbone(x).values()]


def test_spec_traits_are_fnas():
    from fna_zoo.detection import DETECTORS

    r, s = DETECTORS['retinanet'], DETECTORS['ssdlite']
    assert (r.input_size, s.input_size) == ((800, 1088), (320, 320))
    assert (r.export_size({}), s.export_size({})) == ((1344, 1344), (320, 320))
    assert (r.score_mode, r.background_class, s.score_mode, s.background_class) == ('sigmoid', None, 'softmax', 0)
    assert (r.head_conv, r.taps_expansion, s.head_conv, s.taps_expansion) == (False, False, True, True)
    assert (r.default_backbone, s.default_backbone) == ('fna_retinanet_backbone', 'fna_ssdlite_backbone')


def test_registry_refuses_a_taken_name_and_a_foreign_detector():
    import dataclasses

    from fna_zoo.detection import DETECTORS, register_detector, spec_of

    with pytest.raises(ValueError, match="detector 'retinanet' is already registered"):
        register_detector(dataclasses.replace(DETECTORS['retinanet']))
    with pytest.raises(ValueError, match='detector is a Linear; expected a torchvision RetinaNet or SSD'):
        spec_of(torch.nn.Linear(1, 1))


def test_no_code_outside_the_detectors_branches_on_a_detector_name():
    import re
    from pathlib import Path

    from fna_zoo.detection import DETECTORS

    names = '|'.join(list(DETECTORS) + [d.label for d in DETECTORS.values()])
    branch = re.compile(rf"""(==|!=|\bin \(|startswith\()\s*['"]({names})['"]|['"]({names})['"]\s*(==|!=)""")
    package = Path(__file__).resolve().parents[1] / 'fna_zoo'
    hits = [f'{p.relative_to(package)}:{n}' for p in package.rglob('*.py') if p.parent.name != 'detection'
            for n, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert not hits, f'ask the detector spec (fna_zoo.detection.DETECTORS) instead: {hits}'

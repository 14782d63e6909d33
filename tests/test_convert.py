"""Conversions into timm keys, with no download: torchvision MobileNetV2 -> timm mobilenetv2_100 (random-init
torchvision weights), efficientnet_pytorch EfficientNet-Lite0 -> timm tf_efficientnet_lite0 (a random state dict in
that layout, checked against a forward pass written from the layout itself)."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision

from conftest import lite0_blocks, lite0_efficientnet_pytorch_state_dict, randomize_bn
from fna_zoo import build_backbone, get_arch
from fna_zoo.convert import (convert_efficientnet_lite0, convert_torchvision_mobilenetv2, efficientnet_lite0_key,
                             torchvision_mobilenetv2_key)


@pytest.fixture(scope='module')
def tv_model():
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.mobilenet_v2(), seed=3).eval()


def test_converted_torchvision_weights_give_the_same_logits(tv_model):
    sd = convert_torchvision_mobilenetv2(tv_model.state_dict())
    assert len(sd) == len(tv_model.state_dict()) == 314
    timm_model = timm.create_model('mobilenetv2_100').eval()
    timm_model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = tv_model(x)
        assert torch.equal(timm_model(x), want)
        # the same through the project's own builder of the seed arch (remapping a seed into itself)
        seed = build_backbone(get_arch('mobilenetv2_100'), sd, num_classes=1000).eval()
        assert torch.equal(seed(x), want)


@pytest.mark.parametrize('key_of, source, timm_key', [
    (torchvision_mobilenetv2_key, 'features.0.0.weight', 'conv_stem.weight'),
    (torchvision_mobilenetv2_key, 'features.0.1.running_var', 'bn1.running_var'),
    (torchvision_mobilenetv2_key, 'features.1.conv.0.0.weight', 'blocks.0.0.conv_dw.weight'),
    (torchvision_mobilenetv2_key, 'features.1.conv.2.bias', 'blocks.0.0.bn2.bias'),
    (torchvision_mobilenetv2_key, 'features.3.conv.1.0.weight', 'blocks.1.1.conv_dw.weight'),
    (torchvision_mobilenetv2_key, 'features.17.conv.3.weight', 'blocks.6.0.bn3.weight'),
    (torchvision_mobilenetv2_key, 'features.18.1.weight', 'bn2.weight'),
    (torchvision_mobilenetv2_key, 'classifier.1.bias', 'classifier.bias'),
    (efficientnet_lite0_key, '_conv_stem.weight', 'conv_stem.weight'),
    (efficientnet_lite0_key, '_bn0.running_var', 'bn1.running_var'),
    (efficientnet_lite0_key, '_blocks.0._depthwise_conv.weight', 'blocks.0.0.conv_dw.weight'),
    (efficientnet_lite0_key, '_blocks.0._bn1.weight', 'blocks.0.0.bn1.weight'),
    (efficientnet_lite0_key, '_blocks.0._bn2.bias', 'blocks.0.0.bn2.bias'),
    (efficientnet_lite0_key, '_blocks.1._expand_conv.weight', 'blocks.1.0.conv_pw.weight'),
    (efficientnet_lite0_key, '_blocks.2._bn0.weight', 'blocks.1.1.bn1.weight'),
    (efficientnet_lite0_key, '_blocks.3._bn1.weight', 'blocks.2.0.bn2.weight'),
    (efficientnet_lite0_key, '_blocks.11._project_conv.weight', 'blocks.5.0.conv_pwl.weight'),
    (efficientnet_lite0_key, '_blocks.15._bn2.num_batches_tracked', 'blocks.6.0.bn3.num_batches_tracked'),
    (efficientnet_lite0_key, '_conv_head.weight', 'conv_head.weight'),
    (efficientnet_lite0_key, '_bn1.bias', 'bn2.bias'),
    (efficientnet_lite0_key, '_fc.weight', 'classifier.weight'),
])
def test_key_names(key_of, source, timm_key):
    assert key_of(source) == timm_key


def test_foreign_checkpoint_is_one_clear_error():
    sd = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match=r"checkpoint key 'conv1.weight' is not torchvision mobilenet_v2's"):
        convert_torchvision_mobilenetv2(sd)
    with pytest.raises(ValueError, match=r"'features.19.0.weight'"):
        convert_torchvision_mobilenetv2({'features.19.0.weight': torch.zeros(1)})


# --- EfficientNet-Lite0 in the efficientnet_pytorch layout --------------------------------------------------------
def _tf_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow "SAME" padding, written out: total max((ceil(n / s) - 1) * s + k - n, 0), the extra pixel after."""
    pads = []
    for n in (x.shape[3], x.shape[2]):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _lite0_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0's forward on an efficientnet_pytorch-layout state dict (eval BN, eps 1e-3, ReLU6)."""
    def bn(name, y):
        return F.batch_norm(y, sd[f'{name}.running_mean'], sd[f'{name}.running_var'], sd[f'{name}.weight'],
                            sd[f'{name}.bias'], False, 0.0, 1e-3)

    x = F.relu6(bn('_bn0', F.conv2d(_tf_same(x, 3, 2), sd['_conv_stem.weight'], stride=2)))
    for i, (in_c, out_c, k, s, e) in enumerate(lite0_blocks()):
        p = f'_blocks.{i}.'
        h = x if e == 1 else F.relu6(bn(p + '_bn0', F.conv2d(x, sd[p + '_expand_conv.weight'])))
        h = F.relu6(bn(p + '_bn1', F.conv2d(_tf_same(h, k, s), sd[p + '_depthwise_conv.weight'], stride=s,
                                            groups=h.shape[1])))
        h = bn(p + '_bn2', F.conv2d(h, sd[p + '_project_conv.weight']))
        x = x + h if s == 1 and in_c == out_c else h
    x = F.relu6(bn('_bn1', F.conv2d(x, sd['_conv_head.weight'])))
    return F.linear(x.mean((2, 3)), sd['_fc.weight'], sd['_fc.bias'])


def test_converted_lite0_weights_give_the_same_logits():
    raw = lite0_efficientnet_pytorch_state_dict()
    sd = convert_efficientnet_lite0(raw)
    assert len(sd) == len(raw) == 296  # as the real file
    model = timm.create_model('tf_efficientnet_lite0').eval()
    model.load_state_dict(sd, strict=True)  # no missing, no unexpected key, every shape
    for size in ((224, 224), (97, 131)):  # odd sizes: "same" padding puts the extra pixel right / bottom
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = _lite0_reference(raw, x)
            assert (model(x) - want).abs().max() < 1e-4 * want.abs().max()
            # the same through the zoo's own builder of the Lite0 seed arch
            seed = build_backbone(get_arch('tf_efficientnet_lite0'), sd, num_classes=1000).eval()
            assert torch.equal(seed(x), model(x))


def test_foreign_lite0_checkpoint_is_one_clear_error():
    with pytest.raises(ValueError, match=r"checkpoint key 'features.0.0.weight' is not efficientnet_pytorch "
                                         r"EfficientNet-Lite0's"):
        convert_efficientnet_lite0(torchvision.models.mobilenet_v2().state_dict())
    for key in ('_blocks.16._bn0.weight', '_blocks.1._se_reduce.weight', '_blocks.0._expand_conv.weight'):
        with pytest.raises(ValueError, match=repr(key).replace('.', r'\.')):  # B0's SE, a block too many, ...
            convert_efficientnet_lite0({key: torch.zeros(1)})

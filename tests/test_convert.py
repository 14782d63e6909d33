"""torchvision MobileNetV2 -> timm mobilenetv2_100 conversion (no download: random-init torchvision weights)."""
import pytest
import timm
import torch
import torchvision

from conftest import randomize_bn
from fna_zoo import build_backbone, get_arch
from fna_zoo.convert import convert_torchvision_mobilenetv2, torchvision_mobilenetv2_key


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


def test_key_names():
    assert torchvision_mobilenetv2_key('features.0.0.weight') == 'conv_stem.weight'
    assert torchvision_mobilenetv2_key('features.0.1.running_var') == 'bn1.running_var'
    assert torchvision_mobilenetv2_key('features.1.conv.0.0.weight') == 'blocks.0.0.conv_dw.weight'
    assert torchvision_mobilenetv2_key('features.1.conv.2.bias') == 'blocks.0.0.bn2.bias'
    assert torchvision_mobilenetv2_key('features.3.conv.1.0.weight') == 'blocks.1.1.conv_dw.weight'
    assert torchvision_mobilenetv2_key('features.17.conv.3.weight') == 'blocks.6.0.bn3.weight'
    assert torchvision_mobilenetv2_key('features.18.1.weight') == 'bn2.weight'
    assert torchvision_mobilenetv2_key('classifier.1.bias') == 'classifier.bias'


def test_foreign_checkpoint_is_one_clear_error():
    sd = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match=r"checkpoint key 'conv1.weight' is not torchvision mobilenet_v2's"):
        convert_torchvision_mobilenetv2(sd)
    with pytest.raises(ValueError, match=r"'features.19.0.weight'"):
        convert_torchvision_mobilenetv2({'features.19.0.weight': torch.zeros(1)})

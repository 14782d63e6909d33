"""MAdds/params counting reproduces the FNA paper's backbone figures; analytic and hook counts agree."""
import pytest
import timm
import torch

from fna_zoo import Arch, build_backbone, count_arch, count_model, get_arch
from fna_zoo.complexity import conv_out_size


@pytest.mark.parametrize('name, gmadds, mparams', [
    # FNA paper table, backbone part at 800x1088 (../shared/reference/method.md section 6.2)
    ('mobilenetv2_100', 4.85, 1.81),
    ('fna_retinanet_backbone', 4.82, 2.06),
])
def test_paper_backbone_counts(name, gmadds, mparams):
    arch = get_arch(name).replace(head_chs=None)  # the RetinaNet backbone ends at the 320-channel stage
    c = count_arch(arch, (800, 1088))
    assert round(c.gmadds, 2) == gmadds and round(c.mparams, 2) == mparams
    assert count_model(build_backbone(arch), (3, 800, 1088)) == c


def test_timm_mobilenetv2_counts():
    c = count_model(timm.create_model('mobilenetv2_100'), (3, 224, 224))
    assert c.params == 3_504_872  # timm's own figure
    assert c == count_arch(get_arch('mobilenetv2_100'), (224, 224), num_classes=1000)


@pytest.mark.parametrize('size', [(97, 131), (32, 32), (1, 1)])
def test_odd_sizes_agree(size):
    arch = Arch.from_fna_string("[[8, 8], ['k3_e1'], 1]|[[8, 16], ['k7_e3', 'k5_e6'], 2]|[[16, 16], ['k3_e6'], 2]|"
                                "[[16, 16], ['k5_e3'], 2]|[[16, 16], ['k3_e6'], 2]", head_chs=24)  # output stride 32
    assert count_model(build_backbone(arch, num_classes=3), (3, *size)) == count_arch(arch, size, num_classes=3)


def test_bias_and_linear_conventions():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=True), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 5 * 5, 2))
    c = count_model(m, (3, 5, 5))
    assert c.madds == (27 * 4 * 25 + 4 * 25) + (100 * 2 + 2)
    assert c.params == 27 * 4 + 4 + 200 + 2
    assert conv_out_size(25, 3, 2) == 13 and conv_out_size(800, 7, 2) == 400

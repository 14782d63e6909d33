"""The ground floor's answers: what a model string is (`fna_zoo.specs`) and the early input checks
(`fna_zoo.checks`)."""
import os

import pytest

from fna_zoo import load_arch
from fna_zoo.checks import check_input_size, check_output_path
from fna_zoo.specs import arch_id, arch_string, resolve_model, seed_network, timm_name


def test_timm_prefix_parsed_once():
    assert timm_name('timm:mobilenetv2_100') == 'mobilenetv2_100'
    assert timm_name('mobilenetv2_100') is None and timm_name(None) is None
    with pytest.raises(ValueError, match="unknown timm model 'nope'; expected a name from timm.list_models"):
        timm_name('timm:nope')


def test_arch_strings_and_seeds(tmp_path):
    arch = load_arch('fna_retinanet_backbone')
    fna = arch.to_fna_string()
    arch.save(tmp_path / 'a.yaml')
    for spec in ('fna_retinanet_backbone', str(tmp_path / 'a.yaml'), fna, arch.to_dict(), arch):
        assert arch_string(spec) == fna
    # a zoo arch named like a timm model is the arch; timm: forces timm's own model
    assert arch_string('mobilenetv2_100').startswith('[') and arch_string('timm:mobilenetv2_100') == 'timm:mobilenetv2_100'
    assert arch_string('resnet18') == 'timm:resnet18'
    assert seed_network('fna_retinanet_backbone') == 'mobilenetv2_100' and seed_network('timm:resnet18') == 'resnet18'
    assert seed_network(load_arch('efficientnet_b0').to_dict()) == 'efficientnet_b0'


def test_resolve_model_kinds(tmp_path):
    arch = load_arch('fna_ssdlite_backbone')
    onnx = pytest.importorskip('onnx')
    x = onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node('Identity', ['x'], ['y'])], 'g', [x],
                                   [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / 'm.onnx')
    (tmp_path / 'final.pth').write_bytes(b'')
    arch.save(tmp_path / 'a.yaml')
    kinds = {name: resolve_model(name).kind for name in (
        'fna_ssdlite_backbone', str(tmp_path / 'a.yaml'), arch.to_fna_string(), 'resnet18', 'timm:resnet18',
        str(tmp_path / 'm.onnx'), str(tmp_path / 'final.pth'))}
    assert list(kinds.values()) == ['arch', 'arch', 'arch', 'timm', 'timm', 'onnx', 'checkpoint']
    assert resolve_model('resnet18').spec == 'timm:resnet18'
    assert arch_id(resolve_model(arch.to_fna_string())) == arch_id(resolve_model(str(tmp_path / 'a.yaml')))
    assert arch_id(resolve_model(str(tmp_path / 'm.onnx'))) == ''
    with pytest.raises(ValueError, match="unknown model 'nope'; expected a zoo arch name"):
        resolve_model('nope')
    with pytest.raises(FileNotFoundError, match="arch file '.*gone.yaml' does not exist"):
        resolve_model(str(tmp_path / 'gone.yaml'))


def test_input_checks(tmp_path):
    assert check_input_size([320, 640]) == (320, 640) and check_input_size(None) is None
    with pytest.raises(ValueError, match='input size 300 x 320 for the backbone is invalid; expected H W'):
        check_input_size([300, 320], 'backbone')
    assert check_output_path(tmp_path / 'new' / 'x.onnx', '.onnx') == tmp_path / 'new' / 'x.onnx'
    assert check_output_path(tmp_path / 'x.anything') == tmp_path / 'x.anything'
    with pytest.raises(ValueError, match=r"has suffix '.json'; expected a .onnx file"):
        check_output_path(tmp_path / 'x.json', '.onnx')
    with pytest.raises(IsADirectoryError, match='is a directory'):
        check_output_path(tmp_path, None)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / 'ro'
        ro.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match='is not writable'):
            check_output_path(ro / 'x.onnx', '.onnx')


@pytest.mark.parametrize('data, message', [(b'', 'has no graph inputs or nodes'),
                                           (b'\x00\xffgarbage' * 50, r'cannot be read \(\w+\)')])
def test_unreadable_onnx_files_are_one_line(tmp_path, data, message):
    pytest.importorskip('onnx')
    (tmp_path / 'bad.onnx').write_bytes(data)
    with pytest.raises(ValueError, match=f"ONNX file '.*bad.onnx' {message}"):
        resolve_model(str(tmp_path / 'bad.onnx'))

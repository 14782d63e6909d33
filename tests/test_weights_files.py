"""One checked loader for weight files (issue 21): random bytes, a truncated file or a pickle payload given as seed
weights fail in one line before a model is built; nothing in a payload runs."""
import pickle
from pathlib import Path

import pytest
import torch

from fna_zoo.builder import build_backbone
from fna_zoo.checkpoint import check_weights_file
from fna_zoo.detection import create_backbone


class _Payload:
    def __reduce__(self):
        return (print, ('payload ran',))


@pytest.fixture
def bad_files(tmp_path, seed_file):
    files = {'random.pth': b'\x00\xff' * 100, 'random.safetensors': b'not safetensors' * 10,
             'truncated.pth': open(seed_file, 'rb').read()[:2000] if str(seed_file).endswith('.pth') else b'PK\x03\x04',
             'payload.pth': pickle.dumps(_Payload())}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({}, tmp_path / 'empty.pth')
    return tmp_path


@pytest.mark.parametrize('name', ['random.pth', 'random.safetensors', 'truncated.pth', 'payload.pth'])
def test_unreadable_seed_weights_are_one_line(bad_files, name, capsys):
    path = bad_files / name
    message = rf"seed weights file '.*{name}' is not a readable state dict \(\w+\); expected a .pth/.safetensors"
    with pytest.raises(ValueError, match=message):
        build_backbone('fna_retinanet_backbone', str(path))
    with pytest.raises(ValueError, match=message):
        create_backbone('resnet18', str(path))
    assert 'payload ran' not in capsys.readouterr().out


def test_empty_and_good_weights(bad_files, seed_file):
    with pytest.raises(ValueError, match="'.*empty.pth' holds no tensors"):
        check_weights_file(bad_files / 'empty.pth')
    assert check_weights_file(seed_file) == Path(seed_file)

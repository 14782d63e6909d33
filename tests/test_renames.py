"""Names that misled, renamed (issue 29): the old import paths and the old script path still work for one release,
warn with a `DeprecationWarning` naming the new home, and give the very objects of the new one; one activation
table (`fna_zoo.arch.ACTS`) serves the arch checks and the super network."""
import importlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}


# old module -> (new module, the names to check; None: every name of the new module's `__all__`)
ALIASES = {
    'fna_zoo._builder': ('fna_zoo.builder', None),
    'fna_zoo.bench.runner': ('fna_zoo.bench.grid', None),
    'fna_zoo.runtime.fp16': ('fna_zoo.onnxgraph', ['convert_fp16', 'convert_fp16_file', 'stamp_fp16', 'Fp16Info',
                                                   'DEFAULT_FP16_SCOPES', 'FP32_OPS', 'is_fp16_model', 'tensor_types']),
    'fna_zoo.runtime.ort': ('fna_zoo.onnxgraph', ['QUANT_OPS', 'load_onnx', 'onnx_precision', 'onnx_input_dims']),
}


@pytest.mark.parametrize('old', ALIASES)
def test_old_import_paths_are_deprecated_aliases(old):
    new, names = ALIASES[old]
    new_module = importlib.import_module(new)
    module = importlib.reload(importlib.import_module(old))  # a fresh alias table: nothing warned yet
    if names is None:
        names = new_module.__all__
        assert module.__all__ == names
    for name in names:
        # the new home is the module, or one of its submodules (`fna_zoo.onnxgraph.quant.QUANT_OPS`)
        with pytest.warns(DeprecationWarning, match=rf'^{old}\.{name} moved to {new}\.(\w+\.)?{name}; import it'):
            assert getattr(module, name) is getattr(new_module, name)
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            getattr(module, name)  # once per name
    with pytest.raises(AttributeError, match='has no attribute'):
        module.no_such_name  # noqa: B018


def test_from_import_of_an_old_path_warns_at_the_importing_line():
    importlib.reload(importlib.import_module('fna_zoo._builder'))
    with pytest.warns(DeprecationWarning) as record:
        from fna_zoo._builder import build_backbone
    from fna_zoo import builder

    assert build_backbone is builder.build_backbone
    assert record[0].filename == __file__


def test_one_activation_table():
    from fna_zoo import arch
    from fna_zoo.nas import supernet

    assert supernet.ACTS is arch.ACTS and set(arch.ACTS) == {'relu6', 'relu', 'silu'}
    for name, fn in arch.ACTS.items():
        assert supernet.CandidateOp(arch.Op.parse('k3_e6'), 8, 8, 1, name).act is fn
    with pytest.raises(ValueError, match='expected one of relu6, relu, silu'):
        arch.Arch.from_dict({**arch.get_arch('mobilenetv2_100').to_dict(), 'act': 'gelu'})


def test_old_private_activation_table_is_a_deprecated_alias():
    # NOTE: a fresh process (reloading the super network would redefine its classes under the other tests)
    code = textwrap.dedent("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            from fna_zoo.nas.supernet import _ACTS
        from fna_zoo.arch import ACTS
        assert _ACTS is ACTS, _ACTS
        print([str(w.message) for w in caught if w.category is DeprecationWarning])
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(['fna_zoo.nas.supernet._ACTS moved to fna_zoo.arch.ACTS; import it from there (the '
                                    'old path is kept for one release)'])


def test_old_predict_onnx_path_runs_the_example_with_a_warning():
    r = subprocess.run([sys.executable, 'export/predict_onnx.py', '--help'], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'DeprecationWarning: export/predict_onnx.py moved to examples/predict_onnx.py' in r.stderr
    assert 'usage:' in r.stdout and '--truth' in r.stdout
    # errors keep the example's convention: one `error:` line, exit code 2
    r = subprocess.run([sys.executable, 'export/predict_onnx.py', 'none.onnx', 'none.png'], capture_output=True,
                       text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: image 'none.png' does not exist")

"""The ONNX graph helpers' floor (`fna_zoo.onnxgraph`), the deprecation helper (`moved_names`; the old import paths
themselves: tests/test_renames.py), and the command table the `python -m` shims run through (`fna_zoo.commands`)."""
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

from fna_zoo import commands
from fna_zoo.deprecation import moved_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def import_graph():
    """(edges, cycles) of `scripts/import_graph.py` over the package, lazy imports counted."""
    spec = importlib.util.spec_from_file_location('import_graph', ROOT / 'scripts' / 'import_graph.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    edges = mod.graph(ROOT / 'fna_zoo')
    return edges, mod.levels(edges)[1]


def test_onnxgraph_is_a_floor_below_runtime_and_export(import_graph):
    edges, cycles = import_graph
    assert not [c for c in cycles if any(m.startswith(('fna_zoo.onnxgraph', 'fna_zoo.runtime')) for m in c)]
    for module, targets in edges.items():
        if module.startswith('fna_zoo.onnxgraph'):
            assert all(t.startswith('fna_zoo.onnxgraph') or t == 'fna_zoo.fileio' for t in targets), (module, targets)
    users = {m for m, targets in edges.items() if any(t.startswith('fna_zoo.onnxgraph') for t in targets)}
    assert {'fna_zoo.export.fp16', 'fna_zoo.runtime.tensorrt', 'fna_zoo.runtime.runners'} <= users


def test_entry_shims_do_not_import_the_cli(import_graph):
    edges, _ = import_graph
    for shim in ('fna_zoo.export.__main__', 'fna_zoo.assets.__main__'):
        assert not [t for t in edges[shim] if t.startswith('fna_zoo.cli')], edges[shim]


def test_moved_names_warns_once_and_names_the_new_home():
    home = type(sys)('somewhere.new')
    home.thing = 42
    getattr_ = moved_names('somewhere.old', {'thing': home})
    with pytest.warns(DeprecationWarning, match=r'somewhere\.old\.thing moved to somewhere\.new\.thing'):
        assert getattr_('thing') == 42
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert getattr_('thing') == 42


def test_command_table_matches_pyproject():
    text = (ROOT / 'pyproject.toml').read_text()
    names = [line.split('=')[0].strip() for line in text.split('[project.scripts]')[1].split('[')[0].splitlines()
             if '=' in line]
    assert 'fna-export' in names and 'fna-fetch' in names
    for name in names:
        assert commands.command_target(name) == commands._from_pyproject(name)
    assert commands.command_target('fna-export') == 'fna_zoo.cli.export:main'


def test_run_command_unknown_name(capsys, monkeypatch):
    monkeypatch.setattr(commands, 'DISTRIBUTION', 'not-installed-here')  # the checkout's pyproject.toml only
    assert commands.command_target('fna-fetch') == 'fna_zoo.cli.fetch:main'
    assert commands.run_command('fna-nothing') == 2
    assert capsys.readouterr().err.startswith("error: command 'fna-nothing' is not in the not-installed-here")



def test_shape_nodes_are_the_shape_arithmetic_only():
    """The nodes a static quantizer must leave in float: TF "same" padding's pad sizes, computed from the input's
    shape, and nothing that reads data (issue 32: quantized pad arithmetic changed Lite0's feature map sizes)."""
    import onnx
    from onnx import TensorProto, helper

    from fna_zoo.onnxgraph.quant import shape_nodes

    c = lambda name, v: helper.make_node('Constant', [], [name], name=name,  # noqa: E731
                                         value=helper.make_tensor(name, TensorProto.FLOAT, [], [v]))
    nodes = [
        helper.make_node('Shape', ['x'], ['s'], name='shape'),
        helper.make_node('Cast', ['s'], ['sf'], name='cast', to=TensorProto.FLOAT),
        c('two', 2.0),
        helper.make_node('Div', ['sf', 'two'], ['half'], name='div'),
        helper.make_node('Ceil', ['half'], ['up'], name='ceil'),
        helper.make_node('Sub', ['up', 'half'], ['extra'], name='sub'),
        helper.make_node('Cast', ['extra'], ['pads'], name='to_int', to=TensorProto.INT64),
        helper.make_node('Pad', ['x', 'pads'], ['xp'], name='pad'),
        helper.make_node('Relu', ['xp'], ['y'], name='relu'),
        helper.make_node('Mul', ['xp', 'two'], ['z'], name='data_mul'),
    ]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, None),
                               helper.make_tensor_value_info('z', TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    assert shape_nodes(model) == ['shape', 'cast', 'div', 'ceil', 'sub', 'to_int']
    assert shape_nodes(onnx.ModelProto()) == []

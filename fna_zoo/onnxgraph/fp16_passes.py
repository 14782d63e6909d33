"""The passes of the fp16 conversion (`fna_zoo.onnxgraph.fp16.convert_fp16`), each one step over a working state.

`refuse_unconvertible` checks the input; `start` copies the model into an `Fp16Graph` (element types inferred);
`PASSES`, in order, rewrite the copy:

1. `read_weights_directly`: an `Identity` of a weight (the exporter's de-duplication of equal weights) is dropped
   and its readers read the weight;
2. `find_constants`: float initializers and float `Constant` nodes (their type follows their readers);
3. `choose_precisions`: fp16 for every node under the scopes (not `Constant`, not `FP32_OPS`), float32 for the
   rest;
4. `find_constant_needs`: the types each constant's readers need;
5. `retype_nodes`: fp16 nodes' float outputs (and their type attributes) become fp16; a graph output made in
   fp16 is renamed, to be cast back at the end;
6. `convert_constants`: a constant is converted in place when every reader is fp16, copied when both sides read it;
7. `insert_casts`: the node list rebuilt with a Cast wherever a tensor crosses between the precisions;
8. `cast_outputs_back`: the fp16 graph outputs cast back to float32 under their own names;
9. `write_graph`: the new node list written, unread initializers dropped.

NOTE: the passes keep the order and the data structures of the single function they were split from (sets where
it had sets), so a model converts to the same bytes as before the split.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .fp16_info import Fp16Info
from .precision import is_fp16_model
from .quant import quant_ops

if TYPE_CHECKING:
    import onnx

__all__ = ['FP32_OPS', 'FP16_MAX', 'Fp16Graph', 'PASSES', 'refuse_unconvertible', 'start']

# ops that stay float32 wherever they are (ONNX defines NonMaxSuppression and RoiAlign's boxes for float32)
FP32_OPS = frozenset({'NonMaxSuppression', 'RoiAlign'})
# float inputs whose type is not the node's data type (ONNX type constraints of their own): left as they are
_OWN_TYPE_INPUTS: dict[str, frozenset[int]] = {'Resize': frozenset({1, 2}), 'Upsample': frozenset({1})}
FP16_MAX = 65504.0
# NOTE: onnx.TensorProto.FLOAT and FLOAT16 (fixed by the ONNX spec), so this module needs no onnx to import
FLOAT, HALF = 1, 10


@dataclass
class Fp16Graph:
    """The working state of one conversion: the copy being rewritten and what the passes found out.

    Args:
        model: The copy of the input model (rewritten in place).
        scopes: Node-name prefixes of the fp16 nodes (None: every node).
        info: What the conversion did so far.
        elem: Element type of every tensor of the input (shape inference, initializers).
        inits: The copy's initializers by name.
        outputs: The graph's output names.
        nodes: The nodes, `Identity` of weights dropped (`read_weights_directly`).
        const_nodes: Float `Constant` nodes by output name.
        consts: Names of the float constants (initializers and `Constant` outputs).
        is_half: `id(node)` -> whether the node runs in fp16.
        needs: Constant -> the types its readers need.
        produced: Tensor -> the type it has after the conversion.
        renamed_outputs: Graph output made in fp16 -> its fp16 name.
        const_as: (constant, type) -> the name of the constant in that type.
        extra_consts: `Constant` -> its fp16 copy (a node placed right after it).
        final: The rebuilt node list (`insert_casts`, `cast_outputs_back`).
    """

    model: Any
    scopes: tuple[str, ...] | None
    info: Fp16Info
    elem: dict[str, int]
    inits: dict[str, Any]
    outputs: set[str]
    nodes: list[Any] = field(default_factory=list)
    const_nodes: dict[str, Any] = field(default_factory=dict)
    consts: set[str] = field(default_factory=set)
    is_half: dict[int, bool] = field(default_factory=dict)
    needs: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    produced: dict[str, int] = field(default_factory=dict)
    renamed_outputs: dict[str, str] = field(default_factory=dict)
    const_as: dict[tuple[str, int], str] = field(default_factory=dict)
    extra_consts: dict[str, Any] = field(default_factory=dict)
    final: list[Any] = field(default_factory=list)

    def required(self, node: Any, i: int) -> int:
        """The type node input `i` must have: fp16 for an fp16 node (but inputs with a type of their own).

        Args:
            node: A node of `nodes`.
            i: Its input index.
        """
        return HALF if self.is_half[id(node)] and i not in _OWN_TYPE_INPUTS.get(node.op_type, ()) else FLOAT


def _fp16_array(values: np.ndarray, info: Fp16Info) -> np.ndarray:
    """float32 values as fp16, clipped to the fp16 range (NaN and inf kept), counting clips and flushes."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    big = finite & (np.abs(v) > FP16_MAX)
    info.clipped += int(big.sum())
    out = np.where(big, np.sign(v) * FP16_MAX, v).astype(np.float16)
    info.flushed += int(((v != 0) & finite & (out == 0)).sum())
    return out


def _tensor_fp16(t: 'onnx.TensorProto', info: Fp16Info, name: str | None = None) -> 'onnx.TensorProto':
    from onnx import numpy_helper

    return numpy_helper.from_array(_fp16_array(numpy_helper.to_array(t), info), t.name if name is None else name)


def _scope(name: str) -> str:
    """The top-level scope of a node name ('/normalize/Sub' -> '/normalize/'; '/Shape' -> '(top level)')."""
    parts = name.split('/')
    return f'/{parts[1]}/' if name.startswith('/') and len(parts) > 2 else '(top level)'


def refuse_unconvertible(model: 'onnx.ModelProto') -> None:
    """Refuse a model that is already fp16, is quantized or has subgraphs.

    Args:
        model: The input model.

    Raises:
        ValueError: One line naming the problem.
    """
    import onnx

    if is_fp16_model(model):
        raise ValueError('the model already holds fp16 tensors; expected the float32 export')
    quantized = quant_ops(model)
    if quantized:
        raise ValueError(f'the model is quantized ({", ".join(sorted(quantized))}); expected the float32 '
                         'export (an INT8 file cannot be converted to fp16)')
    for n in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise ValueError(f'node {n.name or n.op_type!r} has a subgraph ({n.op_type}); fp16 conversion supports '
                             'flat graphs only')


def start(model: 'onnx.ModelProto', scopes: tuple[str, ...] | None) -> Fp16Graph:
    """A copy of the model to rewrite (its value_info dropped), with the element types of the input.

    Args:
        model: The input model (not modified).
        scopes: See `Fp16Graph.scopes`.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    del g.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(m)
    elem: dict[str, int] = {v.name: v.type.tensor_type.elem_type
                            for v in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]}
    inits = {i.name: i for i in g.initializer}
    for name, t in inits.items():
        elem[name] = t.data_type
    return Fp16Graph(m, scopes, Fp16Info(scopes=scopes), elem, inits, {o.name for o in g.output})


def read_weights_directly(w: Fp16Graph) -> None:
    """Drop each `Identity` of a weight (not a graph output); its readers read the weight."""
    alias: dict[str, str] = {}
    for n in w.model.graph.node:
        if n.op_type == 'Identity' and n.input[0] in w.inits and n.output[0] not in w.outputs:
            alias[n.output[0]] = n.input[0]
        else:
            w.nodes.append(n)
    for n in w.nodes:
        for i, x in enumerate(n.input):
            n.input[i] = alias.get(x, x)


def find_constants(w: Fp16Graph) -> None:
    """The float constants: float initializers and float `Constant` nodes."""
    w.const_nodes = {n.output[0]: n for n in w.nodes if n.op_type == 'Constant' and
                     any(a.name == 'value' and a.t.data_type == FLOAT for a in n.attribute)}
    w.consts = {k for k, t in w.inits.items() if t.data_type == FLOAT} | set(w.const_nodes)


def choose_precisions(w: Fp16Graph) -> None:
    """fp16 for the nodes under the scopes (not constants, not `FP32_OPS`); the scopes kept in float32 recorded.

    Raises:
        ValueError: No node is under the scopes.
    """
    def half_node(n: Any) -> bool:
        if n.op_type == 'Constant' or n.op_type in FP32_OPS:
            return False
        return w.scopes is None or n.name.startswith(w.scopes)

    w.is_half = {id(n): half_node(n) for n in w.nodes}
    if not any(w.is_half.values()):
        raise ValueError(f'no node of the model is under {", ".join(w.scopes or ())}; expected an export of '
                         'fna_zoo.export (node names carry module scopes; onnxslim or another tool may have renamed '
                         'them), or fp16_scopes=None to convert every node')
    w.info.fp32_scopes = sorted({_scope(n.name) for n in w.nodes if not w.is_half[id(n)] and n.op_type != 'Constant'
                                 and any(w.elem.get(x) == FLOAT for x in [*n.input, *n.output])})


def find_constant_needs(w: Fp16Graph) -> None:
    """The types each constant's readers need (a graph output needs float32)."""
    for n in w.nodes:
        for i, x in enumerate(n.input):
            if x in w.consts:
                w.needs[x].add(w.required(n, i))
    for o in w.outputs & w.consts:
        w.needs[o].add(FLOAT)


def _half_attributes(n: Any, info: Fp16Info) -> None:
    """An fp16 node's float type attributes made fp16 (Cast's `to`, ConstantOfShape's value, `dtype`)."""
    for a in n.attribute:
        if n.op_type == 'Cast' and a.name == 'to' and a.i == FLOAT:
            a.i = HALF
        elif n.op_type == 'ConstantOfShape' and a.name == 'value' and a.t.data_type == FLOAT:
            a.t.CopyFrom(_tensor_fp16(a.t, info))
        elif a.name == 'dtype' and a.i == FLOAT:  # EyeLike, RandomNormal(Like), RandomUniform(Like)
            a.i = HALF


def retype_nodes(w: Fp16Graph) -> None:
    """The produced type of every tensor; fp16 nodes' float outputs become fp16, their graph outputs renamed."""
    w.produced = {x.name: w.elem.get(x.name, 0) for x in w.model.graph.input}
    for n in w.nodes:
        half = w.is_half[id(n)]
        if half:
            _half_attributes(n, w.info)
        for j, o in enumerate(n.output):
            t = w.elem.get(o, 0)
            w.produced[o] = HALF if half and t == FLOAT else t
            if o in w.outputs and w.produced[o] == HALF:  # a graph output made in fp16: cast back at the end
                w.renamed_outputs[o] = f'{o}/fp16'
                n.output[j] = w.renamed_outputs[o]
        w.info.fp16_nodes += half
        w.info.fp32_nodes += (not half) and n.op_type != 'Constant'
    for n in w.nodes:
        for i, x in enumerate(n.input):
            n.input[i] = w.renamed_outputs.get(x, x)
    for new in w.renamed_outputs.values():
        w.produced[new] = HALF


def _half_constant(w: Fp16Graph, c: str, half_name: str, new_inits: list[Any]) -> None:
    """Constant `c` in fp16 under `half_name`: in place when that is its own name, else a copy beside it."""
    from onnx import helper

    if c in w.inits:
        t = _tensor_fp16(w.inits[c], w.info, half_name)
        if half_name == c:
            w.inits[c].CopyFrom(t)
        else:
            new_inits.append(t)
    else:
        attr = next(a for a in w.const_nodes[c].attribute if a.name == 'value')
        t = _tensor_fp16(attr.t, w.info)
        if half_name == c:
            attr.t.CopyFrom(t)
        else:
            w.extra_consts[c] = helper.make_node('Constant', [], [half_name], name=f'{w.const_nodes[c].name}/fp16',
                                                 value=t)


def convert_constants(w: Fp16Graph) -> None:
    """Constants read in fp16 stored in fp16: converted in place when every reader is fp16, else copied."""
    new_inits: list[Any] = []
    for c in w.consts:
        need = w.needs.get(c, set())
        if HALF not in need:
            w.info.fp32_constants += 1
            continue
        w.info.fp16_constants += 1
        half_name = c if need == {HALF} else f'{c}/fp16'
        w.const_as[(c, HALF)] = half_name
        _half_constant(w, c, half_name, new_inits)
        if half_name != c:
            w.info.fp32_constants += 1
    w.model.graph.initializer.extend(new_inits)


def _retype_input(w: Fp16Graph, n: Any, i: int, cast_of: dict[tuple[str, int], str]) -> None:
    """Input `i` of `n` in the type it needs: the constant's copy in that type, or a Cast (made once a tensor)."""
    from onnx import helper

    x = n.input[i]
    if not x:
        return
    if x in w.consts:
        if w.required(n, i) == HALF:
            n.input[i] = w.const_as[(x, HALF)]
        return
    have = w.produced.get(x, w.elem.get(x, 0))
    if have not in (FLOAT, HALF):
        return
    want = w.required(n, i)
    if have == want:
        return
    key = (x, want)
    if key not in cast_of:
        cast_of[key] = f'{x}/to_{"fp16" if want == HALF else "fp32"}'
        w.final.append(helper.make_node('Cast', [x], [cast_of[key]], to=want,
                                        name=f'{x}/cast_{"fp16" if want == HALF else "fp32"}'))
        w.info.casts += 1
    n.input[i] = cast_of[key]


def insert_casts(w: Fp16Graph) -> None:
    """The node list rebuilt with Casts where a tensor crosses precisions (each Cast before its first reader)."""
    cast_of: dict[tuple[str, int], str] = {}
    for n in w.nodes:
        for i in range(len(n.input)):
            _retype_input(w, n, i, cast_of)
        w.final.append(n)
        if n.op_type == 'Constant' and n.output[0] in w.extra_consts:
            w.final.append(w.extra_consts[n.output[0]])


def cast_outputs_back(w: Fp16Graph) -> None:
    """Each graph output made in fp16 cast back to float32 under its own name."""
    from onnx import helper

    for old, new in w.renamed_outputs.items():
        w.final.append(helper.make_node('Cast', [new], [old], to=FLOAT, name=f'{old}/cast_output'))
        w.info.casts += 1


def write_graph(w: Fp16Graph) -> None:
    """The rebuilt node list written into the graph; initializers nothing reads dropped."""
    g = w.model.graph
    del g.node[:]
    g.node.extend(w.final)
    used = {x for n in w.final for x in n.input} | w.outputs
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


# the passes after `start`, in order
PASSES: tuple[Callable[[Fp16Graph], None], ...] = (
    read_weights_directly, find_constants, choose_precisions, find_constant_needs, retype_nodes, convert_constants,
    insert_casts, cast_outputs_back, write_graph)

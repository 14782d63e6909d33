"""Mixed-precision (fp16) ONNX models from the fp32 exports: the network in fp16, what needs fp32 around it kept.

TensorRT 11 builds only strongly typed networks (every tensor has the type the ONNX file gives it; no
`--fp16` builder flag), so a fp16 engine needs a fp16 ONNX file. `convert_fp16` writes one from a fp32 model:

* **fp16**: every node under one of `fp16_scopes` (the TorchScript exporter names nodes by module scope:
  `/body/...` is a backbone export's network, `/core/...` a detector's backbone, neck and head), and every
  node of a latency-table part (`fp16_scopes=None`: all of it);
* **fp32**: everything else: the input normalisation (`/normalize/`), the anchors (top level) and the whole
  postprocess (`/postprocess/`: score activations, box decoding against the anchors, the NMS coordinate
  offsets, `NonMaxSuppression`, which ONNX defines for float32 only); inputs and outputs stay float32
  (`keep_io_types`), so a caller feeds and reads the same arrays as for the fp32 file;
* **Casts** only where a tensor crosses between the two; a weight (or constant) read by both sides is
  stored in both types; fp16 nodes' `Cast(to=float)` / `ConstantOfShape` produce fp16.

Values outside the fp16 range are clipped to +-65504 (counted in the returned info), and the result is
checked with `onnx.checker` (full check: strict type and shape inference), so a type mismatch fails here with
the node named, never in TensorRT.

NOTE: onnxconverter-common's `convert_float_to_float16(keep_io_types=True)` was tried first (1.16.0): on the
zoo backbones it leaves the next stage's Conv reading a graph output (`feat_s4`, re-typed to float32 by its
output Cast) with fp16 weights, so `onnx.checker` rejects the file; it also blocks by op type and node name,
not by module scope. NVIDIA ModelOpt's AutoCast (`nvidia-modelopt[onnx]` 0.47) pins onnx~=1.21 and
onnxruntime-gpu~=1.24 (plus cupy), which would replace this project's onnx and onnxruntime. Hence this pass,
whose rule (scope in, scope out) is the one the INT8 quantizer already uses (`fna_zoo.export.quantize`).
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .ort import QUANT_OPS

if TYPE_CHECKING:
    import onnx

__all__ = ['DEFAULT_FP16_SCOPES', 'FP32_OPS', 'Fp16Info', 'convert_fp16', 'convert_fp16_file', 'stamp_fp16',
           'is_fp16_model', 'tensor_types']

_logger = logging.getLogger(__name__)

# module scopes of the network in fna_zoo.export's modules (BackboneExport.body, *DetectorExport.core)
DEFAULT_FP16_SCOPES: tuple[str, ...] = ('/body/', '/core/')
# ops that stay float32 wherever they are (ONNX defines NonMaxSuppression and RoiAlign's boxes for float32)
FP32_OPS = frozenset({'NonMaxSuppression', 'RoiAlign'})
# float inputs whose type is not the node's data type (ONNX type constraints of their own): left as they are
_OWN_TYPE_INPUTS: dict[str, frozenset[int]] = {'Resize': frozenset({1, 2}), 'Upsample': frozenset({1})}
FP16_MAX = 65504.0


@dataclass
class Fp16Info:
    """What `convert_fp16` did.

    Args:
        fp16_nodes: Nodes that run in fp16.
        fp32_nodes: Nodes kept in float32 (constants not counted).
        casts: Cast nodes inserted at fp16 / fp32 boundaries.
        fp16_constants: Weights and constants stored in fp16.
        fp32_constants: Float weights and constants kept in float32 (read by fp32 nodes only).
        clipped: Values beyond +-65504 clipped to the fp16 range.
        flushed: Non-zero values that became 0 in fp16 (below fp16's smallest subnormal, ~6e-8).
        scopes: The fp16 scopes (None: every node).
        fp32_scopes: Top-level scopes of the nodes kept in float32 (e.g. `/normalize/`, `/postprocess/`).
    """

    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts: int = 0
    fp16_constants: int = 0
    fp32_constants: int = 0
    clipped: int = 0
    flushed: int = 0
    scopes: tuple[str, ...] | None = DEFAULT_FP16_SCOPES
    fp32_scopes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a log or a printout."""
        kept = ', '.join(self.fp32_scopes) or 'none'
        return (f'{self.fp16_nodes} nodes fp16, {self.fp32_nodes} kept fp32 ({kept}), {self.casts} casts, '
                f'{self.fp16_constants} weights/constants fp16, {self.clipped} values clipped to +-65504, '
                f'{self.flushed} flushed to 0')

    def metadata(self) -> str:
        """The `fp16` entry of the converted file's metadata."""
        return (f'mixed precision: network nodes under {", ".join(self.scopes) if self.scopes else "every scope"} '
                f'in fp16; kept float32: {", ".join(self.fp32_scopes) or "none"}; io float32')


def is_fp16_model(model: 'onnx.ModelProto') -> bool:
    """Whether an ONNX model holds fp16 tensors (initializers, constants, casts or declared types).

    Args:
        model: The model.
    """
    from onnx import TensorProto

    g = model.graph
    if any(i.data_type == TensorProto.FLOAT16 for i in g.initializer):
        return True
    for n in g.node:
        for a in n.attribute:
            if (n.op_type == 'Cast' and a.name == 'to' and a.i == TensorProto.FLOAT16) or \
                    (a.t is not None and a.t.data_type == TensorProto.FLOAT16 and a.HasField('t')):
                return True
    return any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in [*g.input, *g.output, *g.value_info])


def tensor_types(model: 'onnx.ModelProto') -> dict[str, int]:
    """The ONNX element type of every tensor of a model (after shape inference; initializers and constants too).

    Args:
        model: The model (not modified).
    """
    import onnx

    m = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.input, *m.graph.output, *m.graph.value_info]}
    types.update({i.name: i.data_type for i in m.graph.initializer})
    for n in m.graph.node:
        if n.op_type == 'Constant':
            types.update({o: a.t.data_type for a in n.attribute if a.name == 'value' for o in n.output})
    return types


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


def convert_fp16(model: 'onnx.ModelProto', fp16_scopes: Sequence[str] | None = DEFAULT_FP16_SCOPES,
                 check: bool = True) -> tuple['onnx.ModelProto', Fp16Info]:
    """A mixed-precision copy of a float32 ONNX model (see the module docstring); inputs and outputs stay float32.

    Args:
        model: The float32 model (e.g. `fna-export`'s file; not modified).
        fp16_scopes: Node-name prefixes of the nodes to run in fp16 (default: `/body/` and `/core/`, the
            network of fna_zoo's exports); None: every node (a latency-table part: all network).
        check: Run `onnx.checker` (full check) on the result.

    Returns:
        (the converted model, what was converted).

    Raises:
        ValueError: The model is already fp16 or quantized, has subgraphs, has no node under `fp16_scopes`, or
            the result fails the checker (one line naming the first problem).
    """
    import onnx
    from onnx import TensorProto, helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    if is_fp16_model(model):
        raise ValueError('the model already holds fp16 tensors; expected the float32 export')
    ops = {n.op_type for n in model.graph.node}
    if ops & QUANT_OPS:
        raise ValueError(f'the model is quantized ({", ".join(sorted(ops & QUANT_OPS))}); expected the float32 '
                         'export (an INT8 file cannot be converted to fp16)')
    for n in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise ValueError(f'node {n.name or n.op_type!r} has a subgraph ({n.op_type}); fp16 conversion supports '
                             'flat graphs only')
    scopes = tuple(fp16_scopes) if fp16_scopes is not None else None
    info = Fp16Info(scopes=scopes)
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
    outputs = {o.name for o in g.output}

    # Identity of a weight (the exporter's de-duplication of equal weights): read the weight directly
    alias: dict[str, str] = {}
    nodes = []
    for n in g.node:
        if n.op_type == 'Identity' and n.input[0] in inits and n.output[0] not in outputs:
            alias[n.output[0]] = n.input[0]
        else:
            nodes.append(n)
    for n in nodes:
        for i, x in enumerate(n.input):
            n.input[i] = alias.get(x, x)

    # constants: float initializers and float Constant nodes (their type follows their readers)
    const_nodes = {n.output[0]: n for n in nodes if n.op_type == 'Constant' and
                   any(a.name == 'value' and a.t.data_type == FLOAT for a in n.attribute)}
    consts = {k for k, t in inits.items() if t.data_type == FLOAT} | set(const_nodes)

    def half_node(n: Any) -> bool:
        if n.op_type == 'Constant' or n.op_type in FP32_OPS:
            return False
        return scopes is None or n.name.startswith(scopes)

    is_half = {id(n): half_node(n) for n in nodes}
    if not any(is_half.values()):
        raise ValueError(f'no node of the model is under {", ".join(scopes or ())}; expected an export of '
                         'fna_zoo.export (node names carry module scopes; onnxslim or another tool may have renamed '
                         'them), or fp16_scopes=None to convert every node')
    info.fp32_scopes = sorted({_scope(n.name) for n in nodes if not is_half[id(n)] and n.op_type != 'Constant'
                               and any(elem.get(x) == FLOAT for x in [*n.input, *n.output])})

    def required(n: Any, i: int) -> int:
        return HALF if is_half[id(n)] and i not in _OWN_TYPE_INPUTS.get(n.op_type, ()) else FLOAT

    # what each constant's readers need
    needs: dict[str, set[int]] = defaultdict(set)
    for n in nodes:
        for i, x in enumerate(n.input):
            if x in consts:
                needs[x].add(required(n, i))
    for o in outputs & consts:
        needs[o].add(FLOAT)

    # produced type of every float tensor; fp16 nodes' float outputs become fp16 (their attributes follow)
    produced: dict[str, int] = {x.name: elem.get(x.name, 0) for x in g.input}
    renamed_outputs: dict[str, str] = {}
    for n in nodes:
        half = is_half[id(n)]
        if half:
            for a in n.attribute:
                if n.op_type == 'Cast' and a.name == 'to' and a.i == FLOAT:
                    a.i = HALF
                elif n.op_type == 'ConstantOfShape' and a.name == 'value' and a.t.data_type == FLOAT:
                    a.t.CopyFrom(_tensor_fp16(a.t, info))
                elif a.name == 'dtype' and a.i == FLOAT:  # EyeLike, RandomNormal(Like), RandomUniform(Like)
                    a.i = HALF
        for j, o in enumerate(n.output):
            t = elem.get(o, 0)
            produced[o] = HALF if half and t == FLOAT else t
            if o in outputs and produced[o] == HALF:  # a graph output made in fp16: cast back at the end
                renamed_outputs[o] = f'{o}/fp16'
                n.output[j] = renamed_outputs[o]
        info.fp16_nodes += half
        info.fp32_nodes += (not half) and n.op_type != 'Constant'
    for n in nodes:
        for i, x in enumerate(n.input):
            n.input[i] = renamed_outputs.get(x, x)
    for old, new in renamed_outputs.items():
        produced[new] = HALF

    # constants: converted in place when every reader is fp16, copied when both sides read them
    const_as: dict[tuple[str, int], str] = {}
    new_inits, extra_consts = [], {}
    for c in consts:
        need = needs.get(c, set())
        if HALF not in need:
            info.fp32_constants += 1
            continue
        info.fp16_constants += 1
        half_name = c if need == {HALF} else f'{c}/fp16'
        const_as[(c, HALF)] = half_name
        if c in inits:
            t = _tensor_fp16(inits[c], info, half_name)
            if half_name == c:
                inits[c].CopyFrom(t)
            else:
                new_inits.append(t)
        else:
            attr = next(a for a in const_nodes[c].attribute if a.name == 'value')
            t = _tensor_fp16(attr.t, info)
            if half_name == c:
                attr.t.CopyFrom(t)
            else:
                extra_consts[c] = helper.make_node('Constant', [], [half_name], name=f'{const_nodes[c].name}/fp16',
                                                   value=t)
        if half_name != c:
            info.fp32_constants += 1
    g.initializer.extend(new_inits)

    # rebuild the node list with Casts where a tensor crosses precisions
    cast_of: dict[tuple[str, int], str] = {}
    final = []
    for n in nodes:
        for i, x in enumerate(n.input):
            if not x:
                continue
            if x in consts:
                if required(n, i) == HALF:
                    n.input[i] = const_as[(x, HALF)]
                continue
            have = produced.get(x, elem.get(x, 0))
            if have not in (FLOAT, HALF):
                continue
            want = required(n, i)
            if have == want:
                continue
            key = (x, want)
            if key not in cast_of:
                cast_of[key] = f'{x}/to_{"fp16" if want == HALF else "fp32"}'
                final.append(helper.make_node('Cast', [x], [cast_of[key]], to=want,
                                                  name=f'{x}/cast_{"fp16" if want == HALF else "fp32"}'))
                info.casts += 1
            n.input[i] = cast_of[key]
        final.append(n)
        if n.op_type == 'Constant' and n.output[0] in extra_consts:
            final.append(extra_consts[n.output[0]])
    for old, new in renamed_outputs.items():
        final.append(helper.make_node('Cast', [new], [old], to=FLOAT, name=f'{old}/cast_output'))
        info.casts += 1
    del g.node[:]
    g.node.extend(final)
    used = {x for n in final for x in n.input} | outputs
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    if check:
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as e:  # noqa: BLE001  (the checker raises several classes; one line for all)
            first = ' '.join(str(e).split())[:300]
            raise ValueError(f'the fp16 model fails onnx.checker: {first}') from None
    _logger.info('fp16: %s', info.summary())
    return m, info


def stamp_fp16(model: 'onnx.ModelProto', info: Fp16Info, **extra: str) -> None:
    """Record in a converted model's `metadata_props` that it is fp16 and what runs in fp16 (the other entries
    kept, `extra` added).

    Args:
        model: The converted model (changed in place).
        info: What `convert_fp16` converted.
        **extra: More entries (strings).
    """
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(precision='fp16', fp16=info.metadata(), **extra)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


def convert_fp16_file(src: str | os.PathLike, dst: str | os.PathLike,
                      fp16_scopes: Sequence[str] | None | str = 'auto') -> Fp16Info:
    """`convert_fp16` of an ONNX file into another (written atomically), its metadata kept plus a `precision`
    and an `fp16` entry saying what runs in fp16.

    Args:
        src: The float32 ONNX file.
        dst: The fp16 file to write.
        fp16_scopes: See `convert_fp16`; 'auto': the default scopes when the model has nodes under them (an
            fna_zoo export), else every node (a latency-table part or another exporter's file).
    """
    import onnx

    from ..fileio import atomic_path

    model = onnx.load(str(src))
    if fp16_scopes == 'auto':
        names = [n.name for n in model.graph.node]
        fp16_scopes = DEFAULT_FP16_SCOPES if any(x.startswith(DEFAULT_FP16_SCOPES) for x in names) else None
    m16, info = convert_fp16(model, fp16_scopes)  # type: ignore[arg-type]
    stamp_fp16(m16, info)
    with atomic_path(dst, suffix='.tmp.onnx') as tmp:
        onnx.save(m16, str(tmp))
    return info

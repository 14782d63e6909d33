"""INT8 that keeps its accuracy: rank the quantized layers by a measured sensitivity, keep the worst in float.

When the INT8 AP gate fails (`fna_zoo.export.formats`, `ap_drop_max`), the exporter keeps the most sensitive
layers in float, 1, 2, 4, ... of them (`fallback_schedule`), until the AP drop is within the limit or every
quantized layer has been tried; then it halves the interval between the last count that failed and the first that
passed (`bisect_counts`), since every layer kept float costs INT8 speed.

The sensitivity of a layer (`layer_sensitivity`) is its quantization error measured on the calibration images:
the relative squared error (1 / SQNR) of the layer's output in the quantized model against the same layer run in
float on the same float input (the tensor before its QuantizeLinear) with its float weight and bias. Every layer
is measured in one onnxruntime session (the QDQ model with a float copy of each layer beside it), so the ranking
costs one run per calibration image; it is deterministic (one thread, fixed images).

NOTE: each step of the search is the calibrated QDQ model with those layers reading float inputs and weights
(`keep_float`: their now unused Q/DQ pairs removed), so a step costs one AP pass and no re-calibration (onnxruntime's
quantizer takes ~20 s per call on the 2-core CPU this was written on, for a 1300-node detector). The file written
is then quantized again by onnxruntime with those layers in `nodes_to_exclude`, and the gate's verdict is that
file's AP.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..onnxgraph.quant import quantized_layers
from ..runtime.ort import ort_session
from .quantize import _unshare_conv_biases

if TYPE_CHECKING:
    import onnx

__all__ = ['LayerSensitivity', 'layer_sensitivity', 'keep_float', 'fallback_schedule', 'bisect_counts',
           'kept_float_of']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized layer's measured quantization error.

    Args:
        node: The ONNX node name (what `nodes_to_exclude` takes).
        op_type: Its op ('Conv', ...).
        error: Relative squared error (1 / SQNR) of its output, quantized against float on the same input.
    """

    node: str
    op_type: str
    error: float


def _free(name: str, have: set[str]) -> str:
    while name in have:
        name = f'{name}.float'
    have.add(name)
    return name


def _clipped(m: 'onnx.ModelProto', q: 'onnx.NodeProto', have: set[str],
             clips: dict[str, tuple[str, 'onnx.NodeProto']]) -> str:
    """The float input of QuantizeLinear `q`, clipped to the range its quantization can hold (one Clip per `q`,
    inserted right after it).

    NOTE: onnxruntime's quantizer removes a Relu / Clip (ReLU6) after a quantized layer and lets the quantization
    range do the clamping, so the tensor before the QuantizeLinear is unclamped; clipping it to
    [(qmin - zero point) * scale, (qmax - zero point) * scale] is the activation in float with that saturation.
    """
    import onnx
    from onnx import numpy_helper

    if q.output[0] in clips:
        return clips[q.output[0]][0]
    inits = {i.name: i for i in m.graph.initializer}
    scale = float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0])
    zp_arr = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits else np.uint8(0)
    info = np.iinfo(np.asarray(zp_arr).dtype)
    zp = float(np.asarray(zp_arr).reshape(-1)[0])
    lo = numpy_helper.from_array(np.array((info.min - zp) * scale, np.float32), _free(f'{q.input[0]}/clip_min', have))
    hi = numpy_helper.from_array(np.array((info.max - zp) * scale, np.float32), _free(f'{q.input[0]}/clip_max', have))
    m.graph.initializer.extend([lo, hi])
    out = _free(f'{q.input[0]}/float_clip', have)
    clip = onnx.helper.make_node('Clip', [q.input[0], lo.name, hi.name], [out], name=_free(f'{q.name}/float_clip', have))
    clips[q.output[0]] = (out, clip)
    return out


def _place_clips(m: 'onnx.ModelProto', clips: dict[str, tuple[str, 'onnx.NodeProto']]) -> None:
    """Put each Clip of `_clipped` right after its QuantizeLinear (the node list stays in topological order)."""
    import onnx

    nodes = []
    for n in m.graph.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        nodes.append(c)
        if n.output and n.output[0] in clips:
            nodes.append(clips[n.output[0]][1])
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _float_inputs(m: 'onnx.ModelProto', node: 'onnx.NodeProto', ref: 'onnx.NodeProto',
                  fp32_inits: dict[str, 'onnx.TensorProto'], made_by: dict[str, 'onnx.NodeProto'],
                  have: set[str], clips: dict[str, tuple[str, 'onnx.NodeProto']]) -> list[str]:
    """The float inputs of a quantized `node` of `m`: the activation before its QuantizeLinear (clipped to its
    quantization range, see `_clipped`), the fp32 model's weight and bias (added under a free name); other inputs
    as they are."""
    import onnx

    inputs = list(node.input)
    for i, name in enumerate(node.input):
        dq = made_by.get(name)
        if dq is None or dq.op_type != 'DequantizeLinear':
            continue
        src = dq.input[0]
        if src in made_by and made_by[src].op_type == 'QuantizeLinear':  # an activation
            inputs[i] = _clipped(m, made_by[src], have, clips)
        elif i < len(ref.input) and ref.input[i] in fp32_inits:  # a weight or bias: the fp32 initializer
            t = onnx.TensorProto()
            t.CopyFrom(fp32_inits[ref.input[i]])
            t.name = _free(ref.input[i], have)
            m.graph.initializer.append(t)
            inputs[i] = t.name
    return inputs


def _defined(m: 'onnx.ModelProto') -> set[str]:
    # NOTE: onnxruntime names a weight's DequantizeLinear output after the float weight: every defined name counts
    return ({i.name for i in m.graph.initializer} | {o for n in m.graph.node for o in n.output}
            | {i.name for i in m.graph.input})


def _fp32_reference(fp32_path: str | os.PathLike) -> 'onnx.ModelProto':
    import onnx

    fp32 = onnx.load(str(fp32_path))
    _unshare_conv_biases(fp32)  # NOTE: as quantize_int8 does: the int8 model's biases are these copies
    return fp32


@dataclass
class _Pair:
    """The INT8 model to edit and what its float twins read from the fp32 model."""

    m: 'onnx.ModelProto'
    fp32_nodes: dict[str, 'onnx.NodeProto']
    fp32_inits: dict[str, 'onnx.TensorProto']
    made_by: dict[str, 'onnx.NodeProto']
    have: set[str]


def _pair(fp32_path: str | os.PathLike, int8_path: str | os.PathLike) -> _Pair:
    import onnx

    fp32 = _fp32_reference(fp32_path)
    m = onnx.load(str(int8_path))
    return _Pair(m, {n.name: n for n in fp32.graph.node}, {i.name: i for i in fp32.graph.initializer},
                 {o: n for n in m.graph.node for o in n.output}, _defined(m))


def layer_sensitivity(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, batches: Sequence[np.ndarray]
                      ) -> list[LayerSensitivity]:
    """The quantized layers of `int8_path`, most sensitive first (see the module docstring).

    Args:
        fp32_path: The fp32 ONNX file `int8_path` was quantized from (`quantize_int8`).
        int8_path: Its QDQ file.
        batches: Input batches to measure on (the calibration images, or some of them).

    Returns:
        One entry per quantized layer, sorted by `error` (largest first; ties in graph order).
    """
    import onnx

    if not batches:
        raise ValueError('layer sensitivity needs input batches; expected at least one calibration batch')
    pair = _pair(fp32_path, int8_path)
    m, fp32_nodes, fp32_inits, made_by, have = pair.m, pair.fp32_nodes, pair.fp32_inits, pair.made_by, pair.have
    layers = [n for n in m.graph.node if n.name in set(quantized_layers(m)) and n.name in fp32_nodes]
    named = [(n.name, n.op_type) for n in layers]
    clips: dict[str, tuple[str, onnx.NodeProto]] = {}
    pairs = []
    for node in layers:  # a float copy of every layer beside it, on the same float input
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = f'{node.name}/float_twin'
        twin.input[:] = _float_inputs(m, node, fp32_nodes[node.name], fp32_inits, made_by, have, clips)
        twin.output[:] = [f'{node.output[0]}/float_twin']
        m.graph.node.append(twin)
        pairs.append((node.output[0], twin.output[0]))
    _place_clips(m, clips)
    names = [t for pair in pairs for t in pair]
    del m.graph.output[:]
    for name in names:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    # NOTE: one thread: the same sums on every run, so the ranking is reproducible
    sess = ort_session(m.SerializeToString(), threads=1)
    inp = sess.get_inputs()[0].name
    num, den = np.zeros(len(pairs)), np.zeros(len(pairs))
    for b in batches:
        out = sess.run(names, {inp: b})
        for k in range(len(pairs)):
            q, f = out[2 * k].astype(np.float64), out[2 * k + 1].astype(np.float64)
            num[k] += float(np.sum((q - f) ** 2))
            den[k] += float(np.sum(f ** 2))
    found = [LayerSensitivity(name, op, float(num[k] / max(den[k], 1e-12))) for k, (name, op) in enumerate(named)]
    _logger.info('INT8 sensitivity of %d layers measured on %d images', len(found), len(batches))
    order = sorted(range(len(found)), key=lambda k: (-found[k].error, k))
    return [found[k] for k in order]


def keep_float(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, nodes: Sequence[str],
               out_path: str | os.PathLike) -> Path:
    """The QDQ model of `int8_path` with `nodes` reading float inputs, weights and biases (their Q/DQ pairs left
    without readers removed): a search step of the fallback, with the same calibration.

    Args:
        fp32_path: The fp32 file it was quantized from.
        int8_path: The QDQ file.
        nodes: Layer names to keep float.
        out_path: Where to write it.
    """
    import onnx

    pair = _pair(fp32_path, int8_path)
    m, fp32_nodes, fp32_inits, made_by, have = pair.m, pair.fp32_nodes, pair.fp32_inits, pair.made_by, pair.have
    wanted = set(nodes)
    clips: dict[str, tuple[str, onnx.NodeProto]] = {}
    for node in m.graph.node:
        if node.name in wanted:
            node.input[:] = _float_inputs(m, node, fp32_nodes[node.name], fp32_inits, made_by, have, clips)
    _place_clips(m, clips)
    while True:  # Q/DQ nodes nobody reads any more
        used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
        dead = [n for n in m.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            m.graph.node.remove(n)
    used = {i for n in m.graph.node for i in n.input}
    keep = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    onnx.save(m, str(out_path))
    return Path(out_path)


def fallback_schedule(num_layers: int, max_steps: int) -> list[int]:
    """How many of the most sensitive layers each fallback step keeps float: 1, 2, 4, ... doubling, the last
    step every layer (at most `max_steps` steps; the last is always `num_layers`).

    NOTE: doubling finds a count within 2x of the smallest that passes in log2(layers) AP evaluations (each
    step is a quantization and an AP pass over the gate data); the final step shows whether keeping every
    layer float (activations of the other ops still quantized) can meet the limit at all.

    Args:
        num_layers: Quantized layers ranked.
        max_steps: Most steps (AP passes of the doubling).
    """
    if num_layers < 1 or max_steps < 1:
        return []
    steps, k = [], 1
    while k < num_layers and len(steps) < max_steps - 1:
        steps.append(k)
        k *= 2
    return steps + [num_layers]


def bisect_counts(failed: int, passed: int, passes: Callable[[int], bool]) -> int:
    """The smallest count in (failed, passed] that `passes`, by halving the interval (log2 of its width steps).

    NOTE: each layer kept float costs INT8 speed (its convolution in float, a dequantize/quantize pair around it),
    and doubling may keep up to twice the layers needed. The AP of a step need not fall monotonically with the
    count on a small gate set (one detection moves it); halving then ends at a count that passed next to one that
    failed, not necessarily the smallest that would pass.

    Args:
        failed: A count that failed (0: none kept float).
        passed: A larger count that passed.
        passes: Count -> whether keeping that many float meets the limit (one AP pass each).
    """
    while passed - failed > 1:
        mid = (failed + passed) // 2
        if passes(mid):
            passed = mid
        else:
            failed = mid
    return passed


def kept_float_of(path: str | os.PathLike) -> list[str]:
    """The layers an INT8 file's fallback kept in float (from its metadata; [] when none).

    Args:
        path: An INT8 ONNX file of `quantize_int8` (ONNX node names), or an OpenVINO INT8 IR (.xml) of
            fna-export (the quantizers NNCF's accuracy control reverted, by name).
    """
    import json

    if Path(path).suffix.lower() == '.xml':
        from ..runtime.openvino import metadata, read_model

        meta = metadata(read_model(path))
    else:
        from .onnx_export import metadata_of

        meta = metadata_of(Path(path))
    return json.loads(meta.get('int8_kept_float', '[]'))

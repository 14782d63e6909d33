"""The quantized-op set: which ONNX ops make a model quantized (QDQ, integer-operator and dynamic formats)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ['QDQ_OPS', 'QOPERATOR_OPS', 'QUANT_OPS', 'WEIGHTED_OPS', 'quant_ops', 'quantized_layers', 'count_ops',
           'shape_nodes']

# the QDQ format: float ops between QuantizeLinear / DequantizeLinear pairs (what TensorRT builds int8 from)
QDQ_OPS: tuple[str, ...] = ('QuantizeLinear', 'DequantizeLinear')
# the integer-operator format and dynamic quantization (onnxruntime only)
QOPERATOR_OPS: tuple[str, ...] = ('QLinearConv', 'QLinearMatMul', 'ConvInteger', 'MatMulInteger',
                                  'DynamicQuantizeLinear')
# the ops of a quantized ONNX model, any format
QUANT_OPS = frozenset(QDQ_OPS + QOPERATOR_OPS)
# the layers with weights: what an INT8 fallback keeps in float, one node at a time
WEIGHTED_OPS: tuple[str, ...] = ('Conv', 'ConvTranspose', 'Gemm', 'MatMul')


def quant_ops(model: 'onnx.ModelProto') -> set[str]:
    """The quantized ops a model holds (empty for a float model).

    Args:
        model: The model.
    """
    return {n.op_type for n in model.graph.node} & QUANT_OPS


def quantized_layers(model: 'onnx.ModelProto') -> list[str]:
    """The names of the weighted nodes (`WEIGHTED_OPS`) of a QDQ model whose weight is quantized, in graph order.

    Args:
        model: A QDQ model (e.g. `fna_zoo.export.quantize.quantize_int8`'s).
    """
    inits = {i.name for i in model.graph.initializer}
    dq_of_init = {o for n in model.graph.node if n.op_type == 'DequantizeLinear' and n.input[0] in inits
                  for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in dq_of_init]


def count_ops(model: 'onnx.ModelProto', op_type: str) -> int:
    """How many nodes of `op_type` a model holds.

    Args:
        model: The model.
        op_type: An ONNX op type (e.g. 'QuantizeLinear').
    """
    return sum(n.op_type == op_type for n in model.graph.node)


def shape_nodes(model: 'onnx.ModelProto') -> list[str]:
    """The nodes that compute on tensor shapes, not on data: `Shape` nodes and every node whose inputs are all
    their outputs, constants or initializers (at least one of them a shape value), in graph order.

    NOTE: a static quantizer must leave them in float. TF "same" padding (EfficientNet-Lite0's `Conv2dSame`)
    exports its pad sizes as float arithmetic on the input's shape (Div, Ceil, Sub, Mul); onnxruntime's
    quantize_static puts Q/DQ pairs on those floats, the rounded pads change the feature maps' sizes, and the
    detector's anchor count no longer matches its in-graph NMS (a TopK then fails at run time).

    Args:
        model: The model (its nodes in topological order, as exporters write them).
    """
    fixed = {i.name for i in model.graph.initializer}
    fixed |= {o for n in model.graph.node if n.op_type == 'Constant' for o in n.output}
    values: set[str] = set()
    names: list[str] = []
    for n in model.graph.node:
        ins = [i for i in n.input if i]
        if n.op_type == 'Shape' or (ins and any(i in values for i in ins) and all(i in values or i in fixed
                                                                                  for i in ins)):
            values.update(n.output)
            names.append(n.name)
    return names

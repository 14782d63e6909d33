"""The precision of an ONNX model: fp32, fp16 (mixed precision) or int8, and the element type of its tensors.

A strongly typed TensorRT engine has the precision of its ONNX file, so `onnx_precision` is also the precision
of an engine built from a file (`fna_zoo.runtime.tensorrt.engine_plan`).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .load import load_onnx
from .quant import quant_ops

if TYPE_CHECKING:
    import onnx

__all__ = ['is_fp16_model', 'tensor_types', 'onnx_precision']


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


def onnx_precision(model: 'str | os.PathLike | bytes | onnx.ModelProto') -> str:
    """'int8' for a quantized ONNX model (QDQ or integer ops), 'fp16' for one holding fp16 tensors (the
    mixed-precision file of `fna-export --fp16`), else 'fp32': also the precision a strongly typed TensorRT
    engine built from it has.

    Args:
        model: An ONNX file, serialized model or model.
    """
    proto = load_onnx(model)
    if quant_ops(proto):
        return 'int8'
    return 'fp16' if is_fp16_model(proto) else 'fp32'

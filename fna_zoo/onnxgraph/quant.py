"""The quantized-op set: which ONNX ops make a model quantized (QDQ, integer-operator and dynamic formats)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ['QDQ_OPS', 'QOPERATOR_OPS', 'QUANT_OPS', 'quant_ops']

# the QDQ format: float ops between QuantizeLinear / DequantizeLinear pairs (what TensorRT builds int8 from)
QDQ_OPS: tuple[str, ...] = ('QuantizeLinear', 'DequantizeLinear')
# the integer-operator format and dynamic quantization (onnxruntime only)
QOPERATOR_OPS: tuple[str, ...] = ('QLinearConv', 'QLinearMatMul', 'ConvInteger', 'MatMulInteger',
                                  'DynamicQuantizeLinear')
# the ops of a quantized ONNX model, any format
QUANT_OPS = frozenset(QDQ_OPS + QOPERATOR_OPS)


def quant_ops(model: 'onnx.ModelProto') -> set[str]:
    """The quantized ops a model holds (empty for a float model).

    Args:
        model: The model.
    """
    return {n.op_type for n in model.graph.node} & QUANT_OPS

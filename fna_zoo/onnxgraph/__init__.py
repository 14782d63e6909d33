"""ONNX graph helpers: the floor below `fna_zoo.runtime` and `fna_zoo.export` (it imports neither).

* `load`: an ONNX model from a file, bytes or a model (`load_onnx`), its first input's dims, the full checker
  as one line (`check_onnx`);
* `quant`: the quantized-op set (`QUANT_OPS`: QDQ and integer-operator formats) and `quant_ops`;
* `precision`: fp32 / fp16 / int8 of a model (`onnx_precision`, `is_fp16_model`) and its tensors' types;
* `fp16`: the mixed-precision (fp16) conversion (`convert_fp16`, `convert_fp16_file`, `stamp_fp16`), composed
  of the named passes of `fp16_passes`; `fp16_info`: what a conversion did (`Fp16Info`).

Importing this package loads numpy and the standard library only; onnx is imported by the functions that need it.
"""
from .fp16 import DEFAULT_FP16_SCOPES, FP32_OPS, Fp16Info, convert_fp16, convert_fp16_file, stamp_fp16
from .load import check_onnx, load_onnx, onnx_input_dims
from .precision import is_fp16_model, onnx_precision, tensor_types
from .quant import QUANT_OPS, quant_ops

__all__ = ['load_onnx', 'onnx_input_dims', 'check_onnx', 'QUANT_OPS', 'quant_ops', 'is_fp16_model', 'tensor_types',
           'onnx_precision', 'DEFAULT_FP16_SCOPES', 'FP32_OPS', 'Fp16Info', 'convert_fp16', 'convert_fp16_file',
           'stamp_fp16']

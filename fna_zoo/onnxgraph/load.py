"""Loading ONNX models and reading their inputs; the full checker as one line.

Every module of the package that takes "an ONNX file, serialized model or model" goes through `load_onnx`, so
the three forms are accepted alike (a file's external data is not loaded: graph-level questions need none).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ['load_onnx', 'onnx_input_dims', 'check_onnx']


def load_onnx(model: 'str | os.PathLike | bytes | onnx.ModelProto') -> 'onnx.ModelProto':
    """An ONNX model from a file (external data not loaded), serialized bytes, or a model (returned as is).

    Args:
        model: An ONNX file, serialized model or model.
    """
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return onnx.load(str(model), load_external_data=False)


def onnx_input_dims(model: str | os.PathLike | bytes) -> list[int | None]:
    """The dimensions of an ONNX model's first input (None where a dimension is dynamic).

    Args:
        model: An ONNX file or serialized model.
    """
    graph = load_onnx(model).graph
    inits = {i.name for i in graph.initializer}
    first = next(i for i in graph.input if i.name not in inits)
    return [d.dim_value if d.HasField('dim_value') and d.dim_value > 0 else None
            for d in first.type.tensor_type.shape.dim]


def check_onnx(model: 'onnx.ModelProto', what: str) -> None:
    """`onnx.checker`'s full check (strict type and shape inference) of a model, its failure as one line.

    Args:
        model: The model.
        what: What the model is, for the message (e.g. 'the fp16 model').

    Raises:
        ValueError: `<what> fails onnx.checker: <the checker's first 300 characters>`.
    """
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001  (the checker raises several classes; one line for all)
        first = ' '.join(str(e).split())[:300]
        raise ValueError(f'{what} fails onnx.checker: {first}') from None

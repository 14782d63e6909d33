"""The one onnxruntime session recipe, its record, and a bound runner (I/O binding) for timing.

Every onnxruntime session of the package is made by `ort_session`: fna-bench's `onnxruntime` rows, the
latency tables' parts, the export parity gate, INT8 evaluation and its latency. `session_record` is what a
result records about that recipe (the same dict in a fna-bench row and in a latency table), and `bind_io`
turns a session and its inputs into a zero-argument callable whose inputs and outputs are bound once. What an
ONNX file is (its precision, its input dims) is `fna_zoo.onnxgraph`'s.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..deprecation import moved_names
from ..onnxgraph import load as _load
from ..onnxgraph import precision as _precision
from ..onnxgraph import quant as _quant

if TYPE_CHECKING:
    import onnxruntime

__all__ = ['ort_session', 'session_options', 'session_record', 'bind_io']

_logger = logging.getLogger(__name__)

# NOTE: the ONNX graph helpers that lived here moved to `fna_zoo.onnxgraph` (below this layer and the export);
# the old names still import from here, with a DeprecationWarning, for one release
__getattr__ = moved_names(__name__, {'QUANT_OPS': _quant, 'load_onnx': _load, 'onnx_input_dims': _load,
                                     'onnx_precision': _precision})


def _cuda_index(device: str) -> int | None:
    """None for a CPU device, else the CUDA device index ('cuda' is 0)."""
    kind, _, index = str(device).partition(':')
    if kind.strip().lower() != 'cuda':
        return None
    return int(index) if index else 0


def _provider(device: str) -> str:
    return 'CPUExecutionProvider' if _cuda_index(device) is None else 'CUDAExecutionProvider'


def session_options(threads: int | None = None) -> 'onnxruntime.SessionOptions':
    """The one recipe's session options (`ort_session`; a caller may add to them, e.g. the profiler).

    Args:
        threads: Intra-op threads (None or 0: onnxruntime's default, the physical cores).
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: the optimiser's notes on unused initializers are noise
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = int(threads)
    # NOTE: idle intra-op threads block instead of spinning: a spinning pool keeps its cores busy after each run,
    # which slows whatever runs next (the next part, another session timed in alternation, other users of a
    # shared machine) and so skews sums of separately timed parts.
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return opts


def ort_session(model: str | os.PathLike | bytes, threads: int | None = None,
                device: str = 'cpu') -> 'onnxruntime.InferenceSession':
    """An onnxruntime session made by the one recipe (see `session_record` for what it records).

    Every graph optimisation (ORT_ENABLE_ALL), sequential execution with one inter-op thread, `threads`
    intra-op threads that block instead of spinning, and the CUDA provider (before the CPU one) on CUDA.

    Args:
        model: An ONNX file, or a serialized model (bytes).
        threads: Intra-op threads (None or 0: onnxruntime's default, the physical cores).
        device: 'cpu', 'cuda' or 'cuda:N'.

    Raises:
        RuntimeError: On CUDA, when this onnxruntime has no CUDAExecutionProvider (one line).
    """
    import onnxruntime as ort

    opts = session_options(threads)
    index = _cuda_index(device)
    providers: list[Any] = ['CPUExecutionProvider']
    if index is not None:
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise RuntimeError('onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu); '
                               'expected it for device cuda, or device cpu')
        providers = [('CUDAExecutionProvider', {'device_id': index}), 'CPUExecutionProvider']
    source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
    return ort.InferenceSession(source, opts, providers=providers)


def session_record(threads: int | None, device: str = 'cpu', io_binding: bool = True) -> dict[str, Any]:
    """The settings of an `ort_session` that change timings, as results record them (JSON types).

    Args:
        threads: Intra-op threads the session was made with (None: onnxruntime's default).
        device: 'cpu', 'cuda' or 'cuda:N'.
        io_binding: Whether runs go through `bind_io` (inputs and outputs bound once).
    """
    return {'graph_optimization': 'all', 'execution': 'sequential', 'inter_op_threads': 1,
            'intra_op_threads': int(threads) if threads else None, 'intra_op_spinning': False,
            'io_binding': bool(io_binding), 'provider': _provider(device)}


def bind_io(sess: Any, feeds: Mapping[str, np.ndarray], device: str = 'cpu') -> Callable[[], Any]:
    """One inference of `sess` on `feeds` with inputs and outputs bound once (runs the session once here).

    On CUDA the inputs are copied to the GPU once and the outputs stay there, so a timed run holds no copy
    between host and device (as a torch row on CUDA, whose input is already on the device).

    Args:
        sess: An `ort_session`.
        feeds: Input name -> array (fp32 as the graph expects).
        device: The session's device.

    Returns:
        A zero-argument callable running the session once (it returns the bound output values).
    """
    import onnxruntime as ort

    feeds = {name: np.ascontiguousarray(x) for name, x in feeds.items()}
    outs = sess.run(None, feeds)
    index = _cuda_index(device)
    # NOTE: inputs and outputs are bound once to fixed buffers, so a timed run holds no allocation or copy of
    # the output into a new numpy array: in a whole network those tensors stay in onnxruntime's arena.
    binding = sess.io_binding()
    if index is None:
        for name, x in feeds.items():
            binding.bind_cpu_input(name, x)
        keep = [ort.OrtValue.ortvalue_from_numpy(np.empty_like(o)) for o in outs]
    else:  # pragma: no cover (needs onnxruntime-gpu and a GPU)
        inputs = {name: ort.OrtValue.ortvalue_from_numpy(x, 'cuda', index) for name, x in feeds.items()}
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        keep = [ort.OrtValue.ortvalue_from_shape_and_type(o.shape, o.dtype.type, 'cuda', index) for o in outs]
        feeds = inputs  # type: ignore[assignment]
    for o, value in zip(sess.get_outputs(), keep):
        binding.bind_ortvalue_output(o.name, value)

    def run() -> Any:
        sess.run_with_iobinding(binding)
        return keep, feeds  # holds the bound buffers alive

    return run

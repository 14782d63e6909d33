"""Turn a module and its inputs, or an ONNX model and its input, into one timed inference on a runtime.

Every runtime of `fna_zoo.runtime.names` has one runner here, used by `fna-bench` (`fna_zoo.bench`) and by
the latency tables (`fna_zoo.nas.latency`) alike:

* ``torch`` / ``torch-fp16`` / ``torch-compile``: `torch_runner` (inference mode; a failed compile, or fp16 on
  a CPU, is a skip reason, not an error);
* ``onnxruntime``: `onnxruntime_runner`, a session of the one recipe (`fna_zoo.runtime.ort`) with inputs and
  outputs bound once;
* ``tensorrt`` / ``tensorrt-fp16``: `tensorrt_runner`, a strongly typed engine built from the ONNX file
  (`fna_zoo.runtime.tensorrt`; fp16 from its mixed-precision copy, `fna_zoo.onnxgraph.fp16`).

The OpenVINO runner is `fna_zoo.runtime.openvino`'s. The plugins (`fna_zoo.runtime.registry`) call these; which
plugin runs a runtime name is `fna_zoo.runtime.select`'s (`module_runner`, `check_runtime`). A `Runner` is the zero-argument callable, the device synchronisation to call before
reading the clock, the precision, a skip reason, and what the result should record (`options`, `note`, `extra`).
"""
from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .devices import device_kind
from .timing import LatencyStats, cuda_sync, time_callable

__all__ = ['DEFAULT_OPSET', 'Runner', 'onnx_bytes', 'torch_runner', 'onnxruntime_runner', 'tensorrt_runner',
           'time_runner']

_logger = logging.getLogger(__name__)
# the torch runtimes' precisions (the plugins of `fna_zoo.runtime.torch_runtime` say the same)
_TORCH_PRECISION = {'torch': 'fp32', 'torch-fp16': 'fp16', 'torch-compile': 'fp32'}

DEFAULT_OPSET = 18  # the ONNX opset of every export (fna-export's default; the latency-table parts)


@dataclass
class Runner:
    """One inference ready to time on a runtime, or the reason it cannot run here.

    Args:
        fn: One inference on fixed inputs (None when skipped).
        sync: Device synchronisation before each clock read (CUDA), or None.
        precision: 'fp32', 'fp16' or 'int8'.
        skip: Why it is not timed ('' when it is).
        note: Extra facts for a result row (e.g. the parity of an on-the-fly export).
        extra: Row fields the runner decides (`input_size` of a fixed-size ONNX file, `io_included`).
        options: Runtime settings that change timings, recorded with a result (`ort.session_record` for
            onnxruntime; empty for torch).
    """

    fn: Callable[[], Any] | None
    sync: Callable[[], Any] | None
    precision: str
    skip: str = ''
    note: str = ''
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def skipped(cls, precision: str, why: str) -> 'Runner':
        """A runner that does not run, with its reason (one line, at most 200 characters).

        Args:
            precision: The precision the cell would have run at.
            why: The reason (folded to one line).
        """
        return cls(None, None, precision, skip=' '.join(str(why).split())[:200])


def onnx_bytes(module: nn.Module, inputs: Sequence[torch.Tensor]) -> bytes:
    """`module` exported to an in-memory ONNX model with static shapes (inputs `in0`.., outputs `out0`..).

    Args:
        module: An eval-mode module.
        inputs: Example inputs (their shapes are fixed in the graph).
    """
    f = io.BytesIO()
    # NOTE: the TorchScript exporter (dynamo=False), as fna_zoo.export: one self-contained model in ~0.1 s per
    # block; its deprecation and tracer warnings are expected and silenced.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, tuple(inputs), f, dynamo=False, opset_version=DEFAULT_OPSET,
                          input_names=[f'in{i}' for i in range(len(inputs))], do_constant_folding=True)
    return f.getvalue()


def torch_runner(module: nn.Module, inputs: Sequence[torch.Tensor], runtime: str = 'torch',
                 device: str = 'cpu') -> Runner:
    """PyTorch eager (fp32 or fp16) or `torch.compile` of `module` on fixed `inputs`, in inference mode.

    Args:
        module: An eval-mode module (moved to `device`; fp16 runs a copy).
        inputs: Its inputs (moved to `device`, cast to fp16 for fp16).
        runtime: 'torch', 'torch-fp16' or 'torch-compile' (canonical names: the torch plugins call it).
        device: 'cpu', 'cuda' or 'cuda:N'.
    """
    name = runtime
    if name not in _TORCH_PRECISION:
        raise ValueError(f'runtime {runtime!r} is not a torch runtime; expected torch, torch-fp16 or torch-compile')
    precision = _TORCH_PRECISION[name]
    if precision == 'fp16' and device_kind(device) != 'cuda':
        return Runner.skipped(precision, 'fp16 is timed on CUDA only')
    module = module.to(device)
    xs = [x.to(device) for x in inputs]
    if precision == 'fp16':
        module, xs = copy.deepcopy(module).half(), [x.half() for x in xs]
    if name == 'torch-compile':
        try:
            compiled = torch.compile(module)
            with torch.inference_mode():
                compiled(*xs)
        except Exception as e:  # noqa: BLE001  (inductor needs a compiler toolchain; a failure is a skip)
            return Runner.skipped(precision, f'torch.compile failed: {" ".join(str(e).split())[:160]}')
        module = compiled

    def run() -> Any:
        with torch.inference_mode():
            return module(*xs)

    return Runner(run, cuda_sync(device), precision)


def onnxruntime_runner(model: str | os.PathLike | bytes, inputs: Sequence[np.ndarray | torch.Tensor],
                       threads: int | None = None, device: str = 'cpu', precision: str | None = None) -> Runner:
    """An onnxruntime session of the one recipe (`fna_zoo.runtime.ort.ort_session`) on fixed inputs, bound once.

    Args:
        model: An ONNX file or a serialized model.
        inputs: One array per graph input, in order (torch tensors are converted).
        threads: Intra-op threads (None: onnxruntime's default).
        device: 'cpu', 'cuda' or 'cuda:N'.
        precision: What to record (default: 'int8' for a quantized model, else 'fp32').

    Raises:
        RuntimeError: On CUDA without onnxruntime's CUDA provider.
    """
    from ..onnxgraph.precision import onnx_precision
    from .ort import bind_io, ort_session, session_record

    sess = ort_session(model, threads, device)
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f'the ONNX model has inputs {names}; got {len(inputs)} input arrays')
    arrays = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
    fn = bind_io(sess, dict(zip(names, arrays)), device)
    return Runner(fn, None, precision or onnx_precision(model), options=session_record(threads, device))


def tensorrt_runner(onnx_path: str | os.PathLike, inputs: Sequence[torch.Tensor], engine_path: str | os.PathLike,
                    precision: str = 'fp32', dynamic: bool = True,
                    timing_cache: str | os.PathLike | None = None) -> Runner:  # pragma: no cover (needs a GPU)
    """A strongly typed TensorRT engine built from `onnx_path` for the inputs' shapes, run on CUDA copies of them.

    The engine's precision is its ONNX file's (`fna_zoo.runtime.tensorrt.engine_plan`): for 'fp16' from a
    float32 file, the mixed-precision copy (`fna_zoo.onnxgraph.fp16.convert_fp16_file`) is written beside the
    engine first and built instead (timing only: it is not parity-gated here, `fna-export --fp16` gates it).

    Args:
        onnx_path: The ONNX file (float32; fp16 for 'fp16'; QDQ for 'int8').
        inputs: Its inputs (the first sets batch, H and W of the engine; CPU ones are copied to the GPU).
        engine_path: Where the engine is written (rebuilt every time; the timing cache keeps it quick).
        precision: 'fp32', 'fp16' or 'int8' (int8: a QDQ file).
        dynamic: Whether the engine's batch dimension is dynamic (an optimisation profile at this batch).
        timing_cache: Timing cache file (default: beside the engine).
    """
    from ..onnxgraph.fp16 import convert_fp16_file
    from ..onnxgraph.precision import onnx_precision
    from .tensorrt import EngineRunner, build_engine

    note = ''
    if precision == 'fp16' and onnx_precision(onnx_path) == 'fp32':
        fp16_path = Path(engine_path).with_suffix('.fp16.onnx')
        info = convert_fp16_file(onnx_path, fp16_path)
        onnx_path, note = fp16_path, f'fp16 ONNX converted here ({info.fp16_nodes} nodes fp16, not parity-gated)'
    x = inputs[0]
    batch, size = int(x.shape[0]), (int(x.shape[2]), int(x.shape[3]))
    engine = build_engine(onnx_path, engine_path, size, precision, batch=batch, max_batch=batch, dynamic=dynamic,
                          timing_cache=timing_cache, why=f'runtime tensorrt ({precision})')
    cuda = [t if t.is_cuda else t.to('cuda') for t in inputs]
    runner = EngineRunner(engine, [t.contiguous() for t in cuda])  # reads the engine file now
    runner()
    return Runner(runner, cuda_sync(cuda[0].device), precision, note=note)


def time_runner(runner: Runner, warmup: int, runs: int | None = None, min_time: float | None = None,
                batch: int = 1) -> LatencyStats:
    """`time_callable` of a runner (ValueError in one line when it is skipped).

    Args:
        runner: What to time.
        warmup: Untimed runs first.
        runs: Timed runs.
        min_time: Or a time budget in seconds.
        batch: Items per call, for the throughput.
    """
    if runner.fn is None:
        raise ValueError(f'nothing to time: {runner.skip or "no inference"}')
    return time_callable(runner.fn, warmup=warmup, runs=runs, min_time=min_time, sync=runner.sync, batch=batch)

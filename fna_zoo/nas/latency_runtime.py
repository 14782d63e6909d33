"""Runtimes a latency table is measured on: turn a module and its inputs into one timed inference.

The latency objective of the search (`fna_zoo.nas.latency`) times every candidate block on the runtime a
deployment uses, as ProxylessNAS (Cai et al., ICLR 2019 - https://arxiv.org/abs/1812.00332) does with its
mobile lookup tables; FNA (https://arxiv.org/abs/2001.02525) and Jung et al.
(https://arxiv.org/abs/2206.08509) search against MAdds only. Runtimes:

* ``onnxruntime-cpu``: the module exported to ONNX (TorchScript exporter, static shapes) and run by an
  onnxruntime CPU session with every graph optimisation, inputs and outputs bound once (I/O binding);
* ``torch-cpu``: PyTorch eager on the CPU (inference mode);
* ``torch-cuda`` / ``torch-cuda-fp16``: PyTorch eager on the first CUDA GPU, fp32 / fp16;
* ``tensorrt`` / ``tensorrt-fp16``: a TensorRT engine built from the same ONNX export (needs `tensorrt`).

Timing is `fna_zoo.bench.timing.time_callable` (the timing core of fna-bench), never a second copy.
A runtime that cannot run here fails in `get_runtime` with one line saying what is missing.
"""
from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..bench.timing import LatencyStats, cuda_sync, time_callable

__all__ = ['RUNTIMES', 'Runtime', 'get_runtime', 'onnx_bytes', 'measure_module']

_logger = logging.getLogger(__name__)

# name -> (precision, device)
RUNTIMES: dict[str, tuple[str, str]] = {
    'onnxruntime-cpu': ('fp32', 'cpu'),
    'torch-cpu': ('fp32', 'cpu'),
    'torch-cuda': ('fp32', 'cuda'),
    'torch-cuda-fp16': ('fp16', 'cuda'),
    'tensorrt': ('fp32', 'cuda'),
    'tensorrt-fp16': ('fp16', 'cuda'),
}
_ONNX_OPSET = 18  # fna_zoo.export.onnx_export.DEFAULT_OPSET (not imported: it pulls the detector export code)

Prepared = tuple[Callable[[], Any], Callable[[], Any] | None]


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
        torch.onnx.export(module, tuple(inputs), f, dynamo=False, opset_version=_ONNX_OPSET,
                          input_names=[f'in{i}' for i in range(len(inputs))], do_constant_folding=True)
    return f.getvalue()


@dataclass(frozen=True)
class Runtime:
    """A runtime to time modules on (make one with `get_runtime`, which checks it can run here).

    Args:
        name: One of `RUNTIMES`.
        threads: CPU intra-op threads (onnxruntime session / torch), recorded with every table.
    """

    name: str
    threads: int

    @property
    def precision(self) -> str:
        return RUNTIMES[self.name][0]

    @property
    def device(self) -> str:
        """'cpu' or the GPU's name."""
        if RUNTIMES[self.name][1] == 'cpu':
            return 'cpu'
        return f'cuda ({torch.cuda.get_device_name(0)})'

    @property
    def version(self) -> str:
        """Version of the library that runs the model."""
        if self.name == 'onnxruntime-cpu':
            import onnxruntime

            return f'onnxruntime {onnxruntime.__version__}'
        if self.name.startswith('tensorrt'):
            import tensorrt

            return f'tensorrt {tensorrt.__version__}'
        cuda = f' (CUDA {torch.version.cuda})' if self.name.startswith('torch-cuda') else ''
        return f'torch {torch.__version__}{cuda}'

    @property
    def options(self) -> dict[str, Any]:
        """Session settings that change timings (recorded with a table)."""
        if self.name == 'onnxruntime-cpu':
            return {'graph_optimization': 'all', 'intra_op_spinning': False, 'io_binding': True}
        return {}

    def describe(self) -> dict[str, Any]:
        """The runtime record of a latency table."""
        return {'name': self.name, 'version': self.version, 'precision': self.precision, 'device': self.device,
                'threads': self.threads, 'options': self.options}

    @contextmanager
    def active(self) -> Iterator[None]:
        """Set torch's intra-op threads for the duration (torch runtimes; restored after)."""
        before = torch.get_num_threads()
        if self.name.startswith('torch'):
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> Prepared:
        """(one inference, device sync or None) of `module` on fixed `inputs`.

        Args:
            module: An eval-mode module.
            inputs: Its inputs (fp32, CPU; moved and cast as the runtime needs).
        """
        if self.name == 'onnxruntime-cpu':
            return _prepare_ort(module, inputs, self.threads)
        if self.name.startswith('tensorrt'):
            return _prepare_trt(module, inputs, self.precision == 'fp16')
        device = torch.device('cuda' if self.name.startswith('torch-cuda') else 'cpu')
        module = module.to(device)
        xs = [x.to(device) for x in inputs]
        if self.precision == 'fp16':
            module, xs = module.half(), [x.half() for x in xs]

        def run() -> Any:
            with torch.inference_mode():
                return module(*xs)

        return run, cuda_sync(device)


def _prepare_ort(module: nn.Module, inputs: Sequence[torch.Tensor], threads: int) -> Prepared:
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # NOTE: idle intra-op threads block instead of spinning: a spinning pool keeps its cores busy after each run,
    # which slows whatever runs next (the next part, another session timed in alternation, other users of a
    # shared machine) and so skews sums of separately timed parts.
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    sess = ort.InferenceSession(onnx_bytes(module, inputs), opts, providers=['CPUExecutionProvider'])
    feeds = {i.name: np.ascontiguousarray(x.detach().numpy()) for i, x in zip(sess.get_inputs(), inputs)}
    outs = sess.run(None, feeds)
    # NOTE: inputs and outputs are bound once to fixed buffers, so a timed run holds no allocation or copy of
    # the output into a new numpy array: in a whole network those tensors stay in onnxruntime's arena.
    binding = sess.io_binding()
    for name, x in feeds.items():
        binding.bind_cpu_input(name, x)
    keep = [ort.OrtValue.ortvalue_from_numpy(np.empty_like(o)) for o in outs]
    for o, value in zip(sess.get_outputs(), keep):
        binding.bind_ortvalue_output(o.name, value)

    def run() -> Any:
        return sess.run_with_iobinding(binding), feeds, keep  # holds the bound buffers alive

    return run, None


def _prepare_trt(module: nn.Module, inputs: Sequence[torch.Tensor], fp16: bool) -> Prepared:  # pragma: no cover
    """A TensorRT engine of the part, built and run by `fna_zoo.export.tensorrt` (static shapes)."""
    import tempfile
    from pathlib import Path

    from ..export.tensorrt import EngineRunner, build_engine

    x = inputs[0]
    with tempfile.TemporaryDirectory(prefix='fna_trt_part_') as tmp:
        onnx_path = Path(tmp) / 'part.onnx'
        onnx_path.write_bytes(onnx_bytes(module, inputs))
        engine = build_engine(onnx_path, Path(tmp) / 'part.engine', tuple(x.shape[2:]), 'fp16' if fp16 else 'fp32',
                              batch=x.shape[0], max_batch=x.shape[0], dynamic=False)
        runner = EngineRunner(engine, [t.to('cuda').contiguous() for t in inputs])  # reads the engine file now
    return runner, cuda_sync(torch.device('cuda'))


def _check_available(name: str) -> None:
    if name not in RUNTIMES:
        raise ValueError(f'runtime {name!r} is unknown; expected one of {", ".join(RUNTIMES)}')
    if name == 'onnxruntime-cpu' and importlib.util.find_spec('onnxruntime') is None:
        raise ValueError("runtime 'onnxruntime-cpu' needs the onnxruntime package, which is not installed here "
                         "(pip install onnxruntime); expected it, or --runtime torch-cpu")
    if name.startswith('tensorrt') and importlib.util.find_spec('tensorrt') is None:
        raise ValueError(f'runtime {name!r} needs the tensorrt Python package, which is not installed here '
                         '(pip install tensorrt on a machine with an NVIDIA GPU); use --runtime onnxruntime-cpu '
                         'or torch-cpu on this machine')
    if RUNTIMES[name][1] == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'runtime {name!r} needs a CUDA GPU, and torch sees none here '
                         '(torch.cuda.is_available() is False); use --runtime onnxruntime-cpu or torch-cpu')


def get_runtime(name: str, threads: int | None = None) -> Runtime:
    """A runtime that can run on this machine, or a ValueError saying in one line why not.

    Args:
        name: One of `RUNTIMES`.
        threads: CPU intra-op threads (default: torch's current setting, usually the physical cores).
    """
    _check_available(name)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f'threads is {threads!r}; expected a positive integer')
    return Runtime(name, int(threads or torch.get_num_threads()))


def measure_module(runtime: Runtime, module: nn.Module, inputs: Sequence[torch.Tensor], warmup: int,
                   repeats: int) -> LatencyStats:
    """Latency of one inference of `module` on `inputs` on `runtime` (warm-up, then `repeats` timed runs).

    Args:
        runtime: Where to run.
        module: An eval-mode module.
        inputs: Its inputs.
        warmup: Untimed runs first.
        repeats: Timed runs.
    """
    with runtime.active():
        fn, sync = runtime.prepare(module.eval(), inputs)
        return time_callable(fn, warmup=warmup, runs=repeats, sync=sync)

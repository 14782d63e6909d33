"""TensorRT engines from ONNX files, and a runner timing one (only where the `tensorrt` package is installed).

The `tensorrt` / `tensorrt-fp16` runtimes of fna-bench and the latency tables, and `fna-export --format
engine` (`fna_zoo.export.tensorrt`), build and run engines with this module. Engines are tied to the GPU
model and the TensorRT version that built them, so the build records both in `<engine>.json` beside the
engine; ship the ONNX file and rebuild on the target. Where `tensorrt` is missing, `build_engine` raises
`TensorRTUnavailable` with the `trtexec` command that builds the same engine.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

from ..fileio import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import torch

__all__ = ['TensorRTUnavailable', 'Precision', 'trtexec_command', 'build_engine', 'import_tensorrt', 'EngineRunner']

_logger = logging.getLogger(__name__)

Precision = Literal['fp32', 'fp16', 'int8']


class TensorRTUnavailable(ImportError):
    """The `tensorrt` Python package is not importable."""


def import_tensorrt(why: str):
    """`import tensorrt`, or `TensorRTUnavailable` saying what needs it and what to install.

    Args:
        why: What needs TensorRT (starts the error message).
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(f"{why} needs the tensorrt Python package (pip install 'tensorrt' on a machine with "
                                  'an NVIDIA GPU and CUDA)') from None
    return trt


def _shapes(input_size: tuple[int, int], batch: int, max_batch: int, dynamic: bool) -> tuple[str, str, str]:
    h, w = input_size
    lo, hi = (1, max_batch) if dynamic else (batch, batch)
    return (f'images:{lo}x3x{h}x{w}', f'images:{batch}x3x{h}x{w}', f'images:{hi}x3x{h}x{w}')


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_size: tuple[int, int],
                    precision: Precision = 'fp32', batch: int = 1, max_batch: int = 32, dynamic: bool = True) -> str:
    """The `trtexec` command line that builds the engine `build_engine` would.

    Args:
        onnx_path: The ONNX file.
        engine_path: Engine to write.
        input_size: (H, W).
        precision: 'fp32', 'fp16' or 'int8' (int8 expects the QDQ model from `--int8`).
        batch: Optimal batch.
        max_batch: Largest batch of the optimisation profile.
        dynamic: Whether the batch dimension is dynamic.
    """
    lo, opt, hi = _shapes(input_size, batch, max_batch, dynamic)
    cmd = (f'trtexec --onnx={onnx_path} --saveEngine={engine_path} --minShapes={lo} --optShapes={opt} '
           f'--maxShapes={hi} --timingCacheFile={Path(engine_path).with_suffix(".timing.cache")}')
    return cmd + {'fp32': '', 'fp16': ' --fp16', 'int8': ' --int8 --fp16'}[precision]


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_size: tuple[int, int],
                 precision: Precision = 'fp32', batch: int = 1, max_batch: int = 32, dynamic: bool = True,
                 timing_cache: str | os.PathLike | None = None, workspace_gib: float = 4.0,
                 calib_images: Iterable[np.ndarray] | None = None, why: str = 'building a TensorRT engine') -> Path:
    """Build a serialized TensorRT engine from an ONNX file (atomic write), plus `<engine>.json` with the
    TensorRT version, GPU name, precision and shapes.

    Args:
        onnx_path: The ONNX file (input `images`).
        engine_path: Engine to write.
        input_size: (H, W).
        precision: 'fp32', 'fp16' or 'int8'. For int8 pass the QDQ model from `--int8` (explicit quantization;
            the scales come from its calibration) or `calib_images` for TensorRT's own entropy calibration.
        batch: Optimal batch of the optimisation profile.
        max_batch: Largest batch (dynamic batch only).
        dynamic: Whether the batch dimension is dynamic.
        timing_cache: Timing cache file, read when present and written back (default: beside the engine).
        workspace_gib: Builder workspace limit.
        calib_images: Calibration batches `[N, 3, H, W]` float32 for implicit int8.
        why: What needs TensorRT (starts the error message when it is missing).
    """
    engine_path = Path(engine_path)
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(
            f"{why} needs the tensorrt Python package (pip install 'tensorrt' on a machine with an NVIDIA GPU and "
            f"CUDA); build the engine elsewhere with: "
            f"{trtexec_command(onnx_path, engine_path, input_size, precision, batch, max_batch, dynamic)}") from None

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f'TensorRT cannot parse {str(onnx_path)!r}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ('fp16', 'int8'):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == 'int8':
        config.set_flag(trt.BuilderFlag.INT8)
        if calib_images is not None:
            config.int8_calibrator = _calibrator(trt, list(calib_images), engine_path.with_suffix('.calib.cache'))
    lo, opt, hi = (tuple(int(v) for v in s.split(':')[1].split('x')) for s in _shapes(input_size, batch, max_batch,
                                                                                      dynamic))
    inp = network.get_input(0)
    if any(d < 0 for d in tuple(inp.shape)):  # a static graph (e.g. a latency-table part) needs no profile
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else engine_path.with_suffix('.timing.cache')
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b'')
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {str(onnx_path)!r} (see its log above)')
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    info = {'tensorrt': trt.__version__, 'gpu': _gpu_name(), 'precision': precision, 'onnx': str(onnx_path),
            'min_shape': list(lo), 'opt_shape': list(opt), 'max_shape': list(hi), 'timing_cache': str(cache_path)}
    atomic_write_text(engine_path.with_suffix(engine_path.suffix + '.json'), json.dumps(info, indent=2))
    _logger.info('TensorRT %s engine for %s written to %s', precision, info['gpu'], engine_path)
    return engine_path


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'unknown'
    except Exception:  # noqa: BLE001  (only informative)
        return 'unknown'


def _calibrator(trt, batches: list[np.ndarray], cache_file: Path):  # pragma: no cover (needs a GPU)
    """TensorRT entropy calibrator over host batches (copied to the GPU with torch)."""
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches, self.index, self.current = batches, 0, None

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0])

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            self.current = torch.from_numpy(np.ascontiguousarray(self.batches[self.index])).cuda()
            self.index += 1
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return _Calibrator()


class EngineRunner:
    """Runs a serialized TensorRT engine on CUDA tensors (TensorRT >= 10 named-tensor API, torch buffers).

    Every input and output lives in a torch CUDA tensor allocated once, so a call is one
    `execute_async_v3` on torch's current stream (time it with a CUDA synchronisation, as fna-bench does).

    Args:
        engine_path: The engine file (`build_engine` or `trtexec --saveEngine`).
        inputs: The CUDA input tensor(s), in the engine's input order (their shapes set the dynamic dimensions).
    """

    def __init__(self, engine_path: str | os.PathLike, inputs: 'torch.Tensor | Sequence[torch.Tensor]') -> None:
        import torch

        trt = import_tensorrt('timing a TensorRT engine')
        path = Path(engine_path)
        if not path.is_file():
            raise FileNotFoundError(f'TensorRT engine {str(path)!r} does not exist')
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ValueError(f'TensorRT cannot load {str(path)!r}: built by another TensorRT version or GPU, or corrupt')
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        in_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        if len(tensors) != len(in_names):
            raise ValueError(f'engine has inputs {in_names}; got {len(tensors)} input tensors')
        self.inputs = {n: t.contiguous() for n, t in zip(in_names, tensors)}
        for n, t in self.inputs.items():
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        self.outputs: dict[str, torch.Tensor] = {}
        for n in names:
            if n in self.inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                # NOTE: NonMaxSuppression outputs are data-dependent; their size is known only after a run.
                raise ValueError(f'engine output {n!r} has a data-dependent shape {shape}; time the raw export '
                                 '(fna-export --what raw) instead of the one with in-graph NMS')
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
            self.outputs[n] = torch.empty(shape, dtype=dtype, device='cuda')
            self.context.set_tensor_address(n, self.outputs[n].data_ptr())

    def __call__(self) -> dict[str, 'torch.Tensor']:
        """One inference on the bound inputs; returns the output tensors (filled once the stream is synced)."""
        import torch

        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError('TensorRT execute_async_v3 failed (see its log above)')
        return self.outputs

"""Build, time and check a TensorRT engine from the written ONNX, only where the `tensorrt` package
and an NVIDIA GPU are present (device buffers through cuda-python, which TensorRT 10 installs
with its samples); everywhere else `engine_unavailable()` says why in one line."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def engine_unavailable() -> str | None:
    """None when an engine can be built here, else the one-line reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed"
    if not (os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")):
        return "no NVIDIA GPU is visible"
    try:
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401
        except ImportError:
            return "cuda-python (needed for device buffers) is not installed"
    return None


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def build_engine(onnx_bytes: bytes, profile: Mapping[str, Any], fp16: bool, int8: bool) -> tuple[bytes | None, list[str]]:
    """Parse and build; returns (serialized engine or None, parser/build errors)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        return None, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8 and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)
    optimization = builder.create_optimization_profile()
    for name, dims in profile["inputs"].items():
        optimization.set_shape(name, dims["min"], dims["opt"], dims["max"])
    config.add_optimization_profile(optimization)
    engine = builder.build_serialized_network(network, config)
    return (bytes(engine), []) if engine is not None else (None, ["build_serialized_network returned None"])


def run_engine(engine_bytes: bytes, feeds: Mapping[str, np.ndarray], repeat: int = 50) -> tuple[list[np.ndarray], float]:
    """Run the engine on `feeds`; returns the outputs and the median latency in milliseconds."""
    import tensorrt as trt

    cudart = _cudart()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    _, stream = cudart.cudaStreamCreate()
    buffers, outputs = [], []
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            context.set_input_shape(name, feeds[name].shape)
    for name in names:
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = trt.nptype(engine.get_tensor_dtype(name))
        host = np.ascontiguousarray(feeds[name].astype(dtype)) if is_input else np.empty(tuple(context.get_tensor_shape(name)), dtype)
        _, device = cudart.cudaMalloc(max(1, host.nbytes))
        buffers.append(device)
        context.set_tensor_address(name, int(device))
        if is_input:
            cudart.cudaMemcpy(device, host.ctypes.data, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        else:
            outputs.append((host, device))
    times = []
    for _ in range(repeat + 5):
        start = time.perf_counter()
        context.execute_async_v3(stream)
        cudart.cudaStreamSynchronize(stream)
        times.append(time.perf_counter() - start)
    for host, device in outputs:
        cudart.cudaMemcpy(host.ctypes.data, device, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
    for device in buffers:
        cudart.cudaFree(device)
    cudart.cudaStreamDestroy(stream)
    return [host for host, _ in outputs], float(np.median(times[5:]) * 1000)


def engine_section(onnx_bytes: bytes, profile: Mapping[str, Any], feeds: Mapping[str, np.ndarray], fp16: bool, int8: bool,
                   reference: Callable[[], Sequence[np.ndarray]]) -> tuple[dict[str, Any], bytes | None]:
    """Build, time and compare with `reference()` (the JAX backend's outputs)."""
    start = time.perf_counter()
    engine, errors = build_engine(onnx_bytes, profile, fp16, int8)
    build_seconds = time.perf_counter() - start
    if engine is None:
        return {"built": False, "errors": errors, "build_seconds": build_seconds}, None
    outputs, latency_ms = run_engine(engine, feeds)
    try:
        expected = [np.asarray(a) for a in reference()]
    except Exception as error:  # the JAX backend cannot run this graph
        compare: dict[str, Any] = {"against": "jax", "max_abs_error": float("nan"), "error": f"{type(error).__name__}: {error}"[:300]}
    else:
        errors_abs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
                      for a, b in zip(outputs, expected)]
        compare = {"against": "jax", "max_abs_error": max(errors_abs, default=0.0), "per_output": errors_abs}
    return {"built": True, "build_seconds": build_seconds, "latency_ms": latency_ms, "engine_bytes": len(engine),
            "compare": compare}, engine

"""`kiln bench`: latency of a compiled model against onnxruntime (all graph optimizations on, the
same intra-op thread count), median and p90 over timed repeats after warm-up, with the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import onnx

from .errors import OptionError
from .ir import Graph


def machine_description() -> dict[str, Any]:
    """CPU model, logical CPUs this process may use, OS and Python, for recording with timings."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cpus": usable_cpus(), "os": platform.platform(), "python": platform.python_version()}


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_ticks(stat_path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, stolen) clock ticks of all CPUs since boot, from the kernel's `cpu` line (None where
    there is none): on a shared VM the stolen share says how much neighbours disturbed a timing."""
    try:
        with open(stat_path) as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + irq + softirq, steal


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Percent of the CPU time this machine wanted between two cpu_ticks() readings that the
    hypervisor gave to other guests instead (None when either reading is missing or nothing ran)."""
    if before is None or after is None:
        return None
    busy, stolen = after[0] - before[0], after[1] - before[1]
    return round(100.0 * stolen / (busy + stolen), 1) if busy + stolen > 0 else None


def steal_sentence(percent: float | None, during: str = "during the run") -> str:
    """One line for a results file saying how much CPU time other guests took while it was measured."""
    measured = f"{percent}%" if percent is not None else "not measured"
    return f"CPU time stolen by other guests {during}: {measured}."


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Pin this process to `threads` CPUs while benchmarking (XLA sizes its thread pools from the
    affinity when its CPU client starts, so this binds XLA only in a process that has not used JAX
    yet, as under `kiln bench`; onnxruntime gets the number explicitly). Yields the count in effect."""
    available = usable_cpus()
    if threads is not None and threads < 1:
        raise OptionError(f"--threads must be at least 1, got {threads}")
    if threads is None or threads >= available or not hasattr(os, "sched_setaffinity"):
        yield min(threads or available, available)
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:threads])
    try:
        yield threads
    finally:
        os.sched_setaffinity(0, before)


def time_calls(calls: Mapping[str, Callable[[], Any]], repeat: int, warmup: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each runtime: median, p90, mean, min over `repeat` calls after
    `warmup` calls. Calls alternate between the runtimes so background load hits them alike."""
    if repeat < 1 or warmup < 0:
        raise OptionError(f"--repeat must be >= 1 and --warmup >= 0, got {repeat} and {warmup}")
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: summarize_samples(values, warmup) for name, values in samples.items()}


def summarize_samples(samples: list[float], warmup: int = 0) -> dict[str, float]:
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": float(np.percentile(samples, 90)),
        "mean_ms": statistics.fmean(samples),
        "min_ms": min(samples),
        "repeat": len(samples),
        "warmup": warmup,
    }


def benchmark_inputs(graph: Graph, batch: int, dims: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs; a symbolic first dimension is the batch, other symbols take `dims` (or the
    reference defaults). Integer masks are ones, token types zeros and positions 0..n-1, so
    embedding lookups stay in range as in real use."""
    from .ir import TensorType
    from .reference import random_inputs

    sizes: dict[str, int] = {}
    for value in graph.inputs:
        shape = value.shape if isinstance(value.type, TensorType) else None
        if shape is not None and len(shape) and not isinstance(shape[0], int) and shape[0]:
            sizes[str(shape[0])] = batch
    sizes.update(dims or {})
    feeds = random_inputs(graph, seed=seed, dim_sizes=sizes)
    for name, array in feeds.items():
        if array.dtype.kind not in "iu" or not array.ndim:
            continue
        lowered = name.lower()
        if "mask" in lowered:
            feeds[name] = np.ones_like(array)
        elif "token_type" in lowered or "segment" in lowered:
            feeds[name] = np.zeros_like(array)
        elif "position" in lowered:
            feeds[name] = np.broadcast_to(np.arange(array.shape[-1], dtype=array.dtype), array.shape).copy()
    return feeds


def onnxruntime_session(model: str | os.PathLike | onnx.ModelProto, threads: int) -> Any:
    """An onnxruntime CPU session with ORT_ENABLE_ALL and `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def benchmark_model(
    model: str | os.PathLike | onnx.ModelProto,
    backend: str = "cpu",
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
    repeat: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    opt_level: int = 2,
    precision: str = "fp32",
    **options: Any,
) -> dict[str, Any]:
    """Compile `model` for `backend` and time it against onnxruntime on the same random inputs."""
    with pinned_threads(threads) as count:
        return _benchmark(model, backend, batch, dims, repeat, warmup, count, opt_level, precision, options)


def _benchmark(model, backend, batch, dims, repeat, warmup, threads, opt_level, precision, options) -> dict[str, Any]:
    import onnxruntime

    from . import api
    from .reference import compare_outputs, to_runnable_model

    graph = api.load(model)
    feeds = benchmark_inputs(graph, batch, dims)
    start = time.perf_counter()
    compiled = api.compile(graph, backend=backend, opt_level=opt_level, precision=precision, **options)
    outputs = compiled(**feeds)  # the first call jit-compiles
    compile_seconds = time.perf_counter() - start
    session = onnxruntime_session(model if not isinstance(model, Graph) else to_runnable_model(graph), threads)
    names = [i.name for i in session.get_inputs()]
    ort_feeds = {name: feeds[name] for name in names}
    expected = session.run(None, ort_feeds)
    ticks = cpu_ticks()
    timings = time_calls({"kiln": lambda: compiled(**feeds), "onnxruntime": lambda: session.run(None, ort_feeds)},
                         repeat, warmup)
    steal = steal_percent(ticks, cpu_ticks())
    ours, theirs = timings["kiln"], timings["onnxruntime"]
    tolerance = (1e-4, 1e-5) if precision == "fp32" else (3e-2, 3e-2)  # low precision: a sanity check only
    verdict = compare_outputs(expected, outputs, rtol=tolerance[0], atol=tolerance[1])
    return {
        "model": _model_name(model),
        "backend": backend,
        "precision": precision,
        "opt_level": opt_level,
        "batch": batch,
        "inputs": {name: list(array.shape) for name, array in feeds.items()},
        "threads": threads,
        "machine": machine_description(),
        "steal_percent": steal,
        "kiln": dict(ours, compile_s=compile_seconds),
        "onnxruntime": dict(theirs, version=onnxruntime.__version__, graph_optimization="ORT_ENABLE_ALL"),
        "speedup": theirs["median_ms"] / ours["median_ms"],
        "max_abs_error": verdict.max_abs_error,
        "outputs_match": verdict.ok,
    }


def _model_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.path.basename(os.fspath(model))
    return getattr(getattr(model, "graph", None), "name", None) or getattr(model, "name", None) or "model"


def format_benchmark(result: Mapping[str, Any]) -> str:
    """A short table: our backend and onnxruntime, median/p90 ms, the ratio and the machine."""
    lines = [
        f"{result['model']}: batch {result['batch']}, {result['precision']}, -O{result['opt_level']}, "
        f"{result['threads']} threads on {result['machine']['cpu']}",
        f"{'runtime':<22}{'median ms':>11}{'p90 ms':>10}{'min ms':>10}",
    ]
    for label, key in ((f"kiln {result['backend']}", "kiln"), ("onnxruntime (ALL opt)", "onnxruntime")):
        entry = result[key]
        lines.append(f"{label:<22}{entry['median_ms']:>11.3f}{entry['p90_ms']:>10.3f}{entry['min_ms']:>10.3f}")
    faster = "faster" if result["speedup"] >= 1 else "slower"
    lines.append(f"kiln is {max(result['speedup'], 1 / result['speedup']):.2f}x {faster} than onnxruntime "
                 f"(median; compile {result['kiln']['compile_s']:.2f}s; outputs "
                 f"{'match' if result['outputs_match'] else 'DIFFER'}, max abs error {result['max_abs_error']:.3g})")
    lines.append(steal_sentence(result.get("steal_percent"), "while timing"))
    return "\n".join(lines)

"""Reference evaluation of IR graphs (onnxruntime with its optimizer off, else onnx.reference),
random inputs that fit a graph's interface, and output comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx

from .ir import DataType, Graph, TensorType

DEFAULT_DIM_SIZES = {"batch": 2, "batch_size": 2, "N": 2, "seq": 8, "sequence": 8, "seq_len": 8, "sequence_length": 8}


def random_inputs(
    graph: Graph,
    *,
    seed: int = 0,
    dim_sizes: Mapping[str, int] | None = None,
    default_dim: int = 2,
) -> dict[str, np.ndarray]:
    """Inputs matching the graph's declared types; symbolic dims take `dim_sizes` or `default_dim`.
    Initializer-backed inputs (overridable weights) are left out."""
    rng = np.random.default_rng(seed)
    sizes = dict(DEFAULT_DIM_SIZES)
    sizes.update(dim_sizes or {})
    feeds: dict[str, np.ndarray] = {}
    for value in graph.inputs:
        if value.const_value is not None or not isinstance(value.type, TensorType):
            continue
        shape = tuple(d if isinstance(d, int) else sizes.get(d, default_dim) for d in (value.shape or ()))
        feeds[value.name] = random_array(value.type.dtype, shape, rng)
    return feeds


def random_array(dtype: DataType, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == DataType.BOOL:
        return rng.random(shape) > 0.5
    if dtype.is_integer:
        return rng.integers(0, 4, size=shape).astype(dtype.numpy)
    if dtype == DataType.STRING:
        return np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
    return rng.standard_normal(shape).astype(dtype.numpy)


def to_runnable_model(graph: Graph) -> onnx.ModelProto:
    """Export for execution by a standard runtime: custom ops decomposed into standard ONNX."""
    from .onnx_io import export_model

    return export_model(graph, decompose_custom=True, value_info=False)


def evaluate(
    model: Graph | onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    engine: str = "auto",
) -> list[np.ndarray]:
    """Run `model` on `feeds` and return its outputs in order. `engine` is "onnxruntime",
    "reference" (onnx.reference) or "auto" (onnxruntime, falling back to onnx.reference)."""
    proto = to_runnable_model(model) if isinstance(model, Graph) else model
    if engine in ("auto", "onnxruntime"):
        try:
            return run_onnxruntime(proto, feeds)
        except Exception:
            if engine == "onnxruntime":
                raise
    return run_onnx_reference(proto, feeds)


def run_onnxruntime(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, optimize: bool = False,
                    threads: int | None = None) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def run_onnx_reference(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(proto)
    names = set(evaluator.input_names)
    return list(evaluator.run(None, {k: v for k, v in feeds.items() if k in names}))


@dataclass
class Comparison:
    ok: bool
    max_abs_error: float
    max_rel_error: float
    message: str


def compare_outputs(
    expected: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    names: Sequence[str] | None = None,
) -> Comparison:
    """Elementwise |a - e| <= atol + rtol * |e| over all outputs (NaNs must coincide)."""
    if len(expected) != len(actual):
        return Comparison(False, np.inf, np.inf, f"{len(actual)} outputs instead of {len(expected)}")
    worst_abs = worst_rel = 0.0
    for index, (want, got) in enumerate(zip(expected, actual)):
        label = names[index] if names else f"output {index}"
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            return Comparison(False, np.inf, np.inf, f"{label}: shape {got.shape} instead of {want.shape}")
        if want.dtype == object or want.dtype.kind in "USb":
            if not np.array_equal(want, got):
                return Comparison(False, np.inf, np.inf, f"{label}: values differ")
            continue
        want64 = want.astype(np.float64) if want.dtype.kind != "c" else want.astype(np.complex128)
        got64 = got.astype(want64.dtype)
        nan_want, nan_got = np.isnan(want64), np.isnan(got64)
        if not np.array_equal(nan_want, nan_got):
            return Comparison(False, np.inf, np.inf, f"{label}: NaN positions differ")
        mask = ~nan_want
        if not mask.any():
            continue
        same_inf = np.isinf(want64) & (want64 == got64)
        diff = np.where(same_inf, 0.0, np.abs(want64 - got64))[mask]
        scale = np.abs(want64)[mask]
        worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
        worst_rel = max(worst_rel, float((diff / np.maximum(scale, 1e-30)).max(initial=0.0)))
        if np.any(diff > atol + rtol * np.where(np.isinf(scale), 0, scale)):
            return Comparison(
                False, worst_abs, worst_rel,
                f"{label}: max abs error {float(diff.max()):.3g} exceeds atol {atol:g} + rtol {rtol:g}",
            )
    return Comparison(True, worst_abs, worst_rel, "outputs match")

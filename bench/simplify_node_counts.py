"""Node counts of every sample at -O1 and -O2 against onnxsim, with outputs checked by onnxruntime.

Run: python bench/simplify_node_counts.py [MODEL.onnx ...]  (prints a markdown table; without
arguments the samples, with arguments e.g. bench/models/*.onnx using random inputs)."""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import onnx

import compiler
from compiler.reference import compare_outputs, random_inputs, run_onnxruntime

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples"


def _onnxsim(model: onnx.ModelProto) -> tuple[onnx.ModelProto | None, float]:
    try:
        import onnxsim
    except ImportError:
        return None, 0.0
    start = time.perf_counter()
    simplified, _ = onnxsim.simplify(model)
    return simplified, time.perf_counter() - start


def _feeds(path: pathlib.Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    data = SAMPLES / "data" / f"{path.stem}_inputs.npz"
    if data.exists():
        return dict(np.load(data))
    feeds = random_inputs(compiler.load(model), dim_sizes={"batch": 2, "sequence": 16, "seq": 16})
    return {k: (np.abs(v) % 100 if v.dtype.kind == "i" else v) for k, v in feeds.items()}


def _max_difference(expected, actual) -> float:
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))
               for a, b in zip(expected, actual))


def measure(path: pathlib.Path) -> str:
    """One table row: node counts, wall times and the -O2 output difference for one model."""
    model = onnx.load(str(path))
    feeds = _feeds(path, model)
    reference = run_onnxruntime(model, feeds)
    counts, difference = {}, 0.0
    for level in (1, 2):
        start = time.perf_counter()
        optimized = compiler.optimize(model, opt_level=level)
        counts[level] = (len(optimized.graph.node), time.perf_counter() - start)
        actual = run_onnxruntime(optimized, feeds)
        verdict = compare_outputs(reference, actual, rtol=1e-3, atol=1e-4)
        if level == 2:
            difference = _max_difference(reference, actual)
        if not verdict.ok:
            difference = f"-O{level} MISMATCH {verdict.message}"
    simplified, sim_time = _onnxsim(model)
    sim_count = len(simplified.graph.node) if simplified is not None else "n/a"
    shown = difference if isinstance(difference, str) else f"{difference:.2e}"
    return (f"| {path.stem} | {len(model.graph.node)} | {counts[1][0]} | {counts[2][0]} | {sim_count} | "
            f"{counts[2][1]:.3f} | {sim_time:.3f} | {shown} |")


def main() -> None:
    paths = [pathlib.Path(p) for p in sys.argv[1:]] or sorted(SAMPLES.glob("*.onnx"))
    print("| model | original | -O1 | -O2 | onnxsim | -O2 time (s) | onnxsim time (s) | -O2 max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        print(measure(path), flush=True)


if __name__ == "__main__":
    main()

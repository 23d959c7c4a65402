"""Calibration: run the float graph in onnxruntime on streamed batches, exposing the tensors to be
quantized as extra outputs, and collect their statistics (memory bounded: one batch at a time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import onnx

from compiler.data import stream_batches
from compiler.errors import OptionError
from compiler.ir import Graph, Node, TensorType
from compiler.reference import to_runnable_model

from .statistics import METHODS, TensorStatistics

DEFAULT_BATCH_SIZE = 32


@dataclass
class CalibrationResult:
    """Statistics per tensor name and what was seen: method, batch and sample counts."""

    method: str
    statistics: dict[str, TensorStatistics] = field(default_factory=dict)
    batches: int = 0
    samples: int = 0

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "batches": self.batches, "samples": self.samples}


OBSERVED_SUFFIX = "__observed"


def observed_model(graph: Graph, names: Sequence[str]) -> onnx.ModelProto:
    """The graph as a runnable model with an extra output `<name>__observed` per tensor `names`
    (through an Identity, so the name survives the decomposition of ai.graphkiln ops)."""
    copy = graph.copy()
    values = {v.name: v for v in copy.inputs}
    values.update((v.name, v) for node in copy.nodes for v in node.outputs)
    for name in names:
        if name not in values:
            raise OptionError(f"calibration: tensor {name!r} is not in the graph")
        identity = Node("Identity", [values[name]], outputs=[name + OBSERVED_SUFFIX], name=copy.make_name("observe"))
        copy.append(identity)
        identity.outputs[0].type = values[name].type
        copy.outputs.append(identity.outputs[0])
    return to_runnable_model(copy)


def observe(graph: Graph, names: Sequence[str], source: Any, *, batch_size: int | None = DEFAULT_BATCH_SIZE,
            max_samples: int | None = None, progress: Callable[[str], None] | None = None) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Yield ({name: array}, batch samples) for each calibration batch run through the float graph."""
    import onnxruntime as ort

    model = observed_model(graph, names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_names = [v.name for v in graph.inputs if v.const_value is None]
    output_names = [name + OBSERVED_SUFFIX for name in names]
    for batch in stream_batches(source, input_names, batch_size=batch_size, max_samples=max_samples, progress=progress):
        feeds = {name: _cast_to_input(batch[name], graph, name) for name in input_names}
        try:
            results = session.run(output_names, feeds)
        except Exception as error:  # onnxruntime reports shape/dtype mismatches as generic errors
            raise OptionError(f"calibration data does not fit the model: {' '.join(str(error).split())[:200]}") from None
        first = next(iter(feeds.values()))
        yield dict(zip(names, results)), int(first.shape[0]) if first.ndim else 1


def _cast_to_input(array: np.ndarray, graph: Graph, name: str) -> np.ndarray:
    value = next(v for v in graph.inputs if v.name == name)
    if isinstance(value.type, TensorType) and value.type.dtype:
        return np.asarray(array).astype(value.type.dtype.numpy, copy=False)
    return np.asarray(array)


def calibrate(graph: Graph, names: Sequence[str], source: Any, method: str = "minmax", **kwargs: Any) -> CalibrationResult:
    """Collect statistics of the float tensors `names` over the calibration data."""
    if method not in METHODS:
        raise OptionError(f"unknown calibration method {method!r}", f"use one of {', '.join(METHODS)}")
    result = CalibrationResult(method, {name: TensorStatistics() for name in names})
    for tensors, samples in observe(graph, names, source, **kwargs):
        result.batches += 1
        result.samples += samples
        for name, array in tensors.items():
            result.statistics[name].update(array)
    return result

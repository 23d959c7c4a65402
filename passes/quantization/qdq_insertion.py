"""The `quantize` pass: calibrate, then insert QuantizeLinear/DequantizeLinear pairs where the
placement profile says (int8), or block-wise int4 weight-only DequantizeLinear (`--quantize int4`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.builder import set_type
from compiler.errors import OptionError, UnsupportedError
from compiler.ir import ArrayTensor, DataType, Graph, Node, Shape, TensorType, Value
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass

from . import error_report, placement
from .calibration import CalibrationResult, calibrate
from .numerics import activation_parameters, per_channel_symmetric

MIN_OPSET = 13
DEFAULT_METHOD = "percentile"  # 99.999th percentile of |x|: best of the four on the samples
MISSING_CALIBRATION = ("--quantize int8 quantizes activations and needs calibration data",
                       "pass --calibration DATA (an .npz, a folder of .npy/.npz, or module:function), "
                       "or use --quantize int4 for weight-only quantization")


def _list_option(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [part for part in value.split(",") if part]
    return list(value)


class QdqInserter:
    """Builds the Q/DQ nodes of one placement and remembers what it quantized for the report."""

    def __init__(self, graph: Graph, signed: bool, weight_limit: int = 127, planned: set[tuple[int, int]] | None = None):
        self.graph = graph
        self.signed = signed
        self.weight_limit = weight_limit
        self.planned = planned or set()  # (id(node), input index) of every weight/bias to quantize
        self.originals: dict[int, np.ndarray] = {}  # float arrays of initializers turned into codes
        self.activations: dict[str, tuple[np.float32, int, Value]] = {}  # name -> (scale, zp, dq out)
        self.weights: dict[tuple[int, int], tuple[np.ndarray, Value]] = {}
        self.replaced: list[Value] = []  # float initializers now stored quantized
        self.taken = {v.name for v in graph.initializers.values()} | {v.name for v in graph.inputs}
        self.taken |= {v.name for n in graph.all_nodes() for v in n.outputs}

    def fresh(self, base: str) -> str:
        """`base` itself when no value has that name yet (short names keep the file small)."""
        name = base if base not in self.taken else self.graph.make_name(base)
        self.taken.add(name)
        return name

    def _constant(self, array: np.ndarray, hint: str) -> Value:
        return self.graph.make_constant(array, name=self.fresh(hint))

    def float_array(self, value: Value) -> np.ndarray:
        return self.originals.get(id(value), value.const_value.numpy())

    def _codes(self, value: Value, codes: np.ndarray, suffix: str) -> Value:
        """The initializer holding `codes`: `value` itself, re-typed, when every reader of it is
        being quantized (the file then keeps the original name and no float copy), else a new one."""
        self.originals[id(value)] = self.float_array(value)
        exclusive = value.is_initializer() and not value.is_graph_input() and not value.is_graph_output()
        if exclusive and all((id(use.node), use.index) in self.planned for use in value.uses):
            value.const_value = ArrayTensor(codes)
            value.type = TensorType(DataType.from_numpy(codes.dtype), Shape(codes.shape))
            return value
        self.replaced.append(value)
        return self._constant(codes, f"{value.name}_{suffix}")

    def _node(self, op_type: str, inputs: list[Value], dtype: DataType, like: Value, hint: str, **attributes: Any) -> Value:
        short = "Q" if op_type == "QuantizeLinear" else "DQ"
        node = Node(op_type, inputs, attributes, name=self.graph.make_name(short), outputs=[self.fresh(hint)])
        node.meta["rule"] = "quantize"
        self.graph.append(node)
        return set_type(node.outputs[0], dtype, like.shape)

    def activation(self, value: Value, low: float, high: float) -> Value:
        """The dequantized stand-in for activation `value` (one Q/DQ pair per tensor)."""
        if value.name in self.activations:
            return self.activations[value.name][2]
        scale, zero_point = activation_parameters(low, high, self.signed)
        code_type = np.int8 if self.signed else np.uint8
        base = _short_base(value.name, len(self.activations))
        scale_value = self._constant(np.array(scale, dtype=np.float32), f"{base}_s")
        zero_value = self._constant(np.array(zero_point, dtype=code_type), f"{base}_zp")
        dtype = DataType.INT8 if self.signed else DataType.UINT8
        quantized = self._node("QuantizeLinear", [value, scale_value, zero_value], dtype, value, f"{base}_q")
        dequantized = self._node("DequantizeLinear", [quantized, scale_value, zero_value], DataType.FLOAT, value, f"{base}_dq")
        dequantized.meta["quantized_tensor"] = value.name
        self.activations[value.name] = (scale, zero_point, dequantized)
        return dequantized

    def weight(self, value: Value, axis: int) -> tuple[np.ndarray, Value]:
        """(per-channel scales, dequantized value) of a float weight stored as int8 (symmetric: the
        zero point is the default 0, left out)."""
        key = (id(value), axis)
        if key not in self.weights:
            codes, scales = per_channel_symmetric(self.float_array(value), axis, self.weight_limit)
            code_value = self._codes(value, codes, "i8")
            scale_value = self._constant(scales, f"{value.name}_s")
            dequantized = self._node("DequantizeLinear", [code_value, scale_value], DataType.FLOAT, value,
                                     f"{value.name}_dq", axis=axis)
            self.weights[key] = (scales, dequantized)
        return self.weights[key]

    def bias(self, value: Value, scale: np.ndarray) -> Value:
        """Bias as int32 codes with scale = activation scale x weight scale (zero point 0)."""
        scale = np.asarray(scale, dtype=np.float32)
        codes = np.rint(self.float_array(value).astype(np.float64) / scale).clip(-2**31, 2**31 - 1).astype(np.int32)
        code_value = self._codes(value, codes, "i32")
        scale_value = self._constant(scale, f"{value.name}_s")
        return self._node("DequantizeLinear", [code_value, scale_value], DataType.FLOAT, value,
                          f"{value.name}_dq", axis=0)


def _short_base(name: str, index: int) -> str:
    """Exporter-generated activation names ("/block/conv/Relu_output_0") repeat in every Q/DQ
    name and reference, which costs more bytes than a small model's biases; use "act<N>" then."""
    return name if len(name) <= 16 else f"act{index}"


def _check_opset(graph: Graph) -> None:
    if graph.opset < MIN_OPSET:
        raise UnsupportedError(f"int8 quantization needs opset {MIN_OPSET} or later (per-channel DequantizeLinear); the model is opset {graph.opset}",
                               "convert it with onnx.version_converter first")


def quantize_int8(graph: Graph, ctx: PassContext) -> dict[str, int]:
    """Calibrate the activations, then insert the Q/DQ pairs of the chosen profile."""
    _check_opset(graph)
    profile = ctx.option("quantize_profile") or "default"
    layout = placement.plan(graph, profile, _list_option(ctx.option("quantize_include")), _list_option(ctx.option("quantize_exclude")))
    activation_type = ctx.option("activation_type") or "int8"
    if activation_type not in ("int8", "uint8"):
        raise OptionError(f"activation_type must be int8 or uint8, not {activation_type!r}")
    if profile == "tensorrt" and activation_type != "int8":
        raise OptionError("the tensorrt profile quantizes activations as int8 symmetric", "drop activation_type=uint8")
    layout.signed_activations = activation_type == "int8"
    weights_only = bool(ctx.option("weight_only", False))
    calibration: CalibrationResult | None = None
    ranges: dict[str, tuple[float, float]] = {}
    names = [] if weights_only else layout.activation_names()
    if names:
        source = ctx.option("calibration")
        if source is None:
            raise OptionError(*MISSING_CALIBRATION)
        method = ctx.option("calibration_method") or DEFAULT_METHOD
        calibration = calibrate(graph, names, source, method, batch_size=ctx.option("calibration_batch_size", 32),
                                max_samples=ctx.option("calibration_samples"), progress=ctx.progress)
        ranges = {n: stats.value_range(method) for n, stats in calibration.statistics.items()}
    report = error_report.QuantizationReport("int8", profile, calibration.summary() if calibration else None)
    activation_errors = error_report.activation_errors(graph, ranges, layout.signed_activations, ctx) if ranges else {}
    inserter = QdqInserter(graph, layout.signed_activations, 63 if ctx.option("reduce_range") else 127, _planned_uses(layout, ranges))
    counts = _insert_layers(graph, layout, inserter, ranges, report, activation_errors)
    for add, index in layout.residuals:
        value = add.inputs[index]
        add.replace_input_with(index, inserter.activation(value, *ranges[value.name]))
        report.add_activation(add, value.name, inserter.activations[value.name], activation_errors.get(value.name))
    _drop_unused(graph, inserter.replaced)
    graph.toposort()
    ctx.artifacts["report:quantization"] = report.to_json()
    counts.update(activations_quantized=len(inserter.activations), residual_inputs=len(layout.residuals))
    return counts


def _planned_uses(layout: placement.Placement, ranges: dict[str, tuple[float, float]]) -> set[tuple[int, int]]:
    """(id(node), input index) of the weights, and biases with a calibrated activation, to quantize."""
    planned = {(id(layer.node), layer.weight) for layer in layout.layers if layer.weight is not None}
    for layer in layout.layers:
        calibrated = any(layer.node.inputs[i].name in ranges for i in layer.activations)
        if layer.bias is not None and layout.quantize_bias and calibrated:
            planned.add((id(layer.node), layer.bias))
    return planned


def _insert_layers(graph: Graph, layout: placement.Placement, inserter: QdqInserter, ranges: dict[str, tuple[float, float]],
                   report: error_report.QuantizationReport, activation_errors: dict) -> dict[str, int]:
    """Q/DQ on each layer's activations, int8 weight, and (default profile) int32 bias."""
    weights = biases = 0
    for layer in layout.layers:
        node = layer.node
        activation_scale = None
        for index in layer.activations:
            value = node.inputs[index]
            if value.name not in ranges:
                continue
            dequantized = inserter.activation(value, *ranges[value.name])
            node.replace_input_with(index, dequantized)
            activation_scale = inserter.activations[value.name][0]
            report.add_activation(node, value.name, inserter.activations[value.name], activation_errors.get(value.name))
        if layer.weight is not None:
            original = node.inputs[layer.weight]
            scales, dequantized = inserter.weight(original, layer.weight_axis)
            node.replace_input_with(layer.weight, dequantized)
            report.add_weight(node, original, scales, layer.weight_axis, original=inserter.originals[id(original)])
            weights += 1
            if layer.bias is not None and layout.quantize_bias and activation_scale is not None:
                node.replace_input_with(layer.bias, inserter.bias(node.inputs[layer.bias], activation_scale * scales))
                biases += 1
    return {"layers_quantized": len(layout.layers), "weights_quantized": weights, "biases_quantized": biases}


def _drop_unused(graph: Graph, values: list[Value]) -> None:
    """Remove the float originals of quantized initializers so the file keeps only the codes."""
    for value in values:
        if value.is_initializer() and not value.uses and not value.is_graph_output() and not value.is_graph_input():
            graph.remove_initializer(value.name)


@register_pass
class QuantizePass(Pass):
    name = "quantize"
    description = "calibrate and insert int8 Q/DQ pairs, or int4 block-wise weight-only quantization"
    in_place = False  # int4 may return the graph converted to opset 21

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        mode = ctx.option("quantize")
        if mode is None:
            return PassResult(graph, False)
        if ctx.option("recover"):  # the float original, for distillation
            ctx.artifacts.setdefault("compression:teacher", graph.copy())
        if mode == "int8":
            return PassResult(graph, True, quantize_int8(graph, ctx))
        if mode == "int4":
            from .int4 import quantize_int4

            graph, counters = quantize_int4(graph, ctx)
            return PassResult(graph, bool(counters.get("weights_quantized")), counters)
        raise OptionError(f"--quantize must be int8 or int4, not {mode!r}")

"""Where Q/DQ go. `default`: activation inputs and weights of Conv/Gemm/MatMul (ORT's QDQ form,
int32 bias). `tensorrt`: the same inputs with float bias (TensorRT fuses it), and the
residual input of an Add fed by a convolution, as TensorRT's explicit-quantization fusions want;
nothing around ops TensorRT runs in float."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from compiler.errors import OptionError
from compiler.ir import DataType, Graph, Node, Value

PROFILES = ("default", "tensorrt")
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
RESIDUAL_SOURCES = ("Conv", "BatchNormalization")


@dataclass
class LayerPlan:
    """One quantized compute node: which inputs are activations, the weight and its channel axis."""

    node: Node
    activations: list[int] = field(default_factory=list)
    weight: int | None = None
    weight_axis: int = 0
    bias: int | None = None


@dataclass
class Placement:
    profile: str
    layers: list[LayerPlan] = field(default_factory=list)
    residuals: list[tuple[Node, int]] = field(default_factory=list)  # (Add, input index)
    signed_activations: bool = True  # int8 symmetric; uint8 asymmetric on request
    quantize_bias: bool = True

    def activation_names(self) -> list[str]:
        names = [plan.node.inputs[i].name for plan in self.layers for i in plan.activations]
        names += [add.inputs[i].name for add, i in self.residuals]
        return list(dict.fromkeys(names))


def _is_float(value: Value | None) -> bool:
    return value is not None and value.dtype in (DataType.FLOAT, None)


def is_float_weight(value: Value | None) -> bool:
    return value is not None and value.const_value is not None and value.dtype == DataType.FLOAT


def selected(node: Node, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether `node` passes the include/exclude lists (entries are op types or node names)."""
    keys = {node.op_type, node.name or ""}
    if include and not keys & set(include):
        return False
    return not keys & set(exclude)


def plan_layer(node: Node, profile: str) -> LayerPlan | None:
    """The quantization plan of one Conv/Gemm/MatMul, or None when it has nothing to quantize."""
    inputs = node.inputs
    if node.op_type == "Conv":
        if not is_float_weight(inputs[1]) or not _is_float(inputs[0]):
            return None
        bias = 2 if len(inputs) > 2 and is_float_weight(inputs[2]) else None
        return LayerPlan(node, [0], 1, 0, bias)
    if node.op_type == "Gemm":
        if node.attr("transA", 0) or not is_float_weight(inputs[1]) or not _is_float(inputs[0]):
            return None
        axis = 0 if node.attr("transB", 0) else 1
        channels = inputs[1].const_value.shape[axis]
        bias = None
        if len(inputs) > 2 and is_float_weight(inputs[2]) and tuple(inputs[2].const_value.shape) == (channels,) \
                and node.attr("beta", 1.0) == 1.0 and node.attr("alpha", 1.0) == 1.0:
            bias = 2
        return LayerPlan(node, [0], 1, axis, bias)
    if node.op_type == "MatMul":
        if is_float_weight(inputs[1]) and len(inputs[1].const_value.shape) == 2 and _is_float(inputs[0]):
            return LayerPlan(node, [0], 1, 1, None)
        if profile == "tensorrt" and all(_is_float(v) and v.const_value is None for v in inputs):
            return LayerPlan(node, [0, 1], None)
    return None


def _residual_input(add: Node, quantized: set[int]) -> int | None:
    """Input of a residual Add to quantize: the one not produced by a quantized Conv (or its BN)."""
    if len(add.inputs) != 2 or not all(_is_float(v) and v.const_value is None for v in add.inputs):
        return None

    def from_conv(value: Value) -> bool:
        producer = value.producer
        while producer is not None and producer.op_type == "BatchNormalization":
            producer = producer.inputs[0].producer
        return producer is not None and producer.op_type == "Conv" and id(producer) in quantized

    fused = [from_conv(v) for v in add.inputs]
    if not any(fused):
        return None
    return 1 if fused[0] else 0


def plan(graph: Graph, profile: str = "default", include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Placement:
    """Decide every Q/DQ location of `graph` for `profile`."""
    if profile not in PROFILES:
        raise OptionError(f"unknown quantization profile {profile!r}", f"use one of {', '.join(PROFILES)}")
    placement = Placement(profile, quantize_bias=profile != "tensorrt")
    for node in graph.nodes:
        if node.op_type in COMPUTE_OPS and not node.domain and selected(node, include, exclude):
            layer = plan_layer(node, profile)
            if layer is not None:
                placement.layers.append(layer)
    if profile == "tensorrt":
        quantized = {id(layer.node) for layer in placement.layers}
        for node in graph.nodes:
            if node.op_type == "Add" and not node.domain and selected(node, (), exclude):
                index = _residual_input(node, quantized)
                if index is not None:
                    placement.residuals.append((node, index))
    return placement

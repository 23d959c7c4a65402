"""Structured channel pruning: remove the output channels of Conv/Gemm with the smallest L1 norm,
physically, with the matching inputs of their consumers. Channels flow through BatchNorm,
activations, pooling and elementwise ops; a residual Add ties the layers feeding it into one group
that loses the same channels. A group reaching anything else (Concat, Reshape, a graph output...)
is refused with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.ir import DataType, Graph, Node, Shape, TensorType, Value

from .weights import replace_weight

CHANNEL_PRESERVING = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Erf", "Identity", "Dropout", "Neg", "Abs", "Clip", "Mish",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "BatchNormalization",
})
ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div"})
CHANNEL_AXIS = 1  # NCHW for Conv outputs, [batch, features] for Gemm outputs


class Refused(Exception):
    """A channel group cannot be pruned safely; the message says why."""

    def __init__(self, node: Node | None, reason: str):
        super().__init__(reason)
        self.node = node
        self.reason = reason


@dataclass
class ChannelGroup:
    """Values sharing one channel axis, the layers producing them and the nodes reading them."""

    producers: list[Node] = field(default_factory=list)
    values: dict[int, Value] = field(default_factory=dict)
    passthrough: dict[int, Node] = field(default_factory=dict)  # BN / elementwise nodes to slice
    consumers: list[tuple[Node, int]] = field(default_factory=list)  # (node, spatial size)

    @property
    def channels(self) -> int:
        return int(_weight(self.producers[0]).shape[_output_axis(self.producers[0])])


def _weight(node: Node) -> np.ndarray:
    return node.inputs[1].const_value.numpy()


def _output_axis(node: Node) -> int:
    if node.op_type == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    return 0


def _is_constant(value: Value | None) -> bool:
    return value is not None and value.const_value is not None


def is_root(node: Node) -> bool:
    """A layer whose output channels can be removed: Conv (group 1) or Gemm, constant float weight."""
    if node.domain or len(node.inputs) < 2 or not _is_constant(node.inputs[1]) or node.inputs[1].dtype != DataType.FLOAT:
        return False
    if node.op_type == "Conv":
        return node.attr("group", 1) == 1
    if node.op_type == "Gemm":
        if node.attr("transA", 0):
            return False
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        return bias is None or (_is_constant(bias) and bias.const_value.numpy().ndim == 1)
    return False


class GroupBuilder:
    """Grows a ChannelGroup from one root by walking producers and readers of its values."""

    def __init__(self, root: Node):
        self.group = ChannelGroup()
        self.pending: list[Value] = []
        self._add_producer(root)

    def _add_producer(self, node: Node) -> None:
        if all(p is not node for p in self.group.producers):
            self.group.producers.append(node)
            self._add_value(node.outputs[0])

    def _add_value(self, value: Value) -> None:
        if id(value) not in self.group.values:
            self.group.values[id(value)] = value
            self.pending.append(value)

    def build(self) -> ChannelGroup:
        while self.pending:
            value = self.pending.pop()
            if value.is_graph_output():
                raise Refused(value.producer, f"its channels reach the graph output {value.name!r}")
            self._backward(value)
            for use in value.uses:
                self._forward(use.node, use.index, value)
        return self.group

    def _backward(self, value: Value) -> None:
        producer = value.producer
        if producer is None:
            raise Refused(None, f"its channels come from the graph input {value.name!r}")
        if any(p is producer for p in self.group.producers):
            return
        if is_root(producer):
            self._add_producer(producer)
        elif producer.op_type in CHANNEL_PRESERVING and not producer.domain:
            self.group.passthrough[id(producer)] = producer
            self._add_value(producer.inputs[0])
        elif producer.op_type in ELEMENTWISE_BINARY and not producer.domain:
            self._binary(producer)
        else:
            raise Refused(producer, f"its channels come from {producer.op_type} {producer.name!r}, which pruning does not see through")

    def _forward(self, node: Node, index: int, value: Value) -> None:
        op = node.op_type if not node.domain else f"{node.domain}::{node.op_type}"
        if op in CHANNEL_PRESERVING and index == 0:
            self.group.passthrough[id(node)] = node
            self._add_value(node.outputs[0])
        elif op in ELEMENTWISE_BINARY:
            self._binary(node)
        elif op == "Conv" and index == 0 and node.attr("group", 1) == 1 and _is_constant(node.inputs[1]):
            self._consumer(node, 1)
        elif op == "Gemm" and index == 0 and not node.attr("transA", 0) and _is_constant(node.inputs[1]):
            self._consumer(node, 1)
        elif op == "Flatten" and node.attr("axis", 1) == 1:
            self._flatten(node, value)
        else:
            raise Refused(node, f"its channels feed {op} {node.name!r} (input {index}), through which removal is not propagated")

    def _consumer(self, node: Node, spatial: int) -> None:
        if all(n is not node for n, _ in self.group.consumers):
            self.group.consumers.append((node, spatial))

    def _binary(self, node: Node) -> None:
        self.group.passthrough[id(node)] = node
        for operand in node.inputs:
            if not _is_constant(operand):
                self._add_value(operand)
        self._add_value(node.outputs[0])

    def _flatten(self, node: Node, value: Value) -> None:
        shape = value.shape
        spatial = shape[2:] if shape is not None else None
        if spatial is None or not all(isinstance(d, int) for d in spatial):
            raise Refused(node, f"Flatten {node.name!r} has unknown spatial size")
        size = int(np.prod(spatial)) if spatial else 1
        for use in node.outputs[0].uses:
            reader = use.node
            if reader.op_type != "Gemm" or use.index != 0 or reader.attr("transA", 0) or not _is_constant(reader.inputs[1]):
                raise Refused(reader, f"Flatten {node.name!r} feeds {reader.op_type} {reader.name!r}, which cannot drop the columns")
            self._consumer(reader, size)
        if node.outputs[0].is_graph_output():
            raise Refused(node, "the flattened channels reach a graph output")
        self.group.passthrough[id(node)] = node


def channel_scores(group: ChannelGroup) -> np.ndarray:
    """L1 norm of each output channel, summed over the group's producers (each normalised)."""
    total = np.zeros(group.channels, dtype=np.float64)
    for node in group.producers:
        weight = np.moveaxis(_weight(node), _output_axis(node), 0)
        norms = np.abs(weight.reshape(weight.shape[0], -1)).sum(axis=1)
        total += norms / max(float(norms.max()), 1e-12)
    return total


def find_groups(graph: Graph) -> tuple[list[ChannelGroup], list[dict[str, str]]]:
    """Every channel group rooted at a prunable layer, and the refusals with their reasons."""
    groups: list[ChannelGroup] = []
    refused: list[dict[str, str]] = []
    claimed: set[int] = set()
    for node in graph.nodes:
        if node.op_type == "MatMul" and not node.domain and len(node.inputs) > 1 and _is_constant(node.inputs[1]):
            refused.append({"node": node.name, "reason": "channel pruning removes Conv/Gemm output channels; MatMul is left whole"})
        if not is_root(node) or id(node) in claimed:
            continue
        try:
            group = GroupBuilder(node).build()
            if len({_weight(p).shape[_output_axis(p)] for p in group.producers}) != 1:
                raise Refused(node, "layers tied by an elementwise op have different channel counts")
        except Refused as refusal:
            refused.append({"node": node.name, "reason": refusal.reason})
            claimed.add(id(node))
            continue
        claimed.update(id(p) for p in group.producers)
        groups.append(group)
    return groups, refused


def prune_group(graph: Graph, group: ChannelGroup, keep: np.ndarray) -> None:
    """Physically remove all channels not in `keep` from the group's layers and readers."""
    channels = group.channels
    for node in group.producers:
        replace_weight(graph, node, 1, np.take(_weight(node), keep, axis=_output_axis(node)), "pruned_channels", all_uses=False)
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            replace_weight(graph, node, 2, node.inputs[2].const_value.numpy()[keep], "pruned_channels", all_uses=False)
    for node in group.passthrough.values():
        _slice_passthrough(graph, node, keep, channels)
    for node, spatial in group.consumers:
        weight = _weight(node)
        axis = 1 if node.op_type == "Conv" else (1 if node.attr("transB", 0) else 0)
        columns = (keep[:, None] * spatial + np.arange(spatial)[None, :]).reshape(-1)
        replace_weight(graph, node, 1, np.take(weight, columns, axis=axis), "pruned_channels", all_uses=False)
    for value in group.values.values():
        _set_channels(value, len(keep))
    for node in group.passthrough.values():
        if node.op_type == "Flatten":
            _set_flatten_shape(node)


def _slice_passthrough(graph: Graph, node: Node, keep: np.ndarray, channels: int) -> None:
    if node.op_type == "BatchNormalization":
        for index in range(1, 5):
            replace_weight(graph, node, index, node.inputs[index].const_value.numpy()[keep], "pruned_channels", all_uses=False)
        return
    if node.op_type == "PRelu" or node.op_type in ELEMENTWISE_BINARY:
        rank = len(node.outputs[0].shape) if node.outputs[0].shape is not None else 2
        for index, operand in enumerate(node.inputs):
            if not _is_constant(operand):
                continue
            array = operand.const_value.numpy()
            axis = CHANNEL_AXIS - (rank - array.ndim)
            if axis >= 0 and array.shape[axis] == channels and channels > 1:
                replace_weight(graph, node, index, np.take(array, keep, axis=axis), "pruned_channels", all_uses=False)


def _set_channels(value: Value, channels: int) -> None:
    shape = value.shape
    if shape is None or len(shape) <= CHANNEL_AXIS:
        return
    dims = list(shape)
    dims[CHANNEL_AXIS] = channels
    value.type = TensorType(value.dtype or DataType.FLOAT, Shape(dims))


def _set_flatten_shape(node: Node) -> None:
    source = node.inputs[0].shape
    if source is None or not all(isinstance(d, int) for d in source[1:]):
        return
    dims = list(node.outputs[0].shape or (source[0], None))
    dims[1] = int(np.prod(source[1:]))
    node.outputs[0].type = TensorType(node.outputs[0].dtype or DataType.FLOAT, Shape(dims))


def prune_channels(graph: Graph, ratio: float) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Remove `ratio` of the output channels of every prunable group (at least one kept)."""
    groups, refused = find_groups(graph)
    rows = []
    for group in groups:
        channels = group.channels
        count = channels - min(channels - 1, int(round(ratio * channels)))
        keep = np.sort(np.argsort(-channel_scores(group), kind="stable")[:count])
        names = [(p.name, p.inputs[1].name) for p in group.producers]
        prune_group(graph, group, keep)
        for name, weight in names:
            rows.append({"node": name, "weight": weight, "sparsity": 0.0, "channels_before": channels, "channels_after": int(count)})
    return rows, refused

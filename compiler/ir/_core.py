"""Values, nodes, attributes and graphs. The IR owns its use-def links: node inputs are read-only
and the few mutators here keep producers, uses and graph outputs current."""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from ._linked_list import LinkedSet
from ._tensor import ArrayTensor, Tensor
from ._types import DataType, Shape, TensorType, ValueType


class GraphError(Exception):
    """A mutation or check that would leave the graph invalid."""


class AttrType(enum.IntEnum):
    """Attribute kinds, numbered as ONNX numbers them."""

    FLOAT = 1
    INT = 2
    STRING = 3
    TENSOR = 4
    GRAPH = 5
    FLOATS = 6
    INTS = 7
    STRINGS = 8
    TENSORS = 9
    GRAPHS = 10
    SPARSE_TENSOR = 11
    SPARSE_TENSORS = 12
    TYPE_PROTO = 13
    TYPE_PROTOS = 14


@dataclass(frozen=True)
class Opaque:
    """A serialized payload the IR carries but does not interpret (e.g. a sparse tensor)."""

    kind: str
    data: bytes


@dataclass
class Attr:
    """A node attribute. `ref_attr_name` is set for attributes that refer to a function's own."""

    name: str
    type: AttrType
    value: Any
    ref_attr_name: str | None = None
    doc_string: str | None = None

    @classmethod
    def infer(cls, name: str, value: Any) -> "Attr":
        """Build an attribute from a plain Python value, guessing its kind like onnx.helper does."""
        if isinstance(value, Attr):
            return value
        if isinstance(value, bool):
            return cls(name, AttrType.INT, int(value))
        if isinstance(value, (int, np.integer)):
            return cls(name, AttrType.INT, int(value))
        if isinstance(value, (float, np.floating)):
            return cls(name, AttrType.FLOAT, float(value))
        if isinstance(value, (str, bytes)):
            return cls(name, AttrType.STRING, value)
        if isinstance(value, np.ndarray):
            return cls(name, AttrType.TENSOR, ArrayTensor(value))
        if isinstance(value, Tensor):
            return cls(name, AttrType.TENSOR, value)
        if isinstance(value, Graph):
            return cls(name, AttrType.GRAPH, value)
        if isinstance(value, (list, tuple)):
            items = list(value)
            if not items:
                return cls(name, AttrType.INTS, [])
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
                return cls(name, AttrType.INTS, [int(v) for v in items])
            if all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
                return cls(name, AttrType.FLOATS, [float(v) for v in items])
            if all(isinstance(v, (str, bytes)) for v in items):
                return cls(name, AttrType.STRINGS, items)
            if all(isinstance(v, Graph) for v in items):
                return cls(name, AttrType.GRAPHS, items)
            if all(isinstance(v, (Tensor, np.ndarray)) for v in items):
                return cls(name, AttrType.TENSORS, [v if isinstance(v, Tensor) else ArrayTensor(v) for v in items])
        raise TypeError(f"cannot make attribute {name!r} from {type(value).__name__}")

    def graphs(self) -> list["Graph"]:
        if self.type == AttrType.GRAPH:
            return [self.value]
        if self.type == AttrType.GRAPHS:
            return list(self.value)
        return []


_GRAPH_ATTR_TYPES = frozenset((AttrType.GRAPH, AttrType.GRAPHS))


class Use(NamedTuple):
    """One use of a value: input `index` of `node`."""

    node: "Node"
    index: int


class Value:
    """An SSA value: produced by at most one node (or a graph input / initializer), read by uses."""

    __slots__ = ("name", "type", "const_value", "doc_string", "meta", "_producer", "_index", "_uses", "_owner")

    def __init__(
        self,
        name: str | None = None,
        type: ValueType | None = None,
        const_value: Tensor | None = None,
        doc_string: str | None = None,
    ):
        self.name = name
        self.type = type
        self.const_value = const_value
        self.doc_string = doc_string
        self.meta: dict[str, Any] = {}
        self._producer: Node | None = None
        self._index: int | None = None
        self._uses: dict[Use, None] = {}
        self._owner: Graph | None = None  # graph holding it as input or initializer
        if const_value is not None and type is None:
            self.type = TensorType(const_value.dtype, const_value.shape)

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type})"

    # ---- use-def links -------------------------------------------------------------
    @property
    def producer(self) -> "Node | None":
        return self._producer

    @property
    def index(self) -> int | None:
        """Which output of its producer this value is."""
        return self._index

    @property
    def uses(self) -> tuple[Use, ...]:
        return tuple(self._uses)

    @property
    def consumers(self) -> list["Node"]:
        """Distinct nodes reading this value, in use order."""
        return list(dict.fromkeys(use.node for use in self._uses))

    def _add_use(self, node: "Node", index: int) -> None:
        self._uses[Use(node, index)] = None

    def _remove_use(self, node: "Node", index: int) -> None:
        self._uses.pop(Use(node, index), None)

    @property
    def graph(self) -> "Graph | None":
        """The graph that defines this value."""
        if self._producer is not None:
            return self._producer.graph
        return self._owner

    def is_graph_input(self) -> bool:
        owner = self._owner
        return owner is not None and any(v is self for v in owner.inputs)

    def is_initializer(self) -> bool:
        owner = self._owner
        return owner is not None and owner.initializers.get(self.name or "") is self

    def is_graph_output(self) -> bool:
        graph = self.graph
        return graph is not None and any(v is self for v in graph.outputs)

    # ---- types ---------------------------------------------------------------------
    @property
    def dtype(self) -> DataType | None:
        return getattr(self.type, "dtype", None)

    @property
    def shape(self) -> Shape | None:
        return getattr(self.type, "shape", None)

    @shape.setter
    def shape(self, shape: Sequence | None) -> None:
        dtype = self.dtype if self.dtype is not None else DataType.UNDEFINED
        self.type = TensorType(dtype, None if shape is None else Shape(shape))

    @property
    def is_constant(self) -> bool:
        """Whether the value is a known constant (initializer or Constant node), without reading it."""
        return self.const_value is not None or _is_constant_node(self._producer)

    def constant(self) -> np.ndarray | None:
        """The value as a numpy array when it is a known constant (initializer or Constant node)."""
        if self.const_value is not None:
            return self.const_value.numpy()
        if _is_constant_node(self._producer):
            return constant_node_value(self._producer)
        return None

    def replace_all_uses_with(self, new: "Value") -> None:
        """Make every reader of this value (and graph outputs naming it) read `new` instead."""
        graph = self.graph
        if graph is None:
            _redirect_uses(self, new)
            return
        graph.replace_all_uses_with(self, new)


def _is_constant_node(node: "Node | None") -> bool:
    return node is not None and node.op_type == "Constant" and node.domain == ""


def stable_topological_order(dependencies: Sequence[Iterable[int]]) -> list[int]:
    """Indices 0..n-1 ordered so that each comes after every index it depends on, ties in index
    order (Kahn's algorithm). Indices on or behind a cycle are left out: the caller decides."""
    readers: list[list[int]] = [[] for _ in dependencies]
    waiting = [0] * len(dependencies)
    for index, sources in enumerate(dependencies):
        for source in set(sources):
            readers[source].append(index)
            waiting[index] += 1
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for reader in readers[index]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    return order


def _redirect_uses(old: Value, new: Value) -> None:
    for use in list(old._uses):
        use.node.replace_input_with(use.index, new)


class Node:
    """One operator application. Inputs are read-only here; change them with `replace_input_with`."""

    __slots__ = ("op_type", "domain", "name", "overload", "attributes", "doc_string", "meta", "_inputs", "_outputs", "graph")

    def __init__(
        self,
        op_type: str,
        inputs: Iterable[Value | None] = (),
        attributes: dict[str, Any] | Iterable[Attr] | None = None,
        *,
        domain: str = "",
        outputs: Sequence[Value | str | None] | None = None,
        num_outputs: int = 1,
        name: str | None = None,
        doc_string: str | None = None,
        overload: str = "",
    ):
        self.op_type = op_type
        self.domain = "" if domain == "ai.onnx" else domain
        self.name = name
        self.overload = overload
        self.doc_string = doc_string
        self.meta: dict[str, Any] = {}
        self.graph: Graph | None = None
        self.attributes: dict[str, Attr] = {}
        if isinstance(attributes, dict):
            for key, value in attributes.items():
                self.attributes[key] = value if isinstance(value, Attr) else Attr.infer(key, value)
        elif attributes is not None:
            for attr in attributes:
                self.attributes[attr.name] = attr
        self._inputs: tuple[Value | None, ...] = tuple(inputs)
        for index, value in enumerate(self._inputs):
            if value is not None:
                if not isinstance(value, Value):
                    raise TypeError(f"input {index} of {op_type} is a {type(value).__name__}, not a Value")
                value._add_use(self, index)
        if outputs is None:
            outputs = [None] * num_outputs
        made = []
        for index, output in enumerate(outputs):
            value = output if isinstance(output, Value) else Value(name=output)
            if value._producer is not None or value._owner is not None:
                raise GraphError(f"value {value.name!r} already has a producer")
            value._producer, value._index = self, index
            made.append(value)
        self._outputs: tuple[Value, ...] = tuple(made)

    def __repr__(self) -> str:
        domain = f"{self.domain}::" if self.domain else ""
        return f"Node({domain}{self.op_type}, name={self.name!r})"

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self._outputs

    @property
    def output(self) -> Value:
        """The single output (errors when the node has several)."""
        if len(self._outputs) != 1:
            raise GraphError(f"{self!r} has {len(self._outputs)} outputs")
        return self._outputs[0]

    def attr(self, name: str, default: Any = None) -> Any:
        """The plain value of attribute `name`, or `default` when absent."""
        attr = self.attributes.get(name)
        return default if attr is None else attr.value

    def set_attr(self, name: str, value: Any) -> None:
        self.attributes[name] = Attr.infer(name, value)

    def replace_input_with(self, index: int, value: Value | None) -> None:
        """Point input `index` at `value`, keeping both values' use lists current."""
        old = self._inputs[index]
        if old is value:
            return
        if old is not None:
            old._remove_use(self, index)
        if value is not None:
            value._add_use(self, index)
        inputs = list(self._inputs)
        inputs[index] = value
        self._inputs = tuple(inputs)

    def append_input(self, value: Value | None) -> None:
        self._inputs = self._inputs + (value,)
        if value is not None:
            value._add_use(self, len(self._inputs) - 1)

    def trim_inputs(self, count: int) -> None:
        """Drop inputs from position `count` on (for trailing optional inputs)."""
        for index in range(count, len(self._inputs)):
            value = self._inputs[index]
            if value is not None:
                value._remove_use(self, index)
        self._inputs = self._inputs[:count]

    def _detach_inputs(self) -> None:
        for index, value in enumerate(self._inputs):
            if value is not None:
                value._remove_use(self, index)
        for graph in self.subgraphs():
            for inner in graph.all_nodes():
                inner._detach_inputs_shallow()

    def _detach_inputs_shallow(self) -> None:
        for index, value in enumerate(self._inputs):
            if value is not None:
                value._remove_use(self, index)

    def subgraphs(self) -> list["Graph"]:
        found: list[Graph] = []
        for attr in self.attributes.values():
            if attr.type in _GRAPH_ATTR_TYPES:  # cheap test first: called for every node by every walk
                found.extend(attr.graphs())
        return found

    def implicit_inputs(self) -> list[Value]:
        """Outer-scope values read by nodes inside this node's subgraphs."""
        captured: dict[int, Value] = {}
        for graph in self.subgraphs():
            defined = graph.defined_values_recursive()
            for inner in graph.all_nodes():
                for value in inner.inputs:
                    if value is not None and id(value) not in defined:
                        captured.setdefault(id(value), value)
        return list(captured.values())

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type


@dataclass
class ModelInfo:
    """Model-level fields of the file a graph came from, kept so export writes them back."""

    ir_version: int = 10
    producer_name: str = "graphkiln"
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    source_path: str | None = None


class Graph:
    """A computation graph: inputs, initializers, nodes in a safe ordered set, outputs.
    Subgraphs (If/Loop/Scan bodies) are Graphs owned by a node's attribute; `parent` is that node."""

    def __init__(
        self,
        inputs: Sequence[Value] = (),
        outputs: Sequence[Value] = (),
        nodes: Iterable[Node] = (),
        initializers: Iterable[Value] = (),
        *,
        name: str = "main",
        opset_imports: dict[str, int] | None = None,
        doc_string: str | None = None,
        model: ModelInfo | None = None,
    ):
        self.name = name
        self.doc_string = doc_string
        self.opset_imports: dict[str, int] = dict(opset_imports or {})
        self.model = model if model is not None else ModelInfo()
        self.parent: Node | None = None
        self.meta: dict[str, Any] = {}
        self.inputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        self.nodes: LinkedSet[Node] = LinkedSet()
        self._name_counter = itertools.count()
        for value in inputs:
            self.add_input(value)
        for value in initializers:
            self.add_initializer(value)
        for node in nodes:
            self.append(node)
        self.outputs: list[Value] = list(outputs)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes)"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    # ---- scope ---------------------------------------------------------------------
    @property
    def root(self) -> "Graph":
        graph = self
        while graph.parent is not None and graph.parent.graph is not None:
            graph = graph.parent.graph
        return graph

    @property
    def opset(self) -> int:
        """The default-domain opset in force (inherited from the model for subgraphs)."""
        return self.root.opset_imports.get("", self.root.opset_imports.get("ai.onnx", 1))

    def all_nodes(self) -> Iterator[Node]:
        """Every node, including those inside subgraphs, outer before inner."""
        for node in self.nodes:
            yield node
            if node.attributes:
                for graph in node.subgraphs():
                    yield from graph.all_nodes()

    def self_and_subgraphs(self) -> list["Graph"]:
        """This graph, then every subgraph below it (what whole-model analyses walk)."""
        return [self, *self.subgraphs_recursive()]

    def subgraphs_recursive(self) -> Iterator["Graph"]:
        for node in self.nodes:
            if not node.attributes:
                continue
            for graph in node.subgraphs():
                yield graph
                yield from graph.subgraphs_recursive()

    def defined_values(self) -> dict[int, Value]:
        """Values defined in this graph's own scope, keyed by id()."""
        defined: dict[int, Value] = {}
        for value in itertools.chain(self.inputs, self.initializers.values()):
            defined[id(value)] = value
        for node in self.nodes:
            for value in node.outputs:
                defined[id(value)] = value
        return defined

    def defined_values_recursive(self) -> dict[int, Value]:
        defined = self.defined_values()
        for graph in self.subgraphs_recursive():
            defined.update(graph.defined_values())
        return defined

    def make_name(self, hint: str = "v") -> str:
        """A fresh name for a new value or node (uniqueness is re-checked at export)."""
        name = f"{hint}__{next(self.root._name_counter)}"
        while name in self.root.initializers:  # a re-imported graph already holds generated names
            name = f"{hint}__{next(self.root._name_counter)}"
        return name

    # ---- construction --------------------------------------------------------------
    def add_input(self, value: Value) -> Value:
        if value._producer is not None:
            raise GraphError(f"graph input {value.name!r} already has a producer")
        value._owner = self
        self.inputs.append(value)
        return value

    def add_initializer(self, value: Value) -> Value:
        if value.name is None:
            raise GraphError("an initializer needs a name")
        if value.const_value is None:
            raise GraphError(f"initializer {value.name!r} has no constant value")
        if value._producer is not None:
            raise GraphError(f"initializer {value.name!r} already has a producer")
        existing = self.initializers.get(value.name)
        if existing is not None and existing is not value:
            raise GraphError(f"initializer name {value.name!r} is already used")
        value._owner = self
        self.initializers[value.name] = value
        return value

    def make_constant(self, array: np.ndarray | Any, name: str | None = None, dtype: DataType | None = None) -> Value:
        """A new initializer holding `array`."""
        array = np.asarray(array)
        value = Value(name or self.make_name("const"), const_value=ArrayTensor(array, dtype=dtype))
        if dtype is not None:
            value.type = TensorType(dtype, Shape(array.shape))
        return self.add_initializer(value)

    def remove_initializer(self, name: str) -> None:
        value = self.initializers[name]
        if value._uses or value.is_graph_output():
            users = ", ".join(_node_label(u.node) for u in value._uses) or "a graph output"
            raise GraphError(f"initializer {name!r} is still used by {users}")
        del self.initializers[name]
        if not any(v is value for v in self.inputs):
            value._owner = None

    def _adopt(self, node: Node) -> None:
        if node.graph is not None:
            raise GraphError(f"{node!r} already belongs to a graph")
        node.graph = self
        for graph in node.subgraphs():
            graph.parent = node

    def append(self, node: Node) -> Node:
        self._adopt(node)
        self.nodes.append(node)
        return node

    def insert_node(self, node: Node, *, before: Node | None = None, after: Node | None = None) -> Node:
        """Insert `node` before or after an anchor already in this graph (default: at the end)."""
        self.insert_nodes([node], before=before, after=after)
        return node

    def insert_nodes(self, nodes: Sequence[Node], *, before: Node | None = None, after: Node | None = None) -> None:
        for node in nodes:
            self._adopt(node)
        if before is not None:
            self.nodes.insert_before(before, nodes)
        elif after is not None:
            self.nodes.insert_after(after, nodes)
        else:
            for node in nodes:
                self.nodes.append(node)

    def remove_node(self, node: Node) -> None:
        """Remove `node`; fails, naming the readers, while any output is still read."""
        self.remove_nodes([node])

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Remove several nodes at once; uses among the removed nodes themselves are allowed."""
        nodes = list(nodes)
        doomed = {id(n) for n in nodes}
        for node in nodes:
            if node.graph is not self:
                raise GraphError(f"{node!r} is not in graph {self.name!r}")
            for value in node.outputs:
                readers = [u.node for u in value._uses if id(_outermost_in(u.node, self)) not in doomed]
                if readers:
                    names = ", ".join(_node_label(n) for n in readers[:5])
                    raise GraphError(f"cannot remove {_node_label(node)}: its output {value.name!r} is read by {names}")
                if value.is_graph_output():
                    raise GraphError(f"cannot remove {_node_label(node)}: {value.name!r} is a graph output")
        for node in nodes:
            node._detach_inputs()
            self.nodes.remove(node)
            node.graph = None

    def replace_all_uses_with(self, old: Value, new: Value, *, keep_output_name: bool = True) -> None:
        """Redirect every reader of `old` to `new`. Where `old` is a graph output, the output keeps
        its name: `new` takes the name if it can, else an Identity carries it."""
        if old is new:
            return
        _redirect_uses(old, new)
        owner = old.graph or self
        positions = [i for i, v in enumerate(owner.outputs) if v is old]
        if not positions:
            return
        if not keep_output_name:
            for i in positions:
                owner.outputs[i] = new
            return
        can_take_name = (
            new._producer is not None
            and new.graph is owner
            and not new.is_graph_output()
        )
        if can_take_name:
            old_name = old.name
            old.name = owner.make_name(f"{old_name}_replaced") if old_name else None
            new.name = old_name
            carrier = new
            if new.type is None or (old.type is not None and getattr(new.type, "shape", None) is None):
                new.type = old.type
        else:
            old_name = old.name
            old.name = owner.make_name(f"{old_name}_replaced") if old_name else None
            identity = Node("Identity", [new], outputs=[old_name], name=owner.make_name("keep_output"))
            identity.outputs[0].type = old.type if old.type is not None else new.type
            owner.append(identity)
            carrier = identity.outputs[0]
        for i in positions:
            owner.outputs[i] = carrier

    # ---- order and analyses --------------------------------------------------------
    def toposort(self) -> None:
        """Order nodes so every value is defined before it is read (stable: ties keep the current
        order). Subgraph captures count as inputs of the owning node. Raises GraphError on a cycle."""
        nodes = list(self.nodes)
        position = {id(n): i for i, n in enumerate(nodes)}
        producers_of: dict[int, list[int]] = {}
        for i, node in enumerate(nodes):
            deps = set()
            for value in itertools.chain(node.inputs, node.implicit_inputs()):
                if value is None or value._producer is None:
                    continue
                producer = _outermost_in(value._producer, self)
                if producer is not None and id(producer) in position and producer is not node:
                    deps.add(position[id(producer)])
            producers_of[i] = sorted(deps)
        order = stable_topological_order([producers_of[i] for i in range(len(nodes))])
        if len(order) != len(nodes):
            placed = set(order)
            stuck = [nodes[i] for i in range(len(nodes)) if i not in placed]
            raise GraphError("graph has a cycle through " + " -> ".join(_node_label(n) for n in stuck[:6]))
        self.nodes.reorder([nodes[i] for i in order])

    def to_networkx(self, *, with_values: bool = False):
        """A networkx.DiGraph view for analyses: nodes are IR Nodes, edges carry the value read.
        With `with_values`, graph inputs and initializers appear as nodes too (keyed by Value)."""
        import networkx as nx

        digraph = nx.MultiDiGraph() if with_values else nx.DiGraph()
        for node in self.nodes:
            digraph.add_node(node)
        for node in self.nodes:
            for value in itertools.chain(node.inputs, node.implicit_inputs()):
                if value is None:
                    continue
                producer = _outermost_in(value._producer, self) if value._producer is not None else None
                if producer is not None and producer.graph is self:
                    if producer is not node:
                        digraph.add_edge(producer, node, value=value)
                elif with_values:
                    digraph.add_edge(value, node, value=value)
        return digraph

    def copy(self) -> "Graph":
        """A deep copy (constants are shared, they are never mutated in place)."""
        from ._clone import clone_graph

        return clone_graph(self)


def constant_node_value(node: Node) -> np.ndarray | None:
    """The array a Constant node produces, from whichever value_* attribute it carries."""
    for attr in node.attributes.values():
        if attr.ref_attr_name is not None:
            return None
        if attr.name == "value" and isinstance(attr.value, Tensor):
            return attr.value.numpy()
        if attr.name in ("value_float", "value_int"):
            return np.array(attr.value, dtype=np.float32 if attr.name == "value_float" else np.int64)
        if attr.name in ("value_floats", "value_ints"):
            return np.array(attr.value, dtype=np.float32 if attr.name == "value_floats" else np.int64)
        if attr.name == "value_string":
            return np.array(attr.value, dtype=object)
        if attr.name == "value_strings":
            return np.array(list(attr.value), dtype=object)
    return None


def _outermost_in(node: Node | None, graph: Graph) -> Node | None:
    """The node of `graph` that is `node` or contains it in a subgraph (None if unrelated)."""
    while node is not None and node.graph is not graph:
        owner = node.graph
        node = owner.parent if owner is not None else None
    return node


def _node_label(node: Node) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else node.op_type

"""The JAX backend's one interpreter loop: an environment of values, dispatch per node through the
lowering table, dead values freed, node names passed to jax.named_scope. Values known at trace
time stay numpy (shape arithmetic resolves while tracing); weights are function arguments."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.errors import UnsupportedError
from compiler.ir import Attr, AttrType, Graph, Node, TensorType, Value
from compiler.pass_infra import switched_off

from . import ops as _ops  # noqa: F401  (registers the rules and turns on 64-bit types before any trace)
from .conv_gemm import (COLUMNS, ROWS, ConvKernel, depth_block, pack_conv_columns, pack_conv_kernel, prefers_columns,
                        row_tile)
from .native_rewrites import (fuse_attention_views, fuse_conv_epilogue, fuse_depthwise_epilogue, fuse_gelu_epilogue,
                              fuse_matmul_bias, fuse_residual_epilogue, fuse_transposed_weights, read_masks_unexpanded)
from .panel_matmul import PanelWeight, pack_panels, panel_width
from .low_precision_weights import CAST_SUFFIX, CastChoice, cast_params, low_precision_weights
from .precision import compute_dtype, precision_name
from .registry import LoweringContext, find_lowering, find_static_kernel, has_lowering, is_static
from .static_inputs import static_input_indices, unwrap
from .weight_layout import (conv_gemm_kernels, conv_output_pixels, onnx_order, panel_weights, reads_panels, stored_params,
                            weight_layouts)

PARAM_MIN_SIZE = 2  # float initializers at least this big are function arguments (weights)
# float inputs that determine output shapes, so they must be known while tracing
SHAPE_LIKE_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1), ("Range", 0), ("Range", 1), ("Range", 2)})
PANEL_SUFFIX = "::panels"  # the param holding a shared weight's packed copy
PANEL_MIN_ELEMENTS = 1 << 11  # smaller product weights stay XLA dots, which fuse with their neighbours
STATIC_MAX_ELEMENTS = 1 << 16  # larger all-static results are computed by XLA, not at trace time
# ops whose output shape depends on input values: a graph holding one runs eagerly (op by op, no jit)
DATA_DEPENDENT_OPS = frozenset({"NonZero", "Unique", "NonMaxSuppression", "Compress", "ImageDecoder"})


@dataclass
class LoweringOptions:
    precision: str = "fp32"
    platform: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)
    conv_weight_layout: bool = False  # store weights as XLA's kernels read them (weight_layout.py)
    native_kernels: bool = False  # fp32 products and attention on the native CPU kernels (native/)


def prepare_graph(graph: Graph) -> Graph:
    """A copy of `graph` in which ai.graphkiln ops without a direct lowering are decomposed."""
    from compiler.builder import OpBuilder
    from compiler.custom_ops import get_custom_op

    prepared = graph.copy()
    for target in [prepared, *prepared.subgraphs_recursive()]:
        for node in list(target.nodes):
            if node.domain != GRAPHKILN_DOMAIN or has_lowering(node.domain, node.op_type):
                continue
            op = get_custom_op(node.domain, node.op_type)
            if op is None:
                raise UnsupportedError(f"no JAX lowering or decomposition for {node.domain}::{node.op_type}")
            builder = OpBuilder(target, before=node, stamp=f"decompose:{node.op_type}")
            for old, new in zip(node.outputs, op.decompose(builder, node)):
                new.type = new.type or old.type
                target.replace_all_uses_with(old, new)
            target.remove_node(node)
    return prepared


def is_param(value: Value) -> bool:
    """Whether an initializer travels as a function argument rather than a trace-time constant."""
    tensor = value.const_value
    if tensor is None:
        return False
    if any((use.node.op_type, use.index) in SHAPE_LIKE_INPUTS for use in value.uses):
        return False
    if tensor.size > 4096:
        return True
    return tensor.dtype.is_floating and tensor.size >= PARAM_MIN_SIZE


def split_initializers(graph: Graph) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(params, statics): weights passed as arguments, and small constants baked in at trace time."""
    params: dict[str, np.ndarray] = {}
    statics: dict[str, np.ndarray] = {}
    for name, value in graph.initializers.items():
        (params if is_param(value) else statics)[name] = value.const_value.numpy()
    return params, statics


def attribute_kwargs(node: Node) -> dict[str, Any]:
    """A node's attributes as plain Python values for a rule's keyword arguments."""
    kwargs: dict[str, Any] = {}
    for name, attr in node.attributes.items():
        kwargs[name] = _attr_value(attr)
    return kwargs


def _attr_value(attr: Attr) -> Any:
    if attr.type == AttrType.TENSOR:
        return np.asarray(attr.value.numpy())
    if attr.type == AttrType.TENSORS:
        return [np.asarray(t.numpy()) for t in attr.value]
    if attr.type == AttrType.STRING and isinstance(attr.value, bytes):
        return attr.value.decode("utf-8", "replace")
    return attr.value


class Interpreter:
    """Evaluates one graph (and, through `lower_subgraph`, its bodies) on JAX values."""

    def __init__(self, options: LoweringOptions, opsets: dict[str, int]):
        self.options = options
        self.opsets = opsets

    def run(self, graph: Graph, env: dict[int, Any]) -> list[Any]:
        last_use = _last_uses(graph)
        keep = {id(v) for v in graph.outputs}
        for position, node in enumerate(graph.nodes):
            args = [None if v is None else _for_reader(_read(env, v, node), node, i) for i, v in enumerate(node.inputs)]
            results = self.evaluate(node, args, env)
            for value, result in zip(node.outputs, results):
                env[id(value)] = result
            for dead in last_use.get(position, ()):
                if dead not in keep:
                    env.pop(dead, None)
        return [_for_reader(_read(env, v, None), None, 0) for v in graph.outputs]

    def evaluate(self, node: Node, args: list[Any], env: dict[int, Any]) -> list[Any]:
        opset = self.opsets.get(node.domain, self.opsets.get("", 1))
        ctx = LoweringContext(
            node, opset, self.options.precision, self.options.platform,
            lower_subgraph=lambda graph: self._subgraph_function(graph, env),
            options=self.options.extra, native=self.options.native_kernels,
        )
        kwargs = attribute_kwargs(node)
        if _all_static(args) and not node.subgraphs() and self._small_outputs(node):
            static = self._evaluate_static(ctx, node, args, kwargs)
            if static is not None:
                return static
        rule = find_lowering(node.domain, node.op_type, opset)
        with jax.named_scope(_scope_name(node)):
            try:
                result = rule(ctx, *args, **kwargs)
            except TypeError:
                # under jax.export a trace-time value may hold symbolic dims (an object array), which
                # jax.numpy cannot take; where it meets traced values, lift it into the trace
                if not any(_holds_symbolic_dims(a) for a in args):
                    raise
                result = rule(ctx, *[_lift_symbolic(a) for a in args], **kwargs)
        return _as_list(result, len(node.outputs))

    def _evaluate_static(self, ctx, node: Node, args, kwargs) -> list[Any] | None:
        kernel = find_static_kernel(node.domain, node.op_type)
        if kernel is not None:
            try:
                results = _as_list(kernel(ctx, *args, **kwargs), len(node.outputs))
                # a kernel may have to trace (a bound that is a symbolic dim): keep its jax values
                return [r if r is None or isinstance(r, jax.Array) else np.asarray(r) for r in results]
            except NotImplementedError:
                pass
        if any(isinstance(a, np.ndarray) and a.dtype == object for a in args if a is not None):
            return None
        rule = find_lowering(node.domain, node.op_type, ctx.opset)
        with jax.ensure_compile_time_eval():
            result = _as_list(rule(ctx, *args, **kwargs), len(node.outputs))
        return [_to_numpy(r) for r in result]

    @staticmethod
    def _small_outputs(node: Node) -> bool:
        for value in node.outputs:
            if not isinstance(value.type, TensorType):
                return False
            count = value.shape.numel() if value.shape is not None else None
            if count is None or count > STATIC_MAX_ELEMENTS:
                return False
        return True

    def _subgraph_function(self, graph: Graph, outer_env: dict[int, Any]) -> Callable[..., list]:
        """A Python function running `graph` with its formal inputs bound to the arguments;
        outer-scope values are read from the enclosing environment."""

        def body(*inputs: Any) -> list[Any]:
            env = dict(outer_env)
            for value, array in zip(graph.inputs, inputs):
                env[id(value)] = array
            for name, value in graph.initializers.items():
                if not any(v is value for v in graph.inputs):
                    env[id(value)] = value.const_value.numpy()
            return self.run(graph, env)

        return body


def _holds_symbolic_dims(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == object and value.size > 0 and not any(
        isinstance(item, (str, bytes)) for item in value.reshape(-1).tolist())


def _lift_symbolic(value: Any) -> Any:
    """An object array of ints and symbolic dims as a traced int64 array of the same shape."""
    if not _holds_symbolic_dims(value):
        return value
    items = [jnp.asarray(item, dtype=jnp.int64) for item in value.reshape(-1).tolist()]
    return jnp.stack(items).reshape(value.shape)


def _all_static(args: Sequence[Any]) -> bool:
    return all(a is None or is_static(a) or (isinstance(a, list) and all(is_static(x) for x in a)) for a in args)


def _to_numpy(result: Any) -> Any:
    if result is None:
        return None
    if isinstance(result, list):
        return [_to_numpy(r) for r in result]
    return np.asarray(result)


def _as_list(result: Any, count: int) -> list[Any]:
    if isinstance(result, tuple):
        values = list(result)
    else:
        values = [result]
    if len(values) < count:
        values += [None] * (count - len(values))
    return values


def _read(env: dict[int, Any], value: Value, reader: Node | None) -> Any:
    try:
        return env[id(value)]
    except KeyError:
        where = f" (read by {reader.op_type} {reader.name!r})" if reader is not None else ""
        raise UnsupportedError(f"value {value.name!r} has no lowered definition{where}") from None


def _last_uses(graph: Graph) -> dict[int, list[int]]:
    """position of node -> ids of values whose last reader (in this graph) is that node."""
    last: dict[int, int] = {}
    for position, node in enumerate(graph.nodes):
        for value in list(node.inputs) + node.implicit_inputs():
            if value is not None:
                last[id(value)] = position
    by_position: dict[int, list[int]] = {}
    for value_id, position in last.items():
        by_position.setdefault(position, []).append(value_id)
    return by_position


def _scope_name(node: Node) -> str:
    name = node.name or node.op_type
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name)[:120] or node.op_type


def data_dependent_ops(graph: Graph) -> tuple[str, ...]:
    """Op types in `graph` that cannot be one XLA program: output shapes that depend on run-time values
    (Compress only when its condition is computed inside the graph; a graph input condition is a
    static jit argument) and string-typed values."""
    found = set()
    for node in graph.all_nodes():
        if node.op_type not in DATA_DEPENDENT_OPS:
            continue
        if node.op_type == "Compress" and node.inputs[1] is not None and node.inputs[1].producer is None:
            continue
        found.add(node.op_type)
    for node in graph.all_nodes():  # XLA has no strings: ops reading or making them run on the host
        if any(v is not None and v.dtype is not None and v.dtype.name == "STRING" for v in [*node.inputs, *node.outputs]):
            found.add(node.op_type)
    return tuple(sorted(found))


def build_function(graph: Graph, options: LoweringOptions) -> tuple[Callable[..., list], dict[str, np.ndarray]]:
    """Lower `graph` to a pure function `f(params, *inputs) -> list of outputs` and its params."""
    prepared = prepare_graph(graph)
    if options.native_kernels and not native_kernels_apply(options):
        options = replace(options, native_kernels=False)
    if options.native_kernels:
        fuse_attention_views(prepared)
        read_masks_unexpanded(prepared)
        fuse_matmul_bias(prepared)
        fuse_gelu_epilogue(prepared)
        fuse_residual_epilogue(prepared)
        fuse_transposed_weights(prepared)
        fuse_conv_epilogue(prepared)
        fuse_depthwise_epilogue(prepared)
    params, statics = split_initializers(prepared)
    opsets = dict(prepared.opset_imports)
    inputs = [v for v in prepared.inputs if v.const_value is None]
    initializer_values = dict(prepared.initializers)
    # model-parallel sharding splits a weight along its ONNX output-feature axis: keep that layout there
    transpose_matmul = options.platform == "cpu" and int(options.extra.get("model_parallel") or 1) == 1
    panels = _panel_weights(prepared, params, options)
    layouts = (weight_layouts(prepared, params, transpose_matmul_weights=transpose_matmul)
               if options.conv_weight_layout else {})
    conv_kernels, conv_layouts = _conv_kernels(prepared, params, options)
    conv_shapes = {name: tuple(int(d) for d in params[name].shape) for name in conv_kernels}
    conv_depth = depth_block() if conv_kernels else 0
    layouts = {name: permutation for name, permutation in layouts.items()
               if name not in panels and name not in conv_kernels}
    params = stored_params(params, layouts)
    for name, (packed, _, shared) in panels.items():
        params[name + PANEL_SUFFIX if shared else name] = packed
    params.update(conv_kernels)
    casts = _cast_weights(prepared, params, options)
    params = cast_params(params, casts, compute_dtype(options.precision)) if casts else params

    def function(param_values: dict[str, Any], *input_values: Any) -> list[Any]:
        if len(input_values) != len(inputs):
            raise UnsupportedError(f"model takes {len(inputs)} inputs, got {len(input_values)}")
        env: dict[int, Any] = {}
        for name, value in initializer_values.items():
            env[id(value)] = param_values[name] if name in param_values else statics[name]
            if name in layouts:
                env[id(value)] = onnx_order(env[id(value)], layouts[name])
            elif name in panels:
                _, columns, shared = panels[name]
                if shared:
                    env[id(value)] = SharedWeight(env[id(value)], PanelWeight(param_values[name + PANEL_SUFFIX], columns),
                                                  reads_panels)
                else:
                    env[id(value)] = PanelWeight(env[id(value)], columns)
            elif name in conv_shapes:
                env[id(value)] = ConvKernel(env[id(value)], conv_shapes[name], conv_depth, conv_layouts[name])
            if name in casts and casts[name].shared:  # the products read the cast copy, other ops the weight
                cast = param_values[name + CAST_SUFFIX]
                cast = onnx_order(cast, layouts[name]) if name in layouts else cast
                env[id(value)] = SharedWeight(env[id(value)], cast, casts[name].reads)
        for value, array in zip(inputs, input_values):
            env[id(value)] = unwrap(array)
        outputs = Interpreter(options, opsets).run(prepared, env)
        return [jnp.asarray(o) if isinstance(o, np.ndarray) and o.dtype != object else o for o in outputs]

    function.static_inputs = static_input_indices(prepared)  # type: ignore[attr-defined]
    function.eager_ops = data_dependent_ops(prepared)  # type: ignore[attr-defined]
    function.param_layouts = layouts  # type: ignore[attr-defined]  # stored order of transposed weights
    function.panel_weights = tuple(sorted(panels))  # type: ignore[attr-defined]  # packed for the native kernel
    function.conv_kernels = tuple(sorted(conv_kernels))  # type: ignore[attr-defined]  # row tiles for conv_gemm.cc
    return function, params


def native_kernels_apply(options: LoweringOptions) -> bool:
    """Whether the native kernels can run this lowering: fp32 on the CPU, built on this machine."""
    return options.platform == "cpu" and precision_name(options.precision) == "fp32" and panel_width() is not None


def _panel_weights(graph: Graph, params: dict[str, np.ndarray], options: LoweringOptions
                   ) -> dict[str, tuple[np.ndarray, int, bool]]:
    """name -> (packed panels, N, shared), for the fp32 product weights the native CPU kernel runs
    (none unless options.native_kernels); a shared weight is read by other ops too."""
    if not options.native_kernels:
        return {}
    width = panel_width()
    packed = {}
    for name, choice in panel_weights(graph, params, PANEL_MIN_ELEMENTS).items():
        weight = params[name].T if choice.transposed else params[name]
        packed[name] = (pack_panels(weight, width), int(weight.shape[1]), choice.shared)
    return packed


def _conv_kernels(graph: Graph, params: dict[str, np.ndarray], options: LoweringOptions
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> packed kernel, name -> its layout), for the ConvGemm kernels the native CPU kernel
    runs (every size: XLA's convolution is the alternative; none unless options.native_kernels):
    row tiles, or column panels where the images have few output pixels (conv_gemm.prefers_columns)."""
    if not options.native_kernels:
        return {}, {}
    rows, depth, width = row_tile(), depth_block(), panel_width()
    packed, layouts = {}, {}
    for name in conv_gemm_kernels(graph, params):
        depth_k = int(np.prod(params[name].shape[1:]))
        if prefers_columns(conv_output_pixels(graph, name), depth_k, width):
            packed[name], layouts[name] = pack_conv_columns(params[name], width), COLUMNS
        else:
            packed[name], layouts[name] = pack_conv_kernel(params[name], rows, depth), ROWS
    return packed, layouts


def _cast_weights(graph: Graph, params: dict[str, np.ndarray], options: LoweringOptions) -> dict[str, CastChoice]:
    """The weights stored in the compute type (low_precision_weights.py): under bf16/fp16 unless
    the cast_weights_once option is off."""
    if compute_dtype(options.precision) is None or switched_off(options.extra.get("cast_weights_once")):
        return {}
    return low_precision_weights(graph, params)


@dataclass(frozen=True)
class SharedWeight:
    """A weight that some readers see in another form (packed panels for the native products, a
    low-precision copy for the products that cast it) and the rest read plain."""

    plain: Any
    alternate: Any
    reads_alternate: Callable[[Node, int], bool]


def _for_reader(arg: Any, node: Node | None, index: int) -> Any:
    """What input `index` of `node` sees of a SharedWeight."""
    if isinstance(arg, SharedWeight):
        return arg.alternate if node is not None and arg.reads_alternate(node, index) else arg.plain
    return arg

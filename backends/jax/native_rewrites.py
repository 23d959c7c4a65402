"""Graph rewrites made only for the native CPU kernels, on the lowering's private copy of the graph.

An Attention node's q, k and v are often views of one tensor reached through Split, Gather,
Reshape, Transpose and (Un)Squeeze (a fused QKV projection cut into heads: merge_sibling_matmuls'
Split in BERT and GPT-2, torchvision's Reshape/Transpose/Gather chain in ViT), and its output is
often transposed back before the out-projection. XLA copies every one of those views; the
attention kernel reads strided views instead. `fuse_attention_views` replaces such an Attention
with a ViewAttention node (domain ai.graphkiln.native) that takes the tensors the chains start
from plus the chains themselves, and produces the transposed output directly where a Transpose
was its only reader. The lowering works out the strides once shapes are concrete (view_chains.py)
and replays the chains as ordinary ops where they are not plain views."""

from __future__ import annotations

import json

import numpy as np

from compiler.ir import Attr, AttrType, DataType, Graph, Node, Value

NATIVE_DOMAIN = "ai.graphkiln.native"
VIEW_ATTENTION = "ViewAttention"
MATMUL_BIAS = "MatMulBias"
MATMUL_TRANSPOSED = "MatMulTransposed"
CONV_GEMM = "ConvGemm"
DEPTHWISE_CONV = "DepthwiseConv"
EPILOGUE_ACTIVATIONS = {"Relu": "relu", "HardSwish": "hard_swish"}  # ops a convolution's epilogue applies
TRANSPOSED_WEIGHT = "transposed_weight"  # MatMulBias attribute: W stored [N, K], as Gemm's transB
VIEW_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Split", "Identity"})


def fuse_attention_views(graph: Graph) -> int:
    """Rewrite every Attention without a KV cache into a ViewAttention; returns how many were
    rewritten with at least one view chain or output transpose absorbed."""
    absorbed = 0
    for node in list(graph.nodes):
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 3:
            continue
        if any(node.inputs[i] is not None for i in (4, 5) if i < len(node.inputs)) or None in node.inputs[:3]:
            continue
        traced = [_trace(value) for value in node.inputs[:3]]
        transpose = _output_transpose(node)
        if not any(chain for _, chain in traced) and transpose is None:
            continue
        attributes = dict(node.attributes)
        for name, (_, chain) in zip(("q_chain", "k_chain", "v_chain"), traced):
            attributes[name] = Attr(name, AttrType.STRING, json.dumps(chain))
        perm = list(transpose.attributes["perm"].value) if transpose is not None else [0, 1, 2, 3]
        attributes["output_perm"] = Attr("output_perm", AttrType.INTS, perm)
        inputs = [base for base, _ in traced] + list(node.inputs[3:])
        fused = Node(VIEW_ATTENTION, inputs, attributes, domain=NATIVE_DOMAIN, outputs=[None] * len(node.outputs),
                     name=f"{node.name or 'attention'}_views")
        graph.insert_node(fused, before=node)
        replaced = [transpose.outputs[0], *node.outputs[1:]] if transpose is not None else list(node.outputs)
        for old, new in zip(replaced, fused.outputs):
            new.type = old.type
            if old.uses or old.is_graph_output():
                graph.replace_all_uses_with(old, new)
        originals = list(node.inputs[:3])
        graph.remove_nodes([transpose, node] if transpose is not None else [node])
        _remove_dead_views(graph, originals)
        absorbed += 1
    return absorbed


def read_masks_unexpanded(graph: Graph) -> int:
    """Attention masks read before an Expand that spreads them over heads or queries: the kernel
    broadcasts its bias through zero strides, so a [B, 1, 1, S] mask stays 4 bytes a key instead of
    becoming [B, 1, S, S] on every call. Only where the Expand keeps the key axis (a shorter mask
    is padded, not broadcast). Returns how many masks were rewired."""
    rewired = 0
    for node in list(graph.nodes):
        if node.op_type not in ("Attention", VIEW_ATTENTION) or len(node.inputs) < 4 or node.inputs[3] is None:
            continue
        expand = node.inputs[3].producer
        if expand is None or expand.op_type != "Expand" or expand.domain not in ("", "ai.onnx"):
            continue
        mask, expanded = expand.inputs[0], expand.outputs[0]
        if mask.shape is None or expanded.shape is None or len(mask.shape) > 4 or mask.dtype != expanded.dtype:
            continue
        if not mask.shape or not _keeps_last_axis(mask, expand):
            continue
        node.replace_input_with(3, mask)
        if not expanded.uses and not expanded.is_graph_output():
            graph.remove_node(expand)
        rewired += 1
    return rewired


def _keeps_last_axis(mask: Value, expand: Node) -> bool:
    """Whether Expand(mask, target) leaves the mask's last axis as it is: the output's last dim is
    provably the mask's, or the target ends in 1 (a constant, or a Concat ending in one)."""
    if mask.shape[-1] is not None and mask.shape[-1] == expand.outputs[0].shape[-1]:
        return True
    target = expand.inputs[1]
    while target is not None and target.producer is not None and target.producer.op_type == "Concat":
        target = target.producer.inputs[-1]
    last = _constant(target)
    return last is not None and last.size > 0 and int(last.reshape(-1)[-1]) == 1


def fuse_matmul_bias(graph: Graph) -> int:
    """MatMul(x, W) -> Add(., b), W and b constants and b one row of N values, becomes
    MatMulBias(x, W, b), so the panel kernel adds the bias as it stores the product instead of XLA
    reading the product back for it; returns how many."""
    fused = 0
    for node in list(graph.nodes):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or _constant_shape(node.inputs[1]) is None:
            continue
        product = node.outputs[0]
        add = _sole_reader(node, "Add")
        if add is None:
            continue
        bias = add.inputs[1 - product.uses[0].index]
        columns = _constant_shape(node.inputs[1])[-1]
        bias_shape = _constant_shape(bias)
        rank = len(product.shape) if product.shape is not None else None
        if bias_shape is None or rank is None or len(bias_shape) > rank or list(bias_shape) != [1] * (len(bias_shape) - 1) + [columns]:
            continue
        _merge(graph, node, add, [node.inputs[0], node.inputs[1], bias], {}, "bias")
        fused += 1
    return fused


def fuse_gelu_epilogue(graph: Graph) -> int:
    """A product of a constant weight (MatMulBias, MatMul, or Gemm without transA or scaling)
    followed by Gelu (ONNX Gelu-20, either form) becomes one MatMulBias with an `activation`
    attribute, applied by the panel kernel as it stores each output tile (the GELU of a transformer
    MLP otherwise reads and writes its [tokens, 3072] activations once more); returns how many."""
    fused = 0
    for node in list(graph.nodes):
        inputs = _plain_product(node)
        if inputs is None:
            continue
        gelu = _sole_reader(node, "Gelu")
        if gelu is None:
            gelu = _gelu_under_reshape(graph, node)
        if gelu is None:
            continue
        approximate = gelu.attributes.get("approximate")
        form = approximate.value if approximate is not None else "none"
        form = form.decode() if isinstance(form, bytes) else form
        if form not in ("none", "tanh"):
            continue
        activation = Attr("activation", AttrType.STRING, "gelu" if form == "none" else "gelu_tanh")
        _merge(graph, node, gelu, inputs, {**_product_attributes(node), "activation": activation}, "gelu")
        fused += 1
    return fused


def fuse_residual_epilogue(graph: Graph) -> int:
    """A product of a constant weight (as fuse_gelu_epilogue takes it, or a MatMulBias already
    carrying a GELU) whose only reader is an Add of a computed float32 tensor becomes MatMulBias
    with that tensor as its `residual` input: the kernel adds the transformer's residual stream as
    it stores each tile instead of XLA reading the product back (the lowering adds it as XLA would
    where the shapes differ); returns how many."""
    fused = 0
    for node in list(graph.nodes):
        inputs = _plain_product(node)
        if inputs is None and node.domain == NATIVE_DOMAIN and node.op_type == MATMUL_BIAS and len(node.inputs) < 4:
            inputs = (list(node.inputs) + [None])[:3]
        if inputs is None:
            continue
        attributes = _product_attributes(node)
        add = _sole_reader(node, "Add")
        if add is not None:
            residual = add.inputs[1 - node.outputs[0].uses[0].index]
            if _computed_float(residual):
                _merge(graph, node, add, [*inputs, residual], attributes, "residual")
                fused += 1
        elif _fuse_residual_through_view(graph, node, inputs, attributes):
            fused += 1
    return fused


def _fuse_residual_through_view(graph: Graph, node: Node, inputs: list, attributes: dict) -> bool:
    """Fuse Add(view(product), R), the view a reshape-like node or a Reshape then a Transpose,
    into one MatMulBias; returns whether it did. Where the shapes are known equal and nothing
    broadcasts, R is read in the product's shape (residual_reshaped) and the view stays; where only
    tracing can tell, the view travels along (shape, perm) for the lowering to decide."""
    reshape = _sole_reshape(node)
    transpose = _sole_reader(reshape, "Transpose") if reshape is not None else None
    if transpose is not None and "perm" not in transpose.attributes:
        return False
    view = transpose or reshape  # torchvision's ViT: Reshape to [tokens, batch, N], Transpose
    add = _sole_reader(view, "Add") if view is not None else None
    if add is None:
        return False
    residual = add.inputs[1 - view.outputs[0].uses[0].index]
    if not _computed_float(residual):
        return False
    if (transpose is None and _same_known_shape(residual, add.outputs[0])
            and _same_known_shape(reshape.outputs[0], add.outputs[0])):
        # Add(Reshape(P), R) = Reshape(P + R viewed in P's shape) where neither side broadcasts
        attributes["residual_reshaped"] = Attr("residual_reshaped", AttrType.INT, 1)
        merged = Node(MATMUL_BIAS, [*inputs, residual], attributes, domain=NATIVE_DOMAIN, outputs=[None],
                      name=f"{node.name or 'product'}_residual")
        graph.insert_node(merged, before=reshape)
        merged.outputs[0].type = node.outputs[0].type
        reshape.replace_input_with(0, merged.outputs[0])
        graph.replace_all_uses_with(add.outputs[0], reshape.outputs[0])
        graph.remove_nodes([add, node])
        return True
    if reshape.op_type != "Reshape" or _known_apart(residual, view.outputs[0]):
        return False
    # the lowering fuses the residual once tracing shows it has the viewed product's dims (torchscript's
    # GPT-2 and ViT name the same token dims apart) and the transpose only moves dims of 1, and adds
    # it as XLA would otherwise
    attributes.update({name: a for name, a in reshape.attributes.items() if name == "allowzero"})
    if transpose is not None:
        attributes["perm"] = transpose.attributes["perm"]
    _merge(graph, node, add, [*inputs, residual, reshape.inputs[1]], attributes, "residual",
           through=[reshape, *([transpose] if transpose is not None else [])])
    return True


def fuse_conv_epilogue(graph: Graph) -> int:
    """Every 2-D, ungrouped Conv of a float32 constant kernel (but a patch embedding, which
    conv_forms multiplies as it is) becomes ConvGemm, run by native/conv_gemm.cc on the NCHW image;
    an Add of a computed tensor that is its only reader and a Relu or HardSwish after either come
    along as the kernel's epilogue (a ResNet block's residual and activation cost no pass of their
    own); returns how many convolutions were rewritten."""
    fused = 0
    for node in list(graph.nodes):
        if not _gemm_conv(node):
            continue
        if _pixel_product(node):
            _conv_as_product(graph, node)
            fused += 1
            continue
        last, inputs = node, [node.inputs[0], node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None]
        add = _sole_reader(node, "Add")
        residual = add.inputs[1 - node.outputs[0].uses[0].index] if add is not None else None
        if not _computed_float(residual):
            add = None
        else:
            inputs.append(residual)
            last = add
        _replace_with_epilogue(graph, node, CONV_GEMM, inputs, last, [add])
        fused += 1
    return fused


def _pixel_product(node: Node) -> bool:
    """Whether `node` (a _gemm_conv) is a 1x1 convolution of one pixel, no padding (a
    squeeze-excitation block's layers): a product of [N, C] by the kernel's [O, C] matrix, which the
    panel kernel runs without conv_gemm.cc's 32-pixel panels, and whose kernel nothing else reads."""
    kernel, shape = _constant_shape(node.inputs[1]), node.inputs[0].shape
    return (kernel[2:] == (1, 1) and shape is not None and len(shape) == 4 and tuple(shape[2:]) == (1, 1)
            and isinstance(shape[1], int) and not any(_ints(node, "pads")) and len(node.inputs[1].uses) == 1)


def _conv_as_product(graph: Graph, node: Node) -> None:
    """A _pixel_product Conv (and a Relu or HardSwish that is its only reader) as Reshape [N, C] ->
    MatMulBias with the [O, C] kernel matrix (transposed_weight) -> Reshape [N, O, 1, 1]."""
    kernel = node.inputs[1].const_value.numpy()
    matrix = graph.make_constant(kernel.reshape(kernel.shape[0], -1), graph.make_name("conv_matrix"), DataType.FLOAT)
    rows = graph.make_constant(np.array([-1, kernel.shape[1]], np.int64), graph.make_name("shape"), DataType.INT64)
    flat = Node("Reshape", [node.inputs[0], rows], {}, outputs=[None], name=f"{node.name or 'conv'}_rows")
    graph.insert_node(flat, before=node)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    attributes = {TRANSPOSED_WEIGHT: Attr(TRANSPOSED_WEIGHT, AttrType.INT, 1)}
    last, activation = node, next(filter(None, (_sole_reader(node, op) for op in EPILOGUE_ACTIVATIONS)), None)
    if activation is not None:
        attributes["activation"] = Attr("activation", AttrType.STRING, EPILOGUE_ACTIVATIONS[activation.op_type])
        last = activation
    product = Node(MATMUL_BIAS, [flat.outputs[0], matrix, bias], attributes, domain=NATIVE_DOMAIN, outputs=[None],
                   name=f"{node.name or 'conv'}_product")
    graph.insert_node(product, before=node)
    image = graph.make_constant(np.array([-1, kernel.shape[0], 1, 1], np.int64), graph.make_name("shape"),
                                DataType.INT64)
    back = Node("Reshape", [product.outputs[0], image], {}, outputs=[None], name=f"{node.name or 'conv'}_image")
    graph.insert_node(back, before=node)
    back.outputs[0].type = last.outputs[0].type
    graph.replace_all_uses_with(last.outputs[0], back.outputs[0])
    weight = node.inputs[1]
    graph.remove_nodes([n for n in (activation, node) if n is not None])
    if weight.name in graph.initializers and not weight.uses and not weight.is_graph_output():
        graph.remove_initializer(weight.name)


def _ints(node: Node, name: str) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.value) if attr is not None else []


def fuse_depthwise_epilogue(graph: Graph) -> int:
    """Every 2-D depthwise Conv (group = input channels, one input channel per kernel) of a float32
    constant kernel becomes DepthwiseConv, run by native/depthwise_conv.cc on the NCHW image with
    its padding, bias and a Relu or HardSwish that is its only reader (MobileNet's blocks); returns
    how many."""
    fused = 0
    for node in list(graph.nodes):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        kernel = _constant_shape(node.inputs[1])
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        group = node.attributes.get("group")
        if (kernel is None or len(kernel) != 4 or kernel[1] != 1 or group is None or group.value < 2
                or kernel[0] % group.value or (bias is not None and _constant_shape(bias) != (kernel[0],))):
            continue
        _replace_with_epilogue(graph, node, DEPTHWISE_CONV, [node.inputs[0], node.inputs[1], bias], node, [])
        fused += 1
    return fused


def _replace_with_epilogue(graph: Graph, node: Node, op_type: str, inputs: list, last: Node,
                           absorbed: list[Node | None]) -> None:
    """Replace `node`, the `absorbed` nodes up to `last` and an activation that is `last`'s only
    reader with one `op_type` node (native domain, node's attributes plus `activation`)."""
    attributes = dict(node.attributes)
    activation = next(filter(None, (_sole_reader(last, op) for op in EPILOGUE_ACTIVATIONS)), None)
    if activation is not None:
        name = EPILOGUE_ACTIVATIONS[activation.op_type]
        attributes["activation"] = Attr("activation", AttrType.STRING, name)
        last = activation
    merged = Node(op_type, inputs, attributes, domain=NATIVE_DOMAIN, outputs=[None],
                  name=f"{node.name or 'conv'}_{'gemm' if op_type == CONV_GEMM else 'depthwise'}")
    graph.insert_node(merged, before=last)
    merged.outputs[0].type = last.outputs[0].type
    graph.replace_all_uses_with(last.outputs[0], merged.outputs[0])
    graph.remove_nodes([n for n in (activation, *absorbed, node) if n is not None])


def _gemm_conv(node: Node) -> bool:
    """Whether `node` is a Conv fuse_conv_epilogue rewrites."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    kernel = _constant_shape(node.inputs[1])
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if kernel is None or len(kernel) != 4 or (bias is not None and _constant_shape(bias) != (kernel[0],)):
        return False
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    if attrs.get("group", 1) != 1:
        return False
    patches = (list(attrs.get("strides", [1, 1])) == list(kernel[2:]) and any(k > 1 for k in kernel[2:])
               and not any(attrs.get("pads", [0] * 4))
               and attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET", "VALID", b"VALID"))
    return not patches


def _known_apart(a: Value, b: Value) -> bool:
    """Whether the two shapes are known to differ: in rank, or in a dim both give as a number."""
    if a.shape is None or b.shape is None:
        return False
    return len(a.shape) != len(b.shape) or any(isinstance(x, int) and isinstance(y, int) and x != y
                                               for x, y in zip(a.shape, b.shape))


def _computed_float(value: Value | None) -> bool:
    """Whether `value` is a float32 tensor computed at run time (not a constant)."""
    return value is not None and not value.is_constant and value.dtype is not None and value.dtype.name == "FLOAT"


def _same_known_shape(a: Value, b: Value) -> bool:
    """Whether the two shapes are known and equal dim for dim (symbols by name)."""
    return a.shape is not None and b.shape is not None and None not in a.shape and tuple(a.shape) == tuple(b.shape)


RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _sole_reshape(node: Node) -> Node | None:
    """The reshape-like node that is the only reader of `node`'s (non-graph-output) first output."""
    product = node.outputs[0]
    if product.is_graph_output() or len(product.uses) != 1 or product.uses[0].index != 0:
        return None
    reshape = product.uses[0].node
    return reshape if reshape.op_type in RESHAPES and reshape.domain in ("", "ai.onnx") else None


def _gelu_under_reshape(graph: Graph, node: Node) -> Node | None:
    """Where `node`'s product is only reshaped and then read by Gelu alone (torchscript's GPT-2:
    Gemm on [tokens, K], Reshape to [1, tokens, N], Gelu), move the Gelu before the reshape, which
    it commutes with as an elementwise op, and return it; None (graph unchanged) otherwise."""
    product, reshape = node.outputs[0], _sole_reshape(node)
    gelu = _sole_reader(reshape, "Gelu") if reshape is not None else None
    if gelu is None or product.type is None:
        return None
    moved = Node("Gelu", [product], dict(gelu.attributes), outputs=[None], name=gelu.name)
    graph.insert_node(moved, before=reshape)
    moved.outputs[0].type = product.type
    reshape.replace_input_with(0, moved.outputs[0])
    graph.replace_all_uses_with(gelu.outputs[0], reshape.outputs[0])
    graph.remove_node(gelu)
    return moved


def _sole_reader(node: Node, op_type: str) -> Node | None:
    """The ONNX `op_type` node that is the only reader of `node`'s (non-graph-output) first output."""
    product = node.outputs[0]
    if product.is_graph_output() or len(product.uses) != 1:
        return None
    reader = product.uses[0].node
    return reader if reader.op_type == op_type and reader.domain in ("", "ai.onnx") else None


def _merge(graph: Graph, node: Node, reader: Node, inputs: list, attributes: dict, suffix: str,
           through: list[Node] | None = None) -> None:
    """Replace `node` and its sole `reader` (reached `through` a Reshape and Transpose, if given) with one
    MatMulBias node producing the reader's output (inputs x, W, bias or None[, residual[, shape]])."""
    merged = Node(MATMUL_BIAS, inputs, attributes, domain=NATIVE_DOMAIN, outputs=[None],
                  name=f"{node.name or 'product'}_{suffix}")
    graph.insert_node(merged, before=reader)
    merged.outputs[0].type = reader.outputs[0].type
    graph.replace_all_uses_with(reader.outputs[0], merged.outputs[0])
    graph.remove_nodes([reader, *(through or []), node])


def _plain_product(node: Node) -> list | None:
    """[x, W, bias or None] of x @ W (+ bias row) with W a 2-D float32 constant, where `node` is one."""
    weight_shape = _constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight_shape is None or len(weight_shape) != 2:
        return None
    if node.domain == NATIVE_DOMAIN and node.op_type == MATMUL_BIAS and "activation" not in node.attributes:
        return list(node.inputs)
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "MatMul":
        return [node.inputs[0], node.inputs[1], None]
    if node.op_type != "Gemm":
        return None
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
        return None
    columns = weight_shape[0] if attrs.get("transB", 0) else weight_shape[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and (attrs.get("beta", 1.0) != 1.0 or _constant_shape(bias) not in ((columns,), (1, columns))):
        return None
    return [node.inputs[0], node.inputs[1], bias]


def _product_attributes(node: Node) -> dict:
    """The attributes a MatMulBias made from `node` (a _plain_product) starts with: a MatMulBias's
    own, or `transposed_weight` for a Gemm that reads its weight [N, K] (transB)."""
    if node.domain == NATIVE_DOMAIN:
        return dict(node.attributes)
    trans_b = node.attributes.get("transB")
    if node.op_type == "Gemm" and trans_b is not None and trans_b.value:
        return {TRANSPOSED_WEIGHT: Attr(TRANSPOSED_WEIGHT, AttrType.INT, 1)}
    return {}


def fuse_transposed_weights(graph: Graph) -> int:
    """MatMul(x, Transpose(W)), W a 2-D float32 constant, becomes MatMulTransposed(x, W), so the
    panel kernel packs W's transpose once instead of XLA transposing W (GPT-2's LM head reads the
    [vocab, hidden] embedding so); returns how many."""
    fused = 0
    for node in list(graph.nodes):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.inputs[1] is None:
            continue
        transpose = node.inputs[1].producer
        if transpose is None or transpose.op_type != "Transpose" or transpose.domain not in ("", "ai.onnx"):
            continue
        perm = transpose.attributes.get("perm")
        weight = transpose.inputs[0]
        shape = _constant_shape(weight)
        if shape is None or len(shape) != 2 or (perm is not None and list(perm.value) != [1, 0]):
            continue
        merged = Node(MATMUL_TRANSPOSED, [node.inputs[0], weight], {}, domain=NATIVE_DOMAIN, outputs=[None],
                      name=f"{node.name or 'matmul'}_transposed")
        graph.insert_node(merged, before=node)
        merged.outputs[0].type = node.outputs[0].type
        graph.replace_all_uses_with(node.outputs[0], merged.outputs[0])
        graph.remove_node(node)
        if not (transpose.outputs[0].uses or transpose.outputs[0].is_graph_output()):
            graph.remove_node(transpose)
        fused += 1
    return fused


def _constant_shape(value: Value | None) -> tuple[int, ...] | None:
    """The shape of a float32 constant (initializer), else None."""
    if value is None or value.const_value is None or value.dtype is None or value.dtype.name != "FLOAT":
        return None
    return tuple(value.const_value.shape)


def _remove_dead_views(graph: Graph, values) -> None:
    """Remove the view ops above `values` that nothing reads any more."""
    pending = [v.producer for v in values if v is not None and v.producer is not None]
    while pending:
        node = pending.pop()
        if node.graph is not graph or node.op_type not in VIEW_OPS:
            continue
        if any(o.uses or o.is_graph_output() for o in node.outputs):
            continue
        pending.extend(v.producer for v in node.inputs if v is not None and v.producer is not None)
        graph.remove_node(node)


def _trace(value: Value) -> tuple[Value, list]:
    """(the tensor `value` is a view of, the steps from it to `value`), walking up view-only ops."""
    steps: list[list] = []
    while value.producer is not None and value.producer.op_type in VIEW_OPS and value.producer.domain in ("", "ai.onnx"):
        step = _step(value.producer, value)
        if step is None:
            break
        if step:
            steps.append(step)
        value = value.producer.inputs[0]
    return value, steps[::-1]


def _step(node: Node, output: Value) -> list | None:
    """The view step `node` applies to its first input to make `output` ([] for Identity), or None
    when it is not a view with constant parameters."""
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    constant = [_constant(v) for v in node.inputs[1:]]
    if node.op_type == "Identity":
        return []
    if node.op_type == "Transpose":
        return ["transpose", list(attrs["perm"])] if "perm" in attrs else None
    if node.op_type == "Reshape":
        if not constant or constant[0] is None:
            return None
        target = [int(d) for d in constant[0].reshape(-1)]
        return None if attrs.get("allowzero") and 0 in target else ["reshape", target]
    if node.op_type in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes") if "axes" in attrs else (constant[0] if constant else None)
        if axes is None and node.op_type == "Unsqueeze":
            return None
        if constant and constant[0] is None:
            return None
        return [node.op_type.lower(), None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]]
    if node.op_type == "Gather":
        index = constant[0] if constant else None
        if index is None or index.size != 1:
            return None
        axis = int(attrs.get("axis", 0))
        return ["gather", axis, int(index.reshape(-1)[0])] if index.ndim == 0 else ["slice", axis, int(index.reshape(-1)[0]), 1]
    if node.op_type == "Split":
        axis = int(attrs.get("axis", 0))
        sizes = constant[0] if constant else (np.asarray(attrs["split"]) if "split" in attrs else None)
        if constant and sizes is None:
            return None
        if sizes is None:
            return ["split", axis, output.index, len(node.outputs)]  # equal parts, sized at trace time
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        return ["slice", axis, sum(sizes[: output.index]), sizes[output.index]]
    return None


def _constant(value: Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return np.asarray(value.const_value.numpy())


def _output_transpose(node: Node) -> Node | None:
    """The Transpose that is the only reader of the node's output (keeping the features last), when
    no other output is read."""
    y = node.outputs[0]
    if y.is_graph_output() or len(y.uses) != 1 or any(o.uses or o.is_graph_output() for o in node.outputs[1:]):
        return None
    reader = y.uses[0].node
    perm = reader.attributes.get("perm")
    if reader.op_type != "Transpose" or reader.domain not in ("", "ai.onnx") or perm is None:
        return None
    return reader if len(perm.value) == 4 and perm.value[-1] == 3 else None

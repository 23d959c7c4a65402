"""Graph rewrites made only for the native CPU kernels, on the lowering's private copy of the graph.

Split(qkv, last axis) -> Attention(q, k, v) becomes one PackedAttention(qkv, ...) node in the
ai.graphkiln.native domain: the attention kernel reads the three heads' columns straight out of the
fused projection's rows, where XLA would first copy three slices out of it (BERT and GPT-2 run
the fused QKV product of merge_sibling_matmuls into such a Split on every layer)."""

from __future__ import annotations

from compiler.ir import Attr, AttrType, Graph, Node

NATIVE_DOMAIN = "ai.graphkiln.native"
PACKED_ATTENTION = "PackedAttention"


def fuse_packed_attention(graph: Graph) -> int:
    """Rewrite every Split -> 3-D Attention pair the kernel can read packed; returns how many."""
    fused = 0
    for node in list(graph.nodes):
        split = _packed_split(node)
        if split is None:
            continue
        sizes = _split_sizes(split)
        if sizes is None:
            continue
        attributes = {name: attr for name, attr in node.attributes.items()}
        attributes["split_sizes"] = Attr("split_sizes", AttrType.INTS, list(sizes))
        packed = Node(PACKED_ATTENTION, [split.inputs[0], *node.inputs[3:]], attributes, domain=NATIVE_DOMAIN,
                      outputs=[None] * len(node.outputs), name=f"{node.name or 'attention'}_packed")
        graph.insert_node(packed, before=node)
        for old, new in zip(node.outputs, packed.outputs):
            if old is not None:
                new.type = old.type
                graph.replace_all_uses_with(old, new)
        graph.remove_node(node)
        if not any(o.uses or o.is_graph_output() for o in split.outputs if o is not None):
            graph.remove_node(split)
        fused += 1
    return fused


def _packed_split(node: Node) -> Node | None:
    """The Split whose outputs 0, 1, 2 are this 3-D Attention's q, k, v, in order."""
    if node.op_type != "Attention" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 3:
        return None
    q, k, v = node.inputs[:3]
    if q is None or k is None or v is None or q.producer is None:
        return None
    split = q.producer
    if split.op_type != "Split" or split.domain not in ("", "ai.onnx") or len(split.outputs) != 3:
        return None
    if [q.index, k.producer is split and k.index, v.producer is split and v.index] != [0, 1, 2]:
        return None
    if node.attributes.get("q_num_heads") is None or node.attributes.get("kv_num_heads") is None:
        return None
    source = split.inputs[0]
    rank = len(source.shape) if source is not None and source.shape is not None else None
    axis = split.attributes.get("axis")
    axis = 0 if axis is None else axis.value
    return split if rank == 3 and axis in (-1, 2) else None


def _split_sizes(split: Node) -> tuple[int, int, int] | None:
    """The three widths of the split, where they are known now."""
    if len(split.inputs) > 1 and split.inputs[1] is not None:
        sizes = split.inputs[1].const_value
        return tuple(int(s) for s in sizes.numpy().reshape(-1)) if sizes is not None else None
    split_attr = split.attributes.get("split")
    if split_attr is not None:
        return tuple(int(s) for s in split_attr.value)
    width = split.inputs[0].shape[-1] if split.inputs[0].shape is not None else None
    if isinstance(width, int) and width % 3 == 0:
        return (width // 3,) * 3
    return None

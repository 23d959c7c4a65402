"""Layered (Sugiyama-style) layout of a DAG, fast enough for 10,000+ nodes: layers by longest
path (then balanced), dummy nodes on long edges, barycenter sweeps for crossings, and x positions
by ordered least-squares placement (pool-adjacent-violators) so nodes sit near their neighbours."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NODE_GAP = 24.0          # horizontal gap between neighbouring boxes
DUMMY_WIDTH = 8.0        # width reserved for an edge passing through a layer
MAX_DUMMY_SPAN = 24      # edges spanning more layers are drawn straight, without dummies
DUMMY_BUDGET_FACTOR = 4  # at most this many dummies per real node
ORDER_SWEEPS = 4         # down+up barycenter sweep pairs
PLACE_SWEEPS = 4         # down+up coordinate sweep pairs


@dataclass
class Layout:
    """x (box centre) and layer per node; `routes[(source, target)]` lists the x of the bends of
    an edge that spans several layers (one per intermediate layer)."""

    x: np.ndarray
    layer: np.ndarray
    routes: dict[tuple[int, int], list[float]] = field(default_factory=dict)

    @property
    def layer_count(self) -> int:
        return int(self.layer.max()) + 1 if self.layer.size else 0


def layered_layout(widths: np.ndarray, edges: np.ndarray, previous_x: np.ndarray | None = None) -> Layout:
    """Lay out n nodes of the given widths; `edges` is an (m, 2) int array of (source, target)
    indices, acyclic when nodes are numbered in topological order. `previous_x` (NaN where
    unknown) seeds the order inside layers so a slightly changed graph keeps its picture."""
    widths = np.asarray(widths, dtype=np.float64)
    count = int(widths.size)
    edges = _unique_edges(np.asarray(edges, dtype=np.int64).reshape(-1, 2), count)
    if count == 0:
        return Layout(np.zeros(0), np.zeros(0, dtype=np.int64))
    layer = _assign_layers(count, edges)
    chain = _insert_dummies(layer, edges, widths)
    order = _initial_order(chain, previous_x)
    for _ in range(ORDER_SWEEPS):
        order = _sweep_order(chain, order, downward=True)
        order = _sweep_order(chain, order, downward=False)
    x = _place(chain, order)
    routes = {pair: [float(x[d]) for d in dummies] for pair, dummies in chain.dummy_paths.items()}
    return Layout(np.round(x[:count], 1), layer, routes)


def _unique_edges(edges: np.ndarray, count: int) -> np.ndarray:
    if edges.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    keep = (edges[:, 0] < edges[:, 1]) & (edges[:, 0] >= 0) & (edges[:, 1] < count)
    edges = edges[keep]  # nodes come in topological order: an edge pointing back is dropped
    return np.unique(edges, axis=0) if edges.size else edges


def _adjacency(count: int, sources: np.ndarray, targets: np.ndarray) -> list[list[int]]:
    lists: list[list[int]] = [[] for _ in range(count)]
    for source, target in zip(sources.tolist(), targets.tolist()):
        lists[source].append(target)
    return lists


def _assign_layers(count: int, edges: np.ndarray) -> np.ndarray:
    """Longest path from the sources, then each node slides toward the side with more edges
    (shortens edges: constants sit next to their user, not at the top)."""
    predecessors = _adjacency(count, edges[:, 1], edges[:, 0])
    successors = _adjacency(count, edges[:, 0], edges[:, 1])
    layer = [0] * count
    for node in range(count):
        preds = predecessors[node]
        if preds:
            layer[node] = max(layer[p] for p in preds) + 1
    for node in range(count - 1, -1, -1):
        succs = successors[node]
        if succs and len(succs) >= len(predecessors[node]):
            layer[node] = min(layer[s] for s in succs) - 1
    for node in range(count):  # keep every edge pointing down after the moves
        preds = predecessors[node]
        if preds:
            layer[node] = max(layer[node], max(layer[p] for p in preds) + 1)
    array = np.asarray(layer, dtype=np.int64)
    return array - array.min()


@dataclass
class _Chain:
    """The layered graph with dummy nodes: every edge joins consecutive layers."""

    layer: np.ndarray
    width: np.ndarray
    sources: np.ndarray
    targets: np.ndarray
    dummy_paths: dict[tuple[int, int], list[int]]
    predecessors: list[list[int]] = field(default_factory=list)
    successors: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.predecessors = _adjacency(self.layer.size, self.targets, self.sources)
        self.successors = _adjacency(self.layer.size, self.sources, self.targets)


def _insert_dummies(layer: np.ndarray, edges: np.ndarray, widths: np.ndarray) -> _Chain:
    count = layer.size
    spans = layer[edges[:, 1]] - layer[edges[:, 0]] if edges.size else np.zeros(0, dtype=np.int64)
    budget = DUMMY_BUDGET_FACTOR * count
    new_layers: list[int] = []
    sources: list[int] = []
    targets: list[int] = []
    paths: dict[tuple[int, int], list[int]] = {}
    for (source, target), span in zip(edges.tolist(), spans.tolist()):
        if span <= 1 or span > MAX_DUMMY_SPAN or len(new_layers) + span - 1 > budget:
            if span == 1:
                sources.append(source)
                targets.append(target)
            continue
        previous = source
        path = []
        for step in range(1, span):
            dummy = count + len(new_layers)
            new_layers.append(int(layer[source]) + step)
            sources.append(previous)
            targets.append(dummy)
            path.append(dummy)
            previous = dummy
        sources.append(previous)
        targets.append(target)
        paths[(source, target)] = path
    all_layers = np.concatenate([layer, np.asarray(new_layers, dtype=np.int64)])
    all_widths = np.concatenate([widths, np.full(len(new_layers), DUMMY_WIDTH)])
    return _Chain(all_layers, all_widths, np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64), paths)


def _initial_order(chain: _Chain, previous_x: np.ndarray | None) -> list[list[int]]:
    """Per layer, node ids in left-to-right order: by the previous picture where known, else by
    a depth-first visit from the sources (keeps chains together)."""
    total = chain.layer.size
    rank = _dfs_rank(total, chain.sources, chain.targets)
    key = rank.astype(np.float64)
    if previous_x is not None:
        known = np.full(total, np.nan)
        known[: previous_x.size] = previous_x
        order_of_known = np.argsort(np.argsort(np.where(np.isnan(known), np.inf, known)))
        key = np.where(np.isnan(known), key, order_of_known.astype(np.float64))
    ordered = np.lexsort((key, chain.layer))
    boundaries = np.searchsorted(chain.layer[ordered], np.arange(chain.layer.max() + 2)).tolist()
    ordered_list = ordered.tolist()
    return [ordered_list[boundaries[i]: boundaries[i + 1]] for i in range(len(boundaries) - 1)]


def _dfs_rank(total: int, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    successors = _adjacency(total, sources, targets)
    has_parent = np.zeros(total, dtype=bool)
    has_parent[targets] = True
    rank = np.full(total, -1, dtype=np.int64)
    counter = 0
    for root in np.flatnonzero(~has_parent).tolist() + list(range(total)):
        stack = [root]
        while stack:
            node = stack.pop()
            if rank[node] >= 0:
                continue
            rank[node] = counter
            counter += 1
            stack.extend(reversed(successors[node]))
    return rank


def _sweep_order(chain: _Chain, order: list[list[int]], downward: bool) -> list[list[int]]:
    """One barycenter sweep: each layer sorted by the mean position of its neighbours in the
    layer before it (above when going down, below when going up). Plain lists: most layers of
    a network are a handful of nodes, where numpy's per-call cost dominates."""
    position = [0] * chain.layer.size
    for nodes in order:
        for slot, node in enumerate(nodes):
            position[node] = slot
    neighbours = chain.predecessors if downward else chain.successors
    indices = range(1, len(order)) if downward else range(len(order) - 2, -1, -1)
    for index in indices:
        nodes = order[index]
        if len(nodes) < 2:
            continue
        keys = []
        for slot, node in enumerate(nodes):
            near = neighbours[node]
            keys.append((sum(position[n] for n in near) / len(near) if near else slot, slot))
        nodes = [nodes[slot] for _, slot in sorted(keys)]
        order[index] = nodes
        for slot, node in enumerate(nodes):
            position[node] = slot
    return order


def _place(chain: _Chain, order: list[list[int]]) -> np.ndarray:
    """x per node: start packed and centred, then sweep layers pulling each node to the mean x
    of its neighbours while keeping the order and the gaps (isotonic regression per layer)."""
    width = chain.width.tolist()
    x = [0.0] * len(width)
    for nodes in order:
        cursor = 0.0
        for node in nodes:
            x[node] = cursor + width[node] / 2
            cursor += width[node] + NODE_GAP
        for node in nodes:
            x[node] -= cursor / 2
    both = [p + s for p, s in zip(chain.predecessors, chain.successors)]
    for sweep in range(PLACE_SWEEPS):
        last = sweep == PLACE_SWEEPS - 1
        for downward in (True, False):
            neighbours = both if last else (chain.predecessors if downward else chain.successors)
            indices = range(len(order)) if downward else range(len(order) - 1, -1, -1)
            for index in indices:
                _place_layer(order[index], x, width, neighbours)
    return np.asarray(x)


def _place_layer(nodes: list[int], x: list[float], width: list[float], neighbours: list[list[int]]) -> None:
    desired = []
    for node in nodes:
        near = neighbours[node]
        desired.append(sum(x[n] for n in near) / len(near) if near else x[node])
    if len(nodes) == 1:
        x[nodes[0]] = desired[0]
        return
    gaps = [0.0]
    for left, right in zip(nodes, nodes[1:]):
        gaps.append(gaps[-1] + (width[left] + width[right]) / 2 + NODE_GAP)
    solved = _isotonic([d - g for d, g in zip(desired, gaps)])
    for node, value, gap in zip(nodes, solved, gaps):
        x[node] = value + gap


def _isotonic(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    means: list[float] = []
    sizes: list[int] = []
    for value in values:
        means.append(value)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            size = sizes[-2] + sizes[-1]
            mean = (means[-2] * sizes[-2] + means[-1] * sizes[-1]) / size
            means[-2:] = [mean]
            sizes[-2:] = [size]
    result: list[float] = []
    for mean, size in zip(means, sizes):
        result.extend([mean] * size)
    return result

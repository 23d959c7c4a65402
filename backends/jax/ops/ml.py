"""Numeric ai.onnx.ml ops (ArrayFeatureExtractor, Binarizer) and TfIdfVectorizer over integer
tokens: n-gram matches (with skips) are counted by comparing every window against the pool."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import lowering

ML_DOMAIN = "ai.onnx.ml"


@lowering("ArrayFeatureExtractor", domain=ML_DOMAIN)
def array_feature_extractor(ctx, x, indices):
    return jnp.take(jnp.asarray(x), jnp.asarray(indices).reshape(-1).astype(jnp.int64), axis=-1)


@lowering("Binarizer", domain=ML_DOMAIN)
def binarizer(ctx, x, threshold: float = 0.0):
    x = jnp.asarray(x)
    return jnp.where(x > threshold, 1, 0).astype(x.dtype)


def _pool_by_length(pool: np.ndarray, starts: Sequence[int]) -> dict[int, tuple[np.ndarray, range]]:
    """n -> (pool n-grams [count, n], their positions among all n-grams)."""
    grams: dict[int, tuple[np.ndarray, range]] = {}
    bounds = list(starts) + [len(pool)]
    first_id = 0
    for level in range(len(starts)):
        length = level + 1
        block = pool[bounds[level]:bounds[level + 1]]
        count = len(block) // length
        grams[length] = (block.reshape(count, length), range(first_id, first_id + count))
        first_id += count
    return grams


def _count_matches(tokens: Any, grams: np.ndarray, length: int, distances: Sequence[int]) -> Any:
    """[rows, count]: how often each n-gram occurs in each row for the given skip distances."""
    columns = tokens.shape[1]
    total = jnp.zeros((tokens.shape[0], len(grams)), jnp.float32)
    for distance in distances:
        span = (length - 1) * distance
        if span >= columns:
            continue
        starts = np.arange(columns - span)
        windows = tokens[:, starts[:, None] + distance * np.arange(length)[None, :]]  # [rows, windows, n]
        hits = jnp.all(windows[:, :, None, :] == jnp.asarray(grams)[None, None, :, :], axis=-1)
        total = total + hits.sum(axis=1).astype(jnp.float32)
    return total


@lowering("TfIdfVectorizer", since=9)
def tfidf_vectorizer(ctx, x, max_gram_length: int, max_skip_count: int, min_gram_length: int, mode: str,
                     ngram_counts: Sequence[int], ngram_indexes: Sequence[int], pool_int64s=None, pool_strings=None,
                     weights=None):
    if pool_int64s is None:
        raise ctx.fail("string pools need string tensors, which XLA cannot hold")
    tokens = jnp.asarray(x).astype(jnp.int64)
    rows = tokens.reshape(1, -1) if tokens.ndim <= 1 else tokens
    grams = _pool_by_length(np.asarray(pool_int64s, np.int64), ngram_counts)
    size = int(max(ngram_indexes)) + 1
    counts = jnp.zeros((rows.shape[0], size), jnp.float32)
    for length in range(min_gram_length, max_gram_length + 1):
        if length not in grams or not len(grams[length][0]):
            continue
        block, ids = grams[length]
        distances = [1] if length == 1 else range(1, max_skip_count + 2)
        found = _count_matches(rows, block, length, distances)
        counts = counts.at[:, np.asarray(ngram_indexes)[list(ids)]].add(found)
    scale = jnp.asarray(weights, jnp.float32) if weights is not None else None
    if mode == "IDF":
        counts = jnp.where(counts > 0, scale if scale is not None else 1.0, 0.0)
    elif mode == "TFIDF" and scale is not None:
        counts = counts * scale
    return counts if tokens.ndim == 2 else counts.reshape(size)


def _tree_depth(roots: Sequence[int], true_ids, true_leaf, false_ids, false_leaf) -> int:
    """The most comparisons any path of the ensemble makes (trees are small: counted while tracing)."""
    deepest = 0
    stack = [(int(root), 1) for root in roots]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child, is_leaf in ((true_ids[node], true_leaf[node]), (false_ids[node], false_leaf[node])):
            if not is_leaf:
                stack.append((int(child), depth + 1))
    return deepest


def _member_sets(modes: np.ndarray, membership: np.ndarray | None) -> np.ndarray:
    """[nodes, width] of each MEMBER node's values (NaN padded); the sets are NaN-separated in order."""
    groups: list[list[float]] = [[]]
    for value in (membership if membership is not None else np.zeros(0)).reshape(-1):
        if np.isnan(value):
            groups.append([])
        else:
            groups[-1].append(float(value))
    width = max(1, max(len(g) for g in groups))
    sets = np.full((len(modes), width), np.nan)
    member_nodes = np.nonzero(modes == 6)[0]
    for node, group in zip(member_nodes, groups):
        sets[node, :len(group)] = group
    return sets


@lowering("TreeEnsemble", domain=ML_DOMAIN, since=5)
def tree_ensemble(ctx, x, aggregate_function: int = 1, leaf_targetids=(), leaf_weights=None, membership_values=None,
                  n_targets: int = 1, nodes_falseleafs=(), nodes_falsenodeids=(), nodes_featureids=(),
                  nodes_missing_value_tracks_true=None, nodes_modes=None, nodes_splits=None, nodes_trueleafs=(),
                  nodes_truenodeids=(), post_transform: int = 0, tree_roots=()):
    """Every tree walked for all rows at once (one step per level), leaves summed per target."""
    if post_transform:
        raise ctx.fail(f"post_transform {post_transform} is not supported (only NONE)")
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    x = jnp.asarray(x)
    features = jnp.asarray(np.asarray(nodes_featureids, np.int64))
    splits = jnp.asarray(np.asarray(nodes_splits).reshape(-1), x.dtype)
    tracks = np.zeros(len(modes), bool) if nodes_missing_value_tracks_true is None else np.asarray(nodes_missing_value_tracks_true, bool)
    sets = jnp.asarray(_member_sets(modes, membership_values), x.dtype)
    true_ids, false_ids = np.asarray(nodes_truenodeids, np.int64), np.asarray(nodes_falsenodeids, np.int64)
    true_leaf, false_leaf = np.asarray(nodes_trueleafs, bool), np.asarray(nodes_falseleafs, bool)
    node = jnp.broadcast_to(jnp.asarray(np.asarray(tree_roots, np.int64)), (x.shape[0], len(tree_roots)))
    done = jnp.zeros(node.shape, bool)
    for _ in range(_tree_depth(tree_roots, true_ids, true_leaf, false_ids, false_leaf)):
        value = jnp.take_along_axis(x, features[node], axis=1)
        split = splits[node]
        outcomes = [value <= split, value < split, value >= split, value > split, value == split, value != split,
                    jnp.any(value[..., None] == sets[node], axis=-1)]
        mode = jnp.asarray(modes)[node]
        decision = outcomes[0]
        for code, outcome in enumerate(outcomes[1:], start=1):
            decision = jnp.where(mode == code, outcome, decision)
        decision = jnp.where(jnp.isnan(value), jnp.asarray(tracks)[node], decision)
        next_node = jnp.where(decision, jnp.asarray(true_ids)[node], jnp.asarray(false_ids)[node])
        next_leaf = jnp.where(decision, jnp.asarray(true_leaf)[node], jnp.asarray(false_leaf)[node])
        node = jnp.where(done, node, next_node)
        done = done | next_leaf
    weights = jnp.asarray(np.asarray(leaf_weights).reshape(-1))
    targets = jnp.asarray(np.asarray(leaf_targetids, np.int64))
    hot = jax.nn.one_hot(targets[node], n_targets, dtype=bool)  # [rows, trees, targets]
    contribution = weights[node][..., None]
    if aggregate_function in (2, 3):
        fill = jnp.inf if aggregate_function == 2 else -jnp.inf
        reduce = jnp.min if aggregate_function == 2 else jnp.max
        result = reduce(jnp.where(hot, contribution, fill), axis=1)
        result = jnp.where(jnp.isinf(result), 0, result)
    else:
        result = jnp.sum(jnp.where(hot, contribution, 0), axis=1)
        if aggregate_function == 0:
            result = result / len(tree_roots)
    return result.astype(ctx.output_dtype(0) or weights.dtype)

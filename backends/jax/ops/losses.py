"""Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (weights, ignore_index,
reduction none|sum|mean, any number of trailing spatial dims)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..registry import LoweringContext, lowering


def negative_log_likelihood(log_prob: Any, target: Any, weight: Any = None, ignore_index: int | None = None,
                            reduction: str = "mean") -> Any:
    """-log_prob[n, target[n, ...], ...] * weight[target], reduced; ignored targets count zero."""
    log_prob = jnp.asarray(log_prob)
    target = jnp.asarray(target)
    classes = log_prob.shape[1]
    valid = jnp.ones(target.shape, jnp.bool_) if ignore_index is None else target != ignore_index
    safe_target = jnp.where(valid, target, 0).astype(jnp.int32)
    safe_target = jnp.clip(safe_target, 0, classes - 1)
    picked = jnp.take_along_axis(log_prob, safe_target[:, None], axis=1)[:, 0]
    if weight is not None:
        sample_weight = jnp.take(jnp.asarray(weight, log_prob.dtype), safe_target)
    else:
        sample_weight = jnp.ones(target.shape, log_prob.dtype)
    sample_weight = jnp.where(valid, sample_weight, jnp.zeros((), log_prob.dtype))
    loss = -picked * sample_weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    return jnp.sum(loss) / jnp.sum(sample_weight)


@lowering("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(ctx: LoweringContext, log_prob: Any, target: Any, weight: Any = None,
                                 ignore_index: int | None = None, reduction: str = "mean") -> Any:
    """NegativeLogLikelihoodLoss-12/13/22 on log-probabilities [N, C, ...]."""
    return negative_log_likelihood(log_prob, target, weight, ignore_index, reduction)


@lowering("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(ctx: LoweringContext, scores: Any, labels: Any, weights: Any = None,
                               ignore_index: int | None = None, reduction: str = "mean") -> Any:
    """NLL of log_softmax(scores) over axis 1; the optional second output is that log-probability."""
    log_prob = jax.nn.log_softmax(jnp.asarray(scores), axis=1)
    loss = negative_log_likelihood(log_prob, labels, weights, ignore_index, reduction)
    return loss, log_prob

"""Random ops with jax.random: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial.
The key comes from the `seed` attribute (0 without one): values follow the requested distribution,
shape and dtype, but never equal another runtime's stream."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import lowering
from ._helpers import numpy_dtype


def _key(seed: float | None) -> Any:
    return jax.random.PRNGKey(int(seed) if seed is not None else 0)


def _dtype(dtype: int | None, like: Any = None, default=np.float32) -> np.dtype:
    if dtype:
        return numpy_dtype(dtype)
    return np.dtype(like.dtype) if like is not None else np.dtype(default)


@lowering("RandomUniform")
def random_uniform(ctx, dtype: int = 1, high: float = 1.0, low: float = 0.0, seed=None, shape=()):
    return jax.random.uniform(_key(seed), tuple(shape), minval=low, maxval=high).astype(_dtype(dtype))


@lowering("RandomUniformLike")
def random_uniform_like(ctx, x, dtype: int = 0, high: float = 1.0, low: float = 0.0, seed=None):
    return jax.random.uniform(_key(seed), jnp.shape(x), minval=low, maxval=high).astype(_dtype(dtype, x))


@lowering("RandomNormal")
def random_normal(ctx, dtype: int = 1, mean: float = 0.0, scale: float = 1.0, seed=None, shape=()):
    return (mean + scale * jax.random.normal(_key(seed), tuple(shape))).astype(_dtype(dtype))


@lowering("RandomNormalLike")
def random_normal_like(ctx, x, dtype: int = 0, mean: float = 0.0, scale: float = 1.0, seed=None):
    return (mean + scale * jax.random.normal(_key(seed), jnp.shape(x))).astype(_dtype(dtype, x))


@lowering("Bernoulli", since=15)
def bernoulli(ctx, x, dtype: int = 0, seed=None):
    """1 with probability x (per element), else 0, in `dtype` (the input's type by default)."""
    draws = jax.random.uniform(_key(seed), jnp.shape(x), dtype=jnp.float64 if jnp.asarray(x).dtype == jnp.float64 else jnp.float32)
    return (draws < jnp.asarray(x)).astype(_dtype(dtype, x))


@lowering("Multinomial", since=7)
def multinomial(ctx, x, dtype: int = 6, sample_size: int = 1, seed=None):
    """sample_size class draws per row of unnormalised log-probabilities x [batch, classes]."""
    samples = jax.random.categorical(_key(seed), jnp.asarray(x)[:, None, :], axis=-1,
                                     shape=(jnp.shape(x)[0], sample_size))
    return samples.astype(_dtype(dtype))

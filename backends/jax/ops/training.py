"""Optimizer ops of ai.onnx.preview.training: Adagrad, Adam and Momentum (standard and Nesterov),
each updating any number of tensors at once (inputs: R, T, X..., G..., then the state tensors)."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from ..registry import lowering

TRAINING_DOMAIN = "ai.onnx.preview.training"


def _groups(inputs: tuple, per_tensor: int) -> tuple[Any, Any, list[list[Any]]]:
    """(rate, step, [[x, g, state...] per updated tensor])."""
    rate, step, rest = inputs[0], inputs[1], inputs[2:]
    count = len(rest) // per_tensor
    return rate, step, [[rest[k * count + i] for k in range(per_tensor)] for i in range(count)]


def _apply(inputs: tuple, per_tensor: int, update: Callable[..., tuple]) -> tuple:
    rate, step, groups = _groups(inputs, per_tensor)
    results = [update(jnp.asarray(rate), jnp.asarray(step), *map(jnp.asarray, group)) for group in groups]
    outputs_per_tensor = per_tensor - 1
    return tuple(result[k].astype(jnp.asarray(groups[i][0 if k == 0 else k + 1]).dtype)
                 for k in range(outputs_per_tensor) for i, result in enumerate(results))


@lowering("Adagrad", domain=TRAINING_DOMAIN)
def adagrad(ctx, *inputs, decay_factor: float = 0.0, epsilon: float = 0.0, norm_coefficient: float = 0.0):
    def update(rate, step, x, gradient, accumulated):
        adjusted_rate = rate / (1 + step * decay_factor)
        regularized = norm_coefficient * x + gradient
        new_accumulated = accumulated + regularized * regularized
        return x - adjusted_rate * regularized / (jnp.sqrt(new_accumulated) + epsilon), new_accumulated

    return _apply(inputs, 3, update)


@lowering("Adam", domain=TRAINING_DOMAIN)
def adam(ctx, *inputs, alpha: float = 0.9, beta: float = 0.999, epsilon: float = 0.0, norm_coefficient: float = 0.0,
         norm_coefficient_post: float = 0.0):
    def update(rate, step, x, gradient, momentum, second):
        regularized = norm_coefficient * x + gradient
        new_momentum = alpha * momentum + (1 - alpha) * regularized
        new_second = beta * second + (1 - beta) * regularized * regularized
        corrected = jnp.where(step > 0, rate * jnp.sqrt(1 - beta ** step) / (1 - alpha ** step), rate)
        new_x = x - corrected * (new_momentum / (jnp.sqrt(new_second) + epsilon))
        return (1 - norm_coefficient_post) * new_x, new_momentum, new_second

    return _apply(inputs, 4, update)


@lowering("Momentum", domain=TRAINING_DOMAIN)
def momentum(ctx, *inputs, alpha: float = 0.0, beta: float = 0.0, mode: str = "standard",
             norm_coefficient: float = 0.0):
    def update(rate, step, x, gradient, velocity):
        regularized = norm_coefficient * x + gradient
        new_velocity = alpha * velocity + jnp.where(step > 0, beta, 1.0) * regularized
        if mode == "nesterov":
            return x - rate * (regularized + alpha * new_velocity), new_velocity
        return x - rate * new_velocity, new_velocity

    return _apply(inputs, 3, update)

"""Bounds a graph implies on its symbolic dims, collected while jax.export traces it: slicing a
constant buffer of N rows up to a symbolic `seq` (BERT's position table) only works for seq <= N,
and jax.export needs that said (a constraint) to know the slice has seq rows, not min(N, seq)."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

_COLLECTED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("kiln_symbolic_bounds", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect the bounds the rules traced inside the block report (as jax constraint strings)."""
    bounds: list[str] = []
    token = _COLLECTED.set(bounds)
    try:
        yield bounds
    finally:
        _COLLECTED.reset(token)


def at_most(expression: Any, limit: int) -> None:
    """Record `expression <= limit` for a symbolic expression (ignored outside collecting())."""
    bounds = _COLLECTED.get()
    constraint = f"{expression} <= {int(limit)}"
    if bounds is not None and constraint not in bounds:
        bounds.append(constraint)

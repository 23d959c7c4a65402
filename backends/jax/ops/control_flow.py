"""If, Loop and Scan: a condition known while tracing picks the branch (or unrolls a loop that
carries sequences); otherwise lax.cond / lax.scan / lax.while_loop, and a clear error naming the
node when the shapes of the values carried between iterations (or branches) do not agree."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from compiler.errors import UnsupportedError
from compiler.ir import Graph, Value

from ..registry import is_static, lowering

UNROLL_LIMIT = 1024  # a loop carrying sequences is unrolled at trace time up to this many iterations


def as_jax(value: Any) -> Any:
    """Static numpy values (and lists of them) as jax arrays, so lax control flow can carry them."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [as_jax(item) for item in value]
    return jnp.asarray(value)


def _like(new: Any, old: Any) -> Any:
    """`new` as a jax array with the dtype of the carried value `old` it replaces."""
    return jnp.asarray(new, dtype=jnp.asarray(old).dtype)


def _concrete(value: Any) -> Any:
    """A value known while tracing as numpy (None when it is only known at run time)."""
    if is_static(value):
        return value
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _truth(value: Any) -> bool:
    return bool(np.asarray(value).reshape(-1)[0])


@lowering("If")
def if_(ctx, condition, *, then_branch: Graph, else_branch: Graph):
    """A static condition runs one branch at trace time; a run-time one becomes lax.cond."""
    then_function = ctx.lower_subgraph(then_branch)
    else_function = ctx.lower_subgraph(else_branch)
    if is_static(condition):
        return tuple(then_function() if _truth(condition) else else_function())
    predicate = jnp.reshape(jnp.asarray(condition), (-1,))[0].astype(bool)
    try:
        outputs = lax.cond(predicate, lambda: as_jax(then_function()), lambda: as_jax(else_function()))
    except TypeError as error:
        raise ctx.fail(f"its condition is only known at run time and the branches give outputs of different "
                       f"shapes or types ({_first_line(error)})") from None
    return tuple(outputs)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def _condition_is_invariant(body: Graph) -> bool:
    """True when the body's condition output is its condition input (or constant true)."""
    value: Value | None = body.outputs[0]
    condition_input = body.inputs[1] if len(body.inputs) > 1 else None
    for _ in range(8):
        if value is None:
            return False
        if value is condition_input:
            return True
        constant = value.constant()
        if constant is not None:
            return bool(np.all(constant))
        producer = value.producer
        if producer is None or producer.op_type != "Identity":
            return False
        value = producer.inputs[0]
    return False


@lowering("Loop")
def loop(ctx, trip_count=None, condition=None, *initial, body: Graph):
    """ONNX Loop: unrolled while tracing when it carries sequences, lax.scan for a static trip
    count with an unchanging condition, lax.while_loop otherwise (without scan outputs)."""
    run = ctx.lower_subgraph(body)
    carried = len(initial)
    scanned = len(body.outputs) - 1 - carried
    trips = None if trip_count is None or not is_static(trip_count) else int(np.asarray(trip_count).reshape(-1)[0])
    if trip_count is not None and trips is None and scanned:
        raise ctx.fail("its trip count is only known at run time, so its scan outputs have a data-dependent length")
    static_condition = condition is None or is_static(condition)
    if any(isinstance(v, list) or v is None for v in initial):
        return _unrolled(ctx, run, trips, condition, initial, scanned)
    if trips is not None and static_condition and _condition_is_invariant(body):
        if condition is not None and not _truth(condition):
            trips = 0
        try:
            return _scanned(ctx, run, trips, initial, scanned)
        except UnsupportedError:
            if trips > UNROLL_LIMIT:
                raise
            # the body needs the iteration number while tracing (a Slice bound, say): unroll it
            return _unrolled(ctx, run, trips, condition, initial, scanned)
    if scanned:
        if trips is not None and static_condition and trips <= UNROLL_LIMIT:
            return _unrolled(ctx, run, trips, condition, initial, scanned)
        raise ctx.fail("its condition changes at run time, so its scan outputs have a data-dependent length")
    return _while(ctx, run, trip_count, condition, initial)


def _scanned(ctx, run: Callable[..., list], trips: int, initial: Sequence[Any], scanned: int):
    carried = len(initial)

    def step(values, iteration):
        outputs = run(iteration, np.bool_(True), *values)
        new_values = [_like(new, old) for new, old in zip(outputs[1:1 + carried], values)]
        return new_values, [jnp.asarray(v) for v in outputs[1 + carried:]]

    try:
        final, stacked = lax.scan(step, [jnp.asarray(v) for v in initial], jnp.arange(trips, dtype=jnp.int64))
    except TypeError as error:
        raise _shape_error(ctx, error) from None
    return tuple(final) + tuple(stacked[:scanned])


def _shape_error(ctx, error: BaseException):
    return ctx.fail(f"the shapes of its loop-carried values change between iterations, which lax loops cannot "
                    f"carry ({_first_line(error)})")


def _while(ctx, run: Callable[..., list], trip_count, condition, initial: Sequence[Any]):
    limit = None if trip_count is None else jnp.reshape(jnp.asarray(trip_count), (-1,))[0].astype(jnp.int64)
    start_condition = jnp.bool_(True) if condition is None else jnp.reshape(jnp.asarray(condition), (-1,))[0].astype(bool)

    def keep_going(state):
        iteration, flag, _ = state
        return flag if limit is None else jnp.logical_and(flag, iteration < limit)

    def step(state):
        iteration, flag, values = state
        outputs = run(iteration, flag, *values)
        new_flag = jnp.reshape(jnp.asarray(outputs[0]), (-1,))[0].astype(bool)
        return iteration + 1, new_flag, [_like(new, old) for new, old in zip(outputs[1:], values)]

    try:
        _, _, final = lax.while_loop(keep_going, step, (jnp.int64(0), start_condition, [jnp.asarray(v) for v in initial]))
    except TypeError as error:
        raise _shape_error(ctx, error) from None
    return tuple(final)


def _unrolled(ctx, run: Callable[..., list], trips: int | None, condition, initial: Sequence[Any], scanned: int):
    """Runs the body once per iteration while tracing; needs a trip count or condition known then."""
    if condition is not None and not is_static(condition):
        raise ctx.fail("it carries sequences and its condition is only known at run time")
    carried = len(initial)
    values = list(initial)
    flag = True if condition is None else _truth(condition)
    collected: list[list[Any]] = [[] for _ in range(scanned)]
    limit = trips if trips is not None else UNROLL_LIMIT + 1
    iteration = 0
    while flag and iteration < limit:
        outputs = run(np.int64(iteration), np.bool_(flag), *values)
        concrete = _concrete(outputs[0])
        if concrete is None:
            raise ctx.fail("it carries sequences and its condition is computed at run time")
        flag = _truth(concrete)
        _check_same_shapes(ctx, values, outputs[1:1 + carried])
        values = list(outputs[1:1 + carried])
        for store, value in zip(collected, outputs[1 + carried:]):
            store.append(value)
        iteration += 1
    if trips is None and iteration > UNROLL_LIMIT:
        raise ctx.fail(f"it carries sequences and runs more than {UNROLL_LIMIT} iterations")
    stacked = []
    for index, store in enumerate(collected):
        if not store:
            raise ctx.fail("it runs no iteration, so the shape of its scan outputs is unknown")
        try:
            stacked.append(jnp.stack([jnp.asarray(v) for v in store]))
        except (TypeError, ValueError) as error:
            raise ctx.fail(f"its scan output {index} changes shape between iterations ({_first_line(error)})") from None
    return tuple(values) + tuple(stacked)


def _check_same_shapes(ctx, old: Sequence[Any], new: Sequence[Any]) -> None:
    """Unrolled loops keep the lax-loop rule: carried tensors keep their shapes."""
    for index, (before, after) in enumerate(zip(old, new)):
        if isinstance(before, list) or before is None or after is None or isinstance(after, list):
            continue
        if tuple(np.shape(before)) != tuple(np.shape(after)):
            raise ctx.fail(f"the shapes of its loop-carried values change between iterations (value {index}: "
                           f"{tuple(np.shape(before))} -> {tuple(np.shape(after))})")


@lowering("Scan", since=9)
def scan(ctx, *inputs, body: Graph, num_scan_inputs: int, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    """ONNX Scan (opset 9+) as one lax.scan; scan axes are moved to the front and back."""
    states = list(inputs[:len(inputs) - num_scan_inputs])
    sequences = list(inputs[len(inputs) - num_scan_inputs:])
    return tuple(_scan_core(ctx, ctx.lower_subgraph(body), states, sequences, len(body.outputs) - len(states),
                            scan_input_axes, scan_input_directions, scan_output_axes, scan_output_directions))


@lowering("Scan", since=8, until=9)
def scan_v8(ctx, sequence_lens, *inputs, body: Graph, num_scan_inputs: int, directions=None):
    """Scan-8: a batch axis 0 and the scan axis 1, mapped over the batch with jax.vmap."""
    if sequence_lens is not None:
        raise ctx.fail("sequence_lens (per-batch lengths) is not supported; leave it empty")
    states = list(inputs[:len(inputs) - num_scan_inputs])
    sequences = list(inputs[len(inputs) - num_scan_inputs:])
    run = ctx.lower_subgraph(body)
    outputs_count = len(body.outputs) - len(states)

    def one(state_values, sequence_values):
        return _scan_core(ctx, run, list(state_values), list(sequence_values), outputs_count, None, directions,
                          None, None)

    return tuple(jax.vmap(one)([jnp.asarray(s) for s in states], [jnp.asarray(s) for s in sequences]))


def _scan_core(ctx, run: Callable[..., list], states: list, sequences: list, outputs_count: int,
               input_axes, input_directions, output_axes, output_directions) -> list:
    count = len(states)
    prepared = []
    for index, value in enumerate(sequences):
        value = jnp.asarray(value)
        axis = (input_axes[index] if input_axes else 0) % value.ndim
        value = jnp.moveaxis(value, axis, 0)
        if input_directions and input_directions[index]:
            value = jnp.flip(value, 0)
        prepared.append(value)

    def step(values, slices):
        outputs = run(*values, *slices)
        return [_like(new, old) for new, old in zip(outputs[:count], values)], [jnp.asarray(v) for v in outputs[count:]]

    try:
        final, stacked = lax.scan(step, [jnp.asarray(v) for v in states], prepared)
    except TypeError as error:
        raise _shape_error(ctx, error) from None
    results = list(final)
    for index, value in enumerate(stacked[:outputs_count]):
        if output_directions and output_directions[index]:
            value = jnp.flip(value, 0)
        axis = output_axes[index] if output_axes else 0
        results.append(jnp.moveaxis(value, 0, axis % value.ndim))
    return results

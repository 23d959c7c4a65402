"""Input data for `kiln run --inputs` and calibration: an .npz, a .npy, a folder of them, a
Python callable ("path/to/file.py:function" or "package.module:function") yielding batches, or
(from the API) a mapping, an array or an iterable of batches."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import OptionError

Batch = dict[str, np.ndarray]


def load_inputs(source: str, input_names: Sequence[str]) -> Batch:
    """One set of model inputs keyed by input name (a lone unnamed array feeds the only input)."""
    batches = iterate_batches(source, input_names)
    try:
        batch = next(iter(batches))
    except StopIteration:
        raise OptionError(f"{source} holds no input arrays") from None
    return batch


def iterate_batches(source: Any, input_names: Sequence[str]) -> Iterator[Batch]:
    """Stream batches from `source` one at a time (files are memory-mapped where possible)."""
    if callable(source):
        yield from _from_items(source(), input_names, "the data callable")
        return
    if isinstance(source, Mapping):
        yield _name_arrays(dict(source), input_names, "the given mapping")
        return
    if isinstance(source, np.ndarray):
        yield _name_arrays({"": source}, input_names, "the given array")
        return
    if not isinstance(source, (str, os.PathLike)):
        if isinstance(source, Iterable):  # a list or generator of batches
            yield from _from_items(source, input_names, "the given batches")
            return
        raise OptionError(f"input data must be a path, a mapping, an iterable of batches or a callable, "
                          f"not {type(source).__name__}")
    source = os.fspath(source)
    if ":" in source and not os.path.exists(source):
        yield from _from_items(_resolve_callable(source)(), input_names, "the data callable")
        return
    if not os.path.exists(source):
        raise OptionError(f"input data not found: {source}")
    if os.path.isdir(source):
        files = sorted(f for f in os.listdir(source) if f.endswith((".npz", ".npy")))
        if not files:
            raise OptionError(f"folder {source} holds no .npz or .npy files")
        if all(f.endswith(".npy") and os.path.splitext(f)[0] in input_names for f in files):
            yield {os.path.splitext(f)[0]: np.load(os.path.join(source, f), mmap_mode="r") for f in files}
            return
        for name in files:
            yield from _from_file(os.path.join(source, name), input_names)
        return
    yield from _from_file(source, input_names)


def _from_file(path: str, input_names: Sequence[str]) -> Iterator[Batch]:
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise OptionError(f"cannot read input data {path}: {error}") from None
    if isinstance(loaded, np.ndarray):
        yield _name_arrays({"": loaded}, input_names, path)
        return
    with loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    yield _name_arrays(arrays, input_names, path)


def _name_arrays(arrays: dict[str, Any], input_names: Sequence[str], where: str) -> Batch:
    if set(input_names) <= set(arrays):
        return {name: np.asarray(arrays[name]) for name in input_names}
    if len(arrays) == 1 and len(input_names) == 1:
        return {input_names[0]: np.asarray(next(iter(arrays.values())))}
    missing = [n for n in input_names if n not in arrays]
    raise OptionError(
        f"{where} lacks arrays for input(s) {', '.join(missing)}",
        f"it holds {', '.join(arrays) or 'nothing'}; name arrays after the model inputs",
    )


def _resolve_callable(spec: str) -> Callable[[], Any]:
    target, _, attribute = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location("kiln_user_data", target)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(target)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        function = getattr(module, attribute)
    except (ImportError, AttributeError, FileNotFoundError, SyntaxError) as error:
        raise OptionError(f"cannot load data callable {spec!r}: {error}") from None
    if not callable(function):
        raise OptionError(f"{spec!r} is not callable")
    return function


def _from_items(produced: Any, input_names: Sequence[str], where: str) -> Iterator[Batch]:
    """Batches from one batch or an iterable of them; a batch is a mapping by input name, an
    array (the only input) or a list/tuple of arrays in input order."""
    items = produced if not isinstance(produced, (Mapping, np.ndarray)) else [produced]
    for item in items:
        if isinstance(item, np.ndarray):
            item = {"": item}
        elif isinstance(item, (list, tuple)):
            item = dict(zip(input_names, item))
        elif not isinstance(item, Mapping):
            raise OptionError(f"{where}: a batch must be a mapping, an array or a list of arrays, "
                              f"not {type(item).__name__}")
        yield _name_arrays(dict(item), input_names, where)


def stream_batches(
    source: Any,
    input_names: Sequence[str],
    *,
    batch_size: int | None = None,
    max_samples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[Batch]:
    """Calibration batches from `source`, each at most `batch_size` samples along axis 0, read
    slice by slice from memory-mapped files so memory stays bounded; reports progress."""
    if source is None:
        raise OptionError("no calibration data given", "pass --calibration DATA (.npz, folder of .npy/.npz, or module:function)")
    seen = 0
    count = 0
    for batch in iterate_batches(source, input_names):
        for piece in _split_batch(batch, batch_size):
            if max_samples is not None and seen >= max_samples:
                return
            if max_samples is not None:
                piece = {k: v[: max_samples - seen] for k, v in piece.items()}
            count += 1
            seen += _batch_length(piece)
            if progress is not None:
                progress(f"calibration batch {count} ({seen} samples)")
            yield {k: np.ascontiguousarray(v) for k, v in piece.items()}
    if count == 0:
        where = source if isinstance(source, (str, os.PathLike)) else f"(a {type(source).__name__})"
        raise OptionError(f"calibration data {where} yielded no batches",
                          "a generator serves one use: pass a list, or a callable that makes a fresh one")


def _batch_length(batch: Batch) -> int:
    first = next(iter(batch.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _split_batch(batch: Batch, batch_size: int | None) -> Iterator[Batch]:
    length = _batch_length(batch)
    if not batch_size or length <= batch_size or any(v.ndim == 0 or v.shape[0] != length for v in batch.values()):
        yield batch
        return
    for start in range(0, length, batch_size):
        yield {k: v[start:start + batch_size] for k, v in batch.items()}

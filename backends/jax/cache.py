"""The persistent XLA compilation cache, on by default so a model compiled once (by `kiln compile`,
`kiln run` or the API) is not recompiled by the next process.

Folder: $KILN_CACHE_DIR, else ~/.cache/graphkiln/xla (XDG_CACHE_HOME respected). KILN_NO_CACHE=1
turns it off. JAX skips entries that compiled in under a second by default; small models compile
faster than that, so the threshold is lowered (KILN_CACHE_MIN_COMPILE_SECONDS, default 0); the
folder is an LRU of at most KILN_CACHE_MAX_BYTES (default 2 GiB; JAX needs the `filelock` package,
a dependency, to bound it, and leaves the folder unbounded without it)."""

from __future__ import annotations

import importlib.util
import os

import jax

DEFAULT_MIN_COMPILE_SECONDS = 0.0
DEFAULT_MAX_BYTES = 2 << 30
CACHE_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"  # JAX's LRU cache: an entry and its last-use time
_configured: str | None = None


def cache_dir() -> str | None:
    """The folder the cache uses, or None when KILN_NO_CACHE disables it."""
    if os.environ.get("KILN_NO_CACHE", "") not in ("", "0"):
        return None
    explicit = os.environ.get("KILN_CACHE_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "graphkiln", "xla")


def enable_persistent_cache() -> str | None:
    """Point JAX's persistent compilation cache at cache_dir() (once per folder); returns it."""
    global _configured
    folder = cache_dir()
    if folder is None or folder == _configured:
        return folder
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None  # an unwritable home must not stop compilation; run uncached
    min_seconds = _env_number("KILN_CACHE_MIN_COMPILE_SECONDS", DEFAULT_MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if importlib.util.find_spec("filelock") is not None:  # JAX needs it to bound the folder's size
        max_bytes = int(_env_number("KILN_CACHE_MAX_BYTES", DEFAULT_MAX_BYTES))
        jax.config.update("jax_compilation_cache_max_size", max_bytes)
        if max_bytes > 0:  # -1: unbounded, 0: off
            _restore_access_times(folder)
    _reset_if_checked_without_cache()
    _configured = folder
    return folder


def _restore_access_times(folder: str) -> None:
    """Give every entry without one the access-time file JAX's bounded (LRU) cache keeps beside it.
    An unbounded cache (a process without `filelock`, or KILN_CACHE_MAX_BYTES=-1) writes none, and
    the LRU's eviction scan then fails on such an entry at every write, so nothing new was cached
    once something installed filelock (torch and transformers do). The entry's mtime stands in."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return
    for name in names:
        if not name.endswith(CACHE_SUFFIX) or name[: -len(CACHE_SUFFIX)] + ATIME_SUFFIX in names:
            continue
        try:
            stamp = os.stat(os.path.join(folder, name)).st_mtime_ns
            with open(os.path.join(folder, name[: -len(CACHE_SUFFIX)] + ATIME_SUFFIX), "wb") as handle:
                handle.write(stamp.to_bytes(8, "little"))
        except OSError:  # a read-only or concurrently pruned folder: JAX copes as before
            continue


def _env_number(name: str, default: float) -> float:
    """A numeric environment setting; a malformed value falls back to the default."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _reset_if_checked_without_cache() -> None:
    """JAX decides once, at its first compilation, whether a cache is in use; if something compiled
    before the folder was set, let it decide again."""
    try:
        from jax._src import compilation_cache
    except ImportError:  # a JAX without this module keeps its own decision
        return
    if getattr(compilation_cache, "_cache_checked", False) and not getattr(compilation_cache, "_cache_used", True):
        compilation_cache.reset_cache()

"""Discovery of pass and backend packages. The compiler never imports them by name in its code
paths; it loads whatever registers under the `graphkiln.plugins` entry-point group."""

from __future__ import annotations

import importlib
from importlib import metadata

_DEFAULT_PLUGINS = ("passes", "backends")
_loaded = False


def load_plugins() -> None:
    """Import every registered plugin package once (each registers its passes/backends/ops)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    names = [entry.value for entry in metadata.entry_points(group="graphkiln.plugins")]
    for name in names or _DEFAULT_PLUGINS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise

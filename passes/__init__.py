"""The pass families of graphkiln; importing this package registers every pass and preset."""

from . import constant_folding, dce, noop_removal, pipelines  # noqa: F401

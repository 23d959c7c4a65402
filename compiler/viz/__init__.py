"""The pass-by-pass visualizer: `write_report(report, path)` writes one self-contained HTML page
(pass timeline, stage graphs with diffs, inspector, charts) or, as JSON, the stage graphs and
per-node data for other viewers."""

from __future__ import annotations

import os
from typing import Any

from ..errors import OptionError
from .export import export_document
from .html import compact_json, render_html
from .pack import pack_report

FORMATS = ("html", "json")


def report_format(path: str, format: str | None = None) -> str:
    """The format asked for, or the one the file extension names."""
    if format is not None:
        if format not in FORMATS:
            raise OptionError(f"report format must be html or json, not {format!r}")
        return format
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension in (".html", ".htm"):
        return "html"
    if extension == ".json":
        return "json"
    raise OptionError(f"cannot tell the report format from {os.fspath(path)!r}", "name it .html or .json, or pass --format html|json")


def write_report(report: Any, path: str, format: str | None = None) -> str:
    """Write the visualizer report of `report` (a compiler.report.Report kept with snapshots)
    to `path` atomically; returns the format written."""
    from ..onnx_io import write_bytes_atomic

    chosen = report_format(path, format)
    if chosen == "json":
        text = compact_json(export_document(report))
    else:
        text = render_html(pack_report(report))
    write_bytes_atomic(os.fspath(path), text.encode("utf-8"))
    return chosen


__all__ = ["FORMATS", "export_document", "pack_report", "render_html", "report_format", "write_report"]

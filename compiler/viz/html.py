"""Writes the visualizer as one self-contained HTML page: the payload gzip+base64 in a data block
(decoded by the browser's DecompressionStream), the page's own JS and CSS inlined, and a
Content-Security-Policy that forbids any network access and any script but the page's own."""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import json
import math
from importlib import resources
from typing import Any

# Inlined in this order; each file is the project's own code (no third-party library).
SCRIPT_FILES = ("util.js", "layout.js", "model.js", "canvas.js", "charts.js", "panels.js", "app.js")
STYLE_FILES = ("viz.css",)

_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_for_html(data: Any) -> str:
    """JSON that is safe inside a <script> data block: no "<", ">", "&" or line separators
    survive literally, so model strings such as "</script>" cannot end the element."""
    return compact_json(data).translate(_JSON_ESCAPES)


def finite(data: Any) -> Any:
    """A copy of `data` where NaN and infinities become the strings "nan", "inf", "-inf"
    (the browser's JSON.parse rejects them as numbers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else ("nan" if math.isnan(data) else ("inf" if data > 0 else "-inf"))
    if isinstance(data, dict):
        return {str(key): finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data


def compact_json(data: Any) -> str:
    """Compact JSON the browser can parse: tried as is first (fast), and only when a NaN or an
    infinity is somewhere, again through finite()."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(finite(data), separators=(",", ":"), ensure_ascii=False, default=str)


def encode_payload(payload: dict[str, Any]) -> str:
    """JSON -> gzip -> base64 (plain ASCII letters: nothing in it can be read as markup)."""
    text = compact_json(payload)
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")


def _static(names: tuple[str, ...]) -> str:
    folder = resources.files("compiler.viz") / "static"
    return "\n".join(f"/* {name} */\n" + (folder / name).read_text(encoding="utf-8") for name in names)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render_html(payload: dict[str, Any]) -> str:
    """The whole page as text."""
    script = "\n(() => {\n'use strict';\n" + _static(SCRIPT_FILES) + "\n})();\n"
    style = "\n" + _static(STYLE_FILES) + "\n"
    meta = payload.get("meta", {})
    title = f"kiln viz: {meta.get('model', '')}"
    header = {"title": title, "payload_version": payload.get("version")}
    policy = (
        "default-src 'none'; "
        f"script-src {_sha256(script)}; "
        f"style-src {_sha256(style)}; "
        "img-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{html.escape(policy)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta name=\"generator\" content=\"graphkiln kiln viz\">\n"
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{style}</style>\n</head>\n<body>\n"
        "<noscript>This report is drawn by JavaScript; enable it to see the passes.</noscript>\n"
        f"<script type=\"application/json\" id=\"kiln-header\">{json_for_html(header)}</script>\n"
        f"<script type=\"application/octet-stream\" id=\"kiln-payload\">{encode_payload(payload)}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )

"""String ops (StringConcat, StringSplit, StringNormalizer, RegexFullMatch, string LabelEncoder).
XLA has no string type, so these run on the host on numpy object arrays: graphs holding them use
the backend's eager mode (interpreter.HOST_OPS), like graphs with data-dependent shapes."""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..registry import lowering
from .dynamic_shape import concrete

ML_DOMAIN = "ai.onnx.ml"


def _strings(ctx, value: Any) -> np.ndarray:
    array = concrete(ctx, value, "strings")
    return array.astype(object)


def _elementwise(function, *arrays: np.ndarray) -> np.ndarray:
    return np.asarray(np.frompyfunc(function, len(arrays), 1)(*arrays), dtype=object)


@lowering("StringConcat", since=20)
def string_concat(ctx, x, y):
    return _elementwise(lambda a, b: str(a) + str(b), _strings(ctx, x), _strings(ctx, y)).astype(object)


@lowering("RegexFullMatch", since=20)
def regex_full_match(ctx, x, pattern: str = ""):
    compiled = re.compile(pattern)
    return _elementwise(lambda text: compiled.fullmatch(str(text)) is not None, _strings(ctx, x)).astype(np.bool_)


@lowering("StringSplit", since=20)
def string_split(ctx, x, delimiter: str | None = None, maxsplit: int | None = None):
    """Substrings padded with "" to the longest split, and the number of substrings of each."""
    strings = _strings(ctx, x)
    separator = delimiter or None
    limit = -1 if maxsplit is None else int(maxsplit)
    pieces = [str(text).split(separator, limit) for text in strings.reshape(-1)]
    width = max((len(p) for p in pieces), default=0)
    padded = np.full((len(pieces), width), "", dtype=object)
    for row, parts in enumerate(pieces):
        padded[row, :len(parts)] = parts
    counts = np.array([len(p) for p in pieces], dtype=np.int64).reshape(strings.shape)
    return padded.reshape(strings.shape + (width,)), counts


@lowering("StringNormalizer", since=10)
def string_normalizer(ctx, x, case_change_action: str = "NONE", is_case_sensitive: int = 0, locale: str = "",
                      stopwords=None):
    """Removes stop words (whole elements) and changes case; [C] or [1, C] in, same rank out."""
    strings = _strings(ctx, x)
    change = {"LOWER": str.lower, "UPPER": str.upper}.get(case_change_action, lambda s: s)
    if is_case_sensitive:
        stops = set(stopwords or ())
        keep = [str(s) for s in strings.reshape(-1) if str(s) not in stops]
    else:
        stops = {w.lower() for w in stopwords or ()}
        keep = [str(s) for s in strings.reshape(-1) if str(s).lower() not in stops]
    result = np.array([change(s) for s in keep] or [""], dtype=object)
    return result.reshape(1, -1) if strings.ndim == 2 else result


def _attribute_array(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        return values.reshape(-1)
    return np.asarray([v.decode() if isinstance(v, bytes) else v for v in values])


def _label_table(attributes: dict[str, Any]):
    keys = next((_attribute_array(attributes[k]) for k in ("keys_tensor", "keys_strings", "keys_int64s", "keys_floats")
                 if attributes.get(k) is not None), None)
    values = next((_attribute_array(attributes[k]) for k in ("values_tensor", "values_strings", "values_int64s",
                                                             "values_floats") if attributes.get(k) is not None), None)
    if attributes.get("default_tensor") is not None:
        default = np.asarray(attributes["default_tensor"]).reshape(-1)[0]
    elif attributes.get("values_strings") is not None:
        default = attributes.get("default_string", "_Unused")
    elif attributes.get("values_int64s") is not None:
        default = attributes.get("default_int64", -1)
    else:
        default = attributes.get("default_float", -0.0)
    return keys, values, default


@lowering("LabelEncoder", domain=ML_DOMAIN, since=2)
def label_encoder(ctx, x, **attributes):
    """Maps keys to values (default for unknown keys); string tables run on the host."""
    keys, values, default = _label_table(attributes)
    if keys is None or values is None:
        raise ctx.fail("it has no keys or values")
    out_dtype = ctx.output_dtype(0) or values.dtype
    if keys.dtype.kind in "OUS" or values.dtype.kind in "OUS":
        table = {(k.decode() if isinstance(k, bytes) else k): v for k, v in zip(keys.tolist(), values.tolist())}
        inputs = concrete(ctx, x, "keys")
        mapped = _elementwise(lambda key: table.get(key.decode() if isinstance(key, bytes) else key, default), inputs)
        return mapped.astype(object if np.dtype(out_dtype).kind in "OUS" else out_dtype)
    x = jnp.asarray(x)
    matches = x[..., None] == jnp.asarray(keys)
    picked = jnp.asarray(values)[jnp.argmax(matches, axis=-1)]
    return jnp.where(matches.any(axis=-1), picked, jnp.asarray(default, picked.dtype)).astype(out_dtype)


@lowering("ImageDecoder", since=20)
def image_decoder(ctx, encoded_stream, pixel_format: str = "RGB"):
    """Decodes an encoded image (bytes as uint8) on the host with Pillow: [H, W, C] uint8."""
    try:
        from PIL import Image
    except ImportError:
        raise ctx.fail("decoding images needs Pillow (pip install pillow)") from None
    import io

    image = Image.open(io.BytesIO(concrete(ctx, encoded_stream, "encoded bytes").astype(np.uint8).tobytes()))
    if pixel_format == "Grayscale":
        return np.asarray(image.convert("L"))[:, :, None]
    pixels = np.asarray(image.convert("RGB"))
    return pixels[:, :, ::-1].copy() if pixel_format == "BGR" else pixels

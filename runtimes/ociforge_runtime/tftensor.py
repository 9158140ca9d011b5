"""The Seldon protocol's ``data.tftensor``: TensorFlow's ``TensorProto`` in its protobuf JSON form.

The Seldon wrapper reads it with ``json_format.ParseDict`` + ``tf.make_ndarray`` and writes it
with ``tf.make_tensor_proto`` + ``json_format.MessageToJson``, so it needs TensorFlow. The JSON
form is plain enough to read and write with numpy alone, so images need no TensorFlow:

    {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "2"}, {"size": "3"}]},
     "tensorContent": "<base64 of the little-endian row-major bytes>"}

or, instead of ``tensorContent``, the typed list of the dtype (``floatVal``, ``doubleVal``,
``intVal``, ``int64Val``, ``uint32Val``, ``uint64Val``, ``boolVal``, ``halfVal`` as bit patterns,
``stringVal`` as base64, ``scomplexVal``/``dcomplexVal`` as real/imaginary pairs), with
``make_ndarray``'s rules: no values gives zeros, fewer values than elements repeat the last one.
Field names are accepted camelCase (``MessageToJson``) or snake_case (the proto's own); int64
values as JSON strings or numbers; floats also as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
Quantized types, bfloat16, resources and variants are refused (400) as numpy has no such type.

Encoding follows ``make_tensor_proto``: ``tensorContent`` for tensors of more than one element
of a numeric type it packs that way, else the typed list.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from .errors import BadInput

# TensorFlow DataType: name, number, numpy type, typed-values field (snake_case)
DTYPES = {
    "DT_FLOAT": (1, "<f4", "float_val"),
    "DT_DOUBLE": (2, "<f8", "double_val"),
    "DT_INT32": (3, "<i4", "int_val"),
    "DT_UINT8": (4, "u1", "int_val"),
    "DT_INT16": (5, "<i2", "int_val"),
    "DT_INT8": (6, "i1", "int_val"),
    "DT_STRING": (7, "O", "string_val"),
    "DT_COMPLEX64": (8, "<c8", "scomplex_val"),
    "DT_INT64": (9, "<i8", "int64_val"),
    "DT_BOOL": (10, "?", "bool_val"),
    "DT_UINT16": (17, "<u2", "int_val"),
    "DT_COMPLEX128": (18, "<c16", "dcomplex_val"),
    "DT_HALF": (19, "<f2", "half_val"),
    "DT_UINT32": (22, "<u4", "uint32_val"),
    "DT_UINT64": (23, "<u8", "uint64_val"),
}
BY_NUMBER = {number: name for name, (number, _, _) in DTYPES.items()}
# what make_tensor_proto packs into tensor_content (more than one element)
CONTENT_TYPES = frozenset(
    ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_UINT8", "DT_INT16", "DT_INT8", "DT_INT64")
    + ("DT_UINT16", "DT_UINT32", "DT_UINT64")
)


def _np() -> Any:
    import numpy

    return numpy


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _field(msg: dict[str, Any], snake: str) -> Any:
    if snake in msg:
        return msg[snake]
    return msg.get(_camel(snake))


def _dtype_name(value: Any) -> str:
    if isinstance(value, bool):
        value = None
    name = BY_NUMBER.get(value) if isinstance(value, int) else value
    if not isinstance(name, str) or name not in DTYPES:
        raise BadInput(
            f"'data.tftensor': dtype {value!r} is not supported (one of {', '.join(DTYPES)})"
        )
    return name


def _shape(msg: dict[str, Any]) -> list[int]:
    shape = _field(msg, "tensor_shape") or {}
    if not isinstance(shape, dict):
        raise BadInput("'data.tftensor': tensorShape must be an object")
    if _field(shape, "unknown_rank"):
        raise BadInput("'data.tftensor': a tensor of unknown rank cannot be read")
    dims = shape.get("dim") or []
    if not isinstance(dims, list):
        raise BadInput("'data.tftensor': tensorShape.dim must be a list")
    out = []
    for dim in dims:
        size = dim.get("size", 0) if isinstance(dim, dict) else None
        try:
            size = int(size)
        except (TypeError, ValueError):
            raise BadInput(f"'data.tftensor': bad dimension {dim!r}") from None
        if size < 0:
            raise BadInput(f"'data.tftensor': dimension size {size} is negative")
        out.append(size)
    return out


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise BadInput(f"'data.tftensor': {what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"'data.tftensor': {what} is not base64") from None


def _number(value: Any) -> Any:
    """A JSON value of a numeric proto field: numbers, int64 as strings, NaN/Infinity."""
    if isinstance(value, str):
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if value in special:
            return special[value]
        try:
            return int(value)
        except ValueError:
            return float(value)
    if isinstance(value, (int, float)):
        return value
    raise ValueError(f"not a number: {value!r}")


def decode(msg: Any) -> Any:
    """``data.tftensor`` (TensorProto JSON) -> numpy array; a 400 naming what is wrong."""
    np = _np()
    if not isinstance(msg, dict):
        raise BadInput("'data.tftensor' must be a TensorProto object")
    name = _dtype_name(_field(msg, "dtype"))
    _, np_type, values_field = DTYPES[name]
    shape = _shape(msg)
    count = math.prod(shape)
    content = _field(msg, "tensor_content")
    if content:
        raw = _b64(content, "tensorContent")
        if name == "DT_STRING":
            raise BadInput("'data.tftensor': DT_STRING travels in stringVal, not tensorContent")
        dtype = np.dtype(np_type)
        if len(raw) != count * dtype.itemsize:
            raise BadInput(
                f"'data.tftensor': tensorContent has {len(raw)} bytes; shape {shape} of "
                f"{name} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)
    values = _field(msg, values_field) or []
    if not isinstance(values, list):
        raise BadInput(f"'data.tftensor': {_camel(values_field)} must be a list")
    try:
        if name == "DT_STRING":
            arr = np.empty(len(values), dtype=object)
            arr[:] = [_b64(v, "stringVal") for v in values]
        elif name == "DT_HALF":
            arr = np.array([int(v) for v in values], dtype="<u2").view("<f2")
        elif name in ("DT_COMPLEX64", "DT_COMPLEX128"):
            if len(values) % 2:
                raise BadInput(f"'data.tftensor': {_camel(values_field)} holds pairs")
            nums = [_number(v) for v in values]
            arr = np.array(
                [complex(a, b) for a, b in zip(nums[::2], nums[1::2], strict=True)], np_type
            )
        elif name == "DT_BOOL":
            if not all(isinstance(v, bool) for v in values):
                raise ValueError("boolVal holds true/false only")
            arr = np.array(values, dtype=bool)
        else:
            arr = np.array([_number(v) for v in values], dtype=np.dtype(np_type))
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadInput(f"'data.tftensor': {_camel(values_field)}: {exc}") from None
    if arr.size == 0:
        if name == "DT_STRING":
            out = np.empty(count, dtype=object)
            out[:] = [b""] * count
            return out.reshape(shape)
        return np.zeros(shape, dtype=np.dtype(np_type).newbyteorder("="))
    if arr.size > count:
        raise BadInput(f"'data.tftensor': {arr.size} values for shape {shape} ({count} elements)")
    if arr.size < count:  # make_ndarray repeats the last value
        arr = np.concatenate([arr, np.repeat(arr[-1:], count - arr.size)])
    if arr.dtype != object:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr.reshape(shape)


def encode(arr: Any) -> dict[str, Any]:
    """A numpy array -> TensorProto JSON, as ``MessageToJson(make_tensor_proto(arr))`` writes it."""
    np = _np()
    arr = np.asarray(arr)
    name = next(
        (
            n
            for n, (_, t, _) in DTYPES.items()
            if t != "O" and np.dtype(t) == arr.dtype.newbyteorder("<")
        ),
        None,
    )
    if name is None:
        if arr.dtype.kind in "SUO":
            name = "DT_STRING"
        else:
            raise TypeError(f"no TensorFlow dtype for numpy {arr.dtype}")
    _, np_type, values_field = DTYPES[name]
    out: dict[str, Any] = {"dtype": name}
    dims = [{"size": str(d)} if d else {} for d in arr.shape]  # proto3 JSON leaves out zeros
    out["tensorShape"] = {"dim": dims} if dims else {}
    if name in CONTENT_TYPES and arr.size > 1:
        raw = np.ascontiguousarray(arr, dtype=np.dtype(np_type)).tobytes()
        out["tensorContent"] = base64.b64encode(raw).decode("ascii")
        return out
    flat = arr.ravel()
    if not flat.size:
        return out
    key = _camel(values_field)
    if name == "DT_STRING":
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist()]
        out[key] = [base64.b64encode(v).decode("ascii") for v in items]
    elif name == "DT_HALF":
        out[key] = flat.astype("<f2").view("<u2").astype(int).tolist()
    elif name in ("DT_COMPLEX64", "DT_COMPLEX128"):
        out[key] = [_json_float(x) for c in flat.tolist() for x in (c.real, c.imag)]
    elif name in ("DT_INT64", "DT_UINT64"):
        out[key] = [str(int(v)) for v in flat.tolist()]  # proto3 JSON: 64-bit ints as strings
    elif name in ("DT_FLOAT", "DT_DOUBLE"):
        out[key] = [_json_float(v) for v in flat.tolist()]
    else:
        out[key] = flat.tolist()
    return out


def _json_float(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value

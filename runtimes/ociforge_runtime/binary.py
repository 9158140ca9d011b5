"""The Open Inference Protocol's binary tensor extension (HTTP), as Triton defines it.

A request with an ``Inference-Header-Content-Length: N`` header carries a JSON header of ``N``
bytes and then the raw data of the inputs whose ``parameters.binary_data_size`` is set, in
their order: little-endian, row-major, BOOL one byte per element, BYTES elements each preceded
by its length as a 4-byte little-endian integer. Such inputs reach the model as
``numpy.frombuffer`` views of the request body (read-only; no copy of the tensor bytes), BYTES
as ``bytes`` objects. Outputs are answered the same way when asked for (``binary_data`` on a
requested output, or ``binary_data_output`` in the request's parameters).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from .errors import BadInput

HEADER = "Inference-Header-Content-Length"
# v2 datatype -> little-endian numpy dtype of its binary form
LITTLE_ENDIAN = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


def header_length(value: str | None, body_size: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value, checked against the body size."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise BadInput(f"{HEADER} must be a non-negative integer, got {value[:40]!r}")
    n = int(text)
    if n > body_size:
        raise BadInput(f"{HEADER} is {n} but the body has only {body_size} bytes")
    return n


def bytes_elements(chunk: memoryview, count: int, where: str) -> list[bytes]:
    """``count`` BYTES elements, each a 4-byte little-endian length and its bytes (the HTTP
    binary extension and gRPC's raw contents share the form)."""
    out = []
    offset, size = 0, len(chunk)
    while offset < size:
        if offset + 4 > size:
            raise BadInput(f"{where}: BYTES data ends inside an element's 4-byte length")
        (n,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + n > size:
            raise BadInput(f"{where}: BYTES element of {n} bytes runs past binary_data_size")
        out.append(bytes(chunk[offset : offset + n]))
        offset += n
    if len(out) != count:
        raise BadInput(f"{where}: shape needs {count} BYTES elements, got {len(out)}")
    return out


def decode_inputs(body: Any, blob: memoryview) -> dict[int, Any]:
    """The binary inputs of a request (by their index in ``inputs``) as numpy arrays."""
    import numpy as np

    arrays: dict[int, Any] = {}
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        return arrays
    offset = 0
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict):
            continue
        params = spec.get("parameters") or {}
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        name = spec.get("name")
        where = f"input '{name}'" if isinstance(name, str) else f"inputs[{i}]"
        if not isinstance(name, str):
            raise BadInput(f"{where}: 'name' must be a string")
        if "data" in spec:
            raise BadInput(f"{where}: has both 'data' and binary_data_size")
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadInput(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(blob):
            raise BadInput(
                f"{where}: binary_data_size {size} runs past the end of the body "
                f"({len(blob) - offset} bytes left)"
            )
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadInput(f"{where}: 'shape' must be a list of non-negative integers")
        datatype = spec.get("datatype")
        count = math.prod(shape)
        chunk = blob[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            arr = np.empty(count, dtype=object)
            arr[:] = bytes_elements(chunk, count, where)
            arrays[i] = arr.reshape(shape)
            continue
        dtype = LITTLE_ENDIAN.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise BadInput(f"{where}: unknown datatype {datatype!r}")
        itemsize = np.dtype(dtype).itemsize
        if size != count * itemsize:
            raise BadInput(
                f"{where}: shape {shape} of {datatype} needs {count * itemsize} bytes, "
                f"binary_data_size is {size}"
            )
        arrays[i] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if offset != len(blob):
        raise BadInput(
            f"the body has {len(blob) - offset} bytes after the binary inputs' data "
            "(binary_data_size of the inputs and the body length disagree)"
        )
    return arrays


def wanted(body: Any) -> dict[str, bool] | bool:
    """Which outputs to answer in binary: per requested output (``binary_data``), else all or
    none (``binary_data_output`` in the request's parameters)."""
    params = body.get("parameters") if isinstance(body, dict) else None
    default = bool(isinstance(params, dict) and params.get("binary_data_output"))
    outs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outs, list):
        return default
    per: dict[str, bool] = {}
    for o in outs:
        if isinstance(o, dict) and isinstance(o.get("name"), str):
            p = o.get("parameters") or {}
            per[o["name"]] = bool(p.get("binary_data", default)) if isinstance(p, dict) else default
    return per


def encode(arr: Any, datatype: str) -> bytes:
    """An output array -> its binary form (also gRPC's ``raw_output_contents``)."""
    import numpy as np

    if datatype == "BYTES":
        parts = []
        for v in arr.ravel().tolist():
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=LITTLE_ENDIAN[datatype]).tobytes()

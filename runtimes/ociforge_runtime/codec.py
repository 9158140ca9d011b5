"""Decoding requests into model inputs and encoding model outputs into JSON.

One module owns every conversion so that the HTTP server and the local test
path (``ociforge_runtime.local``) decode and encode identically.  numpy is
imported lazily, only by the Open Inference Protocol (v2) tensor functions and
never at start-up: cold start matters and JSON/bytes models may not need it.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from .errors import BadInput, ModelError, TooLarge

# Open Inference Protocol datatype <-> numpy dtype name.
V2_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items() if k != "BYTES"}
# numpy dtype kinds a JSON array may have for each datatype ('b' bool, 'i'/'u' ints, 'f' float).
_ACCEPTED_KINDS = {"BOOL": "b", "BYTES": "UO"}
_ACCEPTED_KINDS.update({t: "iu" for t in V2_TO_NUMPY if "INT" in t})
_ACCEPTED_KINDS.update({t: "iuf" for t in ("FP16", "FP32", "FP64")})


# --------------------------------------------------------------------------- JSON out


def _default(obj: Any) -> Any:
    """``json`` fallback: numpy arrays/scalars, bytes, sets -- without importing numpy."""
    tolist = getattr(obj, "tolist", None)
    if tolist is not None and type(obj).__module__ == "numpy":
        return tolist()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    item = getattr(obj, "item", None)  # other array-likes' scalars (e.g. torch 0-d tensors)
    if callable(item):
        return item()
    raise TypeError(f"object of type {type(obj).__qualname__} is not JSON serialisable")


def dumps(obj: Any) -> bytes:
    """Encode a response body; numpy values become lists/numbers."""
    return json.dumps(obj, default=_default, separators=(",", ":")).encode("utf-8")


def to_jsonable(obj: Any) -> Any:
    """What a client gets after ``dumps`` and ``json.loads`` (used by the local test path)."""
    return json.loads(dumps(obj))


def encode_response(body: Any) -> bytes:
    """Encode a response carrying model output; unencodable output is the model's fault (500).

    Encoding happens exactly once per response; the ``ModelError`` blames the
    model with a clear message instead of surfacing as an internal error.
    """
    try:
        return dumps(body)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelError(
            f"model output cannot be encoded as JSON: {exc}",
            exc,
            public="the model's output cannot be encoded as JSON",
        ) from exc


# --------------------------------------------------------------------------- simple route in

# Every JSON value (and object key) but the first follows one of these bytes outside strings.
_JSON_SEPARATORS = (b",", b":", b"[", b"{")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_values(data: bytes) -> int:
    """An upper bound of the values in a JSON document, object keys included.

    Each value or key after the first follows a ``,`` ``:`` ``[`` or ``{`` (an empty ``[]``
    or ``{}`` holds none): counting those bytes (C speed, no decoding) bounds the count, by
    at most twice (an empty container written with spaces inside). Separators inside
    strings are counted too; only when that bound is over a limit are the strings blanked
    out to count again (``check_json_values``).
    """
    return (
        1 + sum(data.count(sep) for sep in _JSON_SEPARATORS) - data.count(b"[]") - data.count(b"{}")
    )


def check_json_values(data: bytes, limit: int | None) -> None:
    """413 when ``data`` holds more than ``limit`` JSON values: checked before decoding.

    A decoded value costs up to about 72 bytes of Python objects (an empty dict and its
    slot in the list holding it) while its text may be 2 bytes, so the body size alone does
    not bound decoding memory; the value count does.
    """
    if limit is None or json_values(data) <= limit:
        return
    if json_values(_JSON_STRING.sub(b'""', data)) <= limit:
        return
    raise TooLarge(
        f"JSON body has more than {limit} values (OCIFORGE_MAX_JSON_VALUES); "
        "send fewer inputs per request"
    )


def decode_json(data: bytes, max_values: int | None = None) -> Any:
    """Parse a JSON body; 400 with the parser's position on malformed input.

    ``max_values`` bounds the values decoded (413 beyond, checked before decoding); nesting
    deeper than the interpreter's recursion limit (about 1,000 levels) is a 400.
    """
    if not data.strip():
        raise BadInput("empty request body: expected a JSON document")
    check_json_values(data, max_values)
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise BadInput(f"malformed JSON: body is not UTF-8 ({exc.reason})") from None
    except ValueError as exc:
        raise BadInput(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadInput(
            "malformed JSON: nested too deeply (at most about 1,000 levels of arrays/objects)"
        ) from None


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode a ``text/*`` body with its declared charset (UTF-8 by default)."""
    charset = charset or "utf-8"
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        raise BadInput(f"body is not valid {charset}: {exc.reason} at byte {exc.start}") from None
    except (LookupError, ValueError, TypeError):
        raise BadInput(f"unknown charset {charset!r} in Content-Type") from None


def is_json_type(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


def decode_body(
    mimetype: str, charset: str | None, data: bytes, max_values: int | None = None
) -> Any:
    """The model input for a non-multipart body: JSON -> object, text -> str, else bytes."""
    if is_json_type(mimetype):
        return decode_json(data, max_values)
    if mimetype.startswith("text/"):
        return decode_text(data, charset)
    return data


def decode_parts(parts: list[tuple[str, Any]]) -> Any:
    """Multipart/form input: a single part is passed as itself, several as ``{name: value}``.

    Repeated names collect into lists, so ``files=[("image", a), ("image", b)]``
    gives ``{"image": [a, b]}``.
    """
    if not parts:
        raise BadInput("multipart body has no parts: expected at least one file or field")
    if len(parts) == 1:
        return parts[0][1]
    out: dict[str, Any] = {}
    for name, value in parts:
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


def decode_batch_json(data: bytes, max_values: int | None = None) -> list[Any]:
    """``/predict/batch`` JSON: a list of inputs (or ``{"instances": [...]}``)."""
    obj = decode_json(data, max_values)
    if isinstance(obj, dict) and isinstance(obj.get("instances"), list):
        obj = obj["instances"]
    if not isinstance(obj, list):
        raise BadInput(f"batch body must be a JSON list of inputs, got {type(obj).__name__}")
    if not obj:
        raise BadInput("batch body is an empty list")
    return obj


# --------------------------------------------------------------------------- v2 tensors


def _np() -> Any:
    import numpy

    return numpy


def _check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadInput(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return shape


def decode_tensor(spec: Any, where: str) -> tuple[str, Any]:
    """One v2 input tensor (JSON) -> ``(name, numpy array)``, or a 400 naming the problem."""
    np = _np()
    if not isinstance(spec, dict):
        raise BadInput(f"{where} must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in spec:
            raise BadInput(f"{where}: missing field '{key}'")
    name = spec["name"]
    if not isinstance(name, str):
        raise BadInput(f"{where}: 'name' must be a string")
    where = f"input '{name}'"
    shape = _check_shape(spec["shape"], where)
    datatype = spec["datatype"]
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise BadInput(
            f"{where}: unknown datatype {datatype!r} (expected one of {', '.join(V2_TO_NUMPY)})"
        )
    data = spec["data"]
    if not isinstance(data, list):
        data = [data]
    try:
        raw = np.asarray(data, dtype=object if datatype == "BYTES" else None)
    except ValueError as exc:  # ragged nesting
        raise BadInput(f"{where}: 'data' is not a regular array: {exc}") from None
    if datatype == "BYTES":
        flat = raw.ravel()
        if not all(isinstance(v, str) for v in flat):
            raise BadInput(f"{where}: BYTES data must be strings")
        arr = flat
    else:
        if raw.size and raw.dtype.kind not in _ACCEPTED_KINDS[datatype]:
            kind = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}
            wanted = " or ".join(sorted({kind[k] for k in _ACCEPTED_KINDS[datatype]}))
            raise BadInput(
                f"{where}: datatype {datatype} needs {wanted}, got {raw.dtype.kind!r} data ({raw.dtype})"
            )
        try:
            arr = np.array(data, dtype=V2_TO_NUMPY[datatype]).ravel()
        except (OverflowError, ValueError, TypeError) as exc:
            raise BadInput(f"{where}: data does not fit datatype {datatype}: {exc}") from None
    expected = math.prod(shape)
    if arr.size != expected:
        raise BadInput(f"{where}: shape {shape} needs {expected} elements, got {arr.size}")
    return name, arr.reshape(shape)


def _shape_matches(declared: list[int], actual: list[int]) -> bool:
    return len(declared) == len(actual) and all(
        d in (-1, a) for d, a in zip(declared, actual, strict=True)
    )


def decode_infer_request(
    body: Any, card: dict[str, Any], arrays: dict[int, Any] | None = None
) -> tuple[Any, list[str] | None, Any]:
    """A v2 ``infer`` body -> ``(model input, requested output names, request id)``.

    One input tensor is passed to the model as an array, several as a
    ``{name: array}`` dict.  When the model card declares inputs, names,
    datatypes and shapes (``-1`` = any) are checked against it.
    """
    if not isinstance(body, dict):
        raise BadInput("infer request must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if inputs is None:
        raise BadInput("infer request: missing field 'inputs'")
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("infer request: 'inputs' must be a non-empty list of tensors")
    tensors: dict[str, Any] = {}
    for i, spec in enumerate(inputs):
        if arrays and i in arrays:  # binary tensor extension: already decoded from the body
            name, arr = spec["name"], arrays[i]
        else:
            name, arr = decode_tensor(spec, f"inputs[{i}]")
        if name in tensors:
            raise BadInput(f"input '{name}' given twice")
        tensors[name] = (arr, spec["datatype"])
    check_declared_inputs(tensors, card)
    requested = None
    if body.get("outputs") is not None:
        outs = body["outputs"]
        if not isinstance(outs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs
        ):
            raise BadInput("infer request: 'outputs' must be a list of {\"name\": ...}")
        requested = [o["name"] for o in outs]
    return model_input(tensors), requested, body.get("id")


def model_input(tensors: dict[str, tuple[Any, str]]) -> Any:
    """Decoded tensors -> the model's input: one array, or ``{name: array}`` for several."""
    values = {name: arr for name, (arr, _) in tensors.items()}
    return next(iter(values.values())) if len(values) == 1 else values


def check_declared_inputs(tensors: dict[str, tuple[Any, str]], card: dict[str, Any]) -> None:
    """400 unless ``{name: (array, datatype)}`` matches the card's declared inputs (if any).

    Shared by every v2 transport (JSON, gRPC), so all check names, datatypes and shapes alike.
    """
    declared = {d["name"]: d for d in card.get("inputs") or []}
    if declared:
        for name in declared:
            if name not in tensors:
                raise BadInput(f"missing input '{name}' (model inputs: {', '.join(declared)})")
        for name, (arr, datatype) in tensors.items():
            spec = declared.get(name)
            if spec is None:
                raise BadInput(f"unknown input '{name}' (model inputs: {', '.join(declared)})")
            if datatype != spec["datatype"]:
                raise BadInput(
                    f"input '{name}': expected datatype {spec['datatype']}, got {datatype}"
                )
            if not _shape_matches(spec["shape"], list(arr.shape)):
                raise BadInput(
                    f"input '{name}': expected shape {spec['shape']}, got {list(arr.shape)}"
                )


def output_array(name: str, value: Any, datatype: str | None = None) -> tuple[Any, str]:
    """A model output -> ``(numpy array, v2 datatype)``; the datatype is inferred when not
    declared. Shared by every v2 transport (JSON, gRPC); unencodable output is a ModelError."""
    np = _np()
    try:
        arr = np.asarray(value)
        if arr.dtype.kind == "O" and not all(isinstance(v, (str, bytes)) for v in arr.ravel()):
            arr = np.asarray(arr.tolist())
        if datatype is None:
            if arr.dtype.kind in "OUS":
                datatype = "BYTES"
            else:
                datatype = NUMPY_TO_V2.get(arr.dtype.name)
                if datatype is None:
                    raise TypeError(f"dtype {arr.dtype} has no v2 datatype")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelError(
            f"output '{name}' cannot be encoded as a tensor: {exc}",
            exc,
            public="the model's output cannot be encoded as a tensor",
        ) from exc
    return arr, datatype


def encode_tensor(
    name: str, value: Any, datatype: str | None = None, blobs: list[bytes] | None = None
) -> dict[str, Any]:
    """A model output -> a v2 output tensor ``{name, datatype, shape, data}``; with ``blobs``
    (binary tensor extension) its bytes are appended there and it says ``binary_data_size``."""
    arr, datatype = output_array(name, value, datatype)
    try:
        if blobs is not None:
            from .binary import encode

            blobs.append(encode(arr, datatype))
            return {
                "name": name,
                "datatype": datatype,
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": len(blobs[-1])},
            }
        if datatype == "BYTES":
            data = [
                v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
                for v in arr.ravel().tolist()
            ]
        else:
            data = arr.astype(V2_TO_NUMPY[datatype], copy=False).ravel().tolist()
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelError(
            f"output '{name}' cannot be encoded as a tensor: {exc}",
            exc,
            public="the model's output cannot be encoded as a tensor",
        ) from exc
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def encode_infer_response(
    result: Any,
    card: dict[str, Any],
    requested: list[str] | None = None,
    request_id: Any = None,
    binary: dict[str, bool] | bool = False,
    blobs: list[bytes] | None = None,
) -> dict[str, Any]:
    """The model's result -> a v2 ``infer`` response body (the outputs ``binary`` names, or all
    when it is True, in binary form: their bytes appended to ``blobs``).

    A dict result gives one tensor per key; otherwise one tensor named after
    the card's first declared output (``output-0`` if none is declared), or one
    per declared output when the model returns a tuple of that length.
    """

    def as_binary(name: str) -> bool:
        return blobs is not None and (
            binary.get(name, False) if isinstance(binary, dict) else bool(binary)
        )

    outputs = [
        encode_tensor(k, v, t, blobs if as_binary(k) else None)
        for k, v, t in named_outputs(result, card, requested)
    ]
    body: dict[str, Any] = {
        "model_name": card["name"],
        "model_version": card["version"],
        "outputs": outputs,
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def named_outputs(
    result: Any, card: dict[str, Any], requested: list[str] | None = None
) -> list[tuple[str, Any, str | None]]:
    """The model's result -> ``[(output name, value, declared datatype or None)]``.

    Shared by every v2 transport (JSON, gRPC); 400 when a requested output is not produced.
    """
    declared = card.get("outputs") or []
    types = {d["name"]: d["datatype"] for d in declared}
    if isinstance(result, dict):
        named = list(result.items())
    elif isinstance(result, tuple) and len(declared) > 1 and len(result) == len(declared):
        named = [(d["name"], v) for d, v in zip(declared, result, strict=True)]
    else:
        named = [(declared[0]["name"] if declared else "output-0", result)]
    if requested is not None:
        available = {str(k) for k, _ in named}
        for name in requested:
            if name not in available:
                raise BadInput(
                    f"requested output '{name}' is not produced by the model (outputs: {', '.join(sorted(available))})"
                )
        named = [(k, v) for k, v in named if str(k) in requested]
    return [(str(k), v, types.get(str(k))) for k, v in named]

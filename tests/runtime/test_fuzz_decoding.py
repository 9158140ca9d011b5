"""Property-based tests of request decoding: whatever a client sends, the answer is a result
or the runtime's own 4xx error with a message, never another exception (a 500).

The codec functions are called directly and the routes through Flask's test client (no
server process); a few thousand examples in all, in a few seconds.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import runtime_models as models
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ociforge_runtime import codec
from ociforge_runtime.errors import RuntimeHTTPError, TooLarge
from ociforge_runtime.worker import BufferingWorker as Worker
from ociforge_runtime.worker import Conn, Reject, frame_head

from tests.runtime.conftest import app_for

# numpy warns (and gives inf) when a float does not fit FP16/FP32: a value, not an error
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples on every run: a failure here is reproducible
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_docs = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


def client_error(exc: RuntimeHTTPError) -> None:
    assert 400 <= exc.status < 500 and exc.message, (exc.status, exc.message)


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Replace, cut or insert bytes at positions drawn by hypothesis."""
    out = bytearray(data)
    for pos, cut, insert in edits:
        at = pos % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.binary(max_size=4)), max_size=4
)


# ---------------------------------------------------------------- JSON


@FUZZ
@given(doc=json_docs, edit=edits, limit=st.none() | st.integers(1, 50))
def test_decode_json_gives_a_value_or_a_client_error(doc, edit, limit):
    data = mutate(json.dumps(doc).encode(), edit)
    try:
        codec.decode_json(data, max_values=limit)
    except RuntimeHTTPError as exc:
        client_error(exc)


@FUZZ
@given(data=st.binary(max_size=200), limit=st.none() | st.integers(1, 50))
def test_decode_json_of_any_bytes(data, limit):
    for fn in (codec.decode_json, codec.decode_batch_json):
        try:
            fn(data, limit)
        except RuntimeHTTPError as exc:
            client_error(exc)


def count_values(doc) -> int:
    if isinstance(doc, list):
        return 1 + sum(count_values(v) for v in doc)
    if isinstance(doc, dict):
        return 1 + sum(1 + count_values(v) for v in doc.values())  # a key and its value
    return 1


@FUZZ
@given(doc=json_docs, compact=st.booleans())
def test_value_count_is_an_upper_bound_and_valid_documents_round_trip(doc, compact):
    data = json.dumps(doc, separators=(",", ":") if compact else None).encode()
    values = count_values(doc)
    bound = codec.json_values(codec._JSON_STRING.sub(b'""', data))
    assert values <= bound <= 2 * values  # an upper bound, and not a loose one
    if compact:
        assert bound == values
    assert codec.decode_json(data, max_values=bound) == doc
    if values > 1:
        with pytest.raises(TooLarge):
            codec.decode_json(data, max_values=values - 1)


@FUZZ
@given(
    data=st.binary(max_size=50) | st.text(max_size=30).map(str.encode),
    charset=st.none()
    | st.sampled_from(["utf-8", "latin-1", "utf-16", "ascii", "base64", "rot13", "nope", ""])
    | st.text(max_size=12),
    mimetype=st.sampled_from(
        ["application/json", "text/plain", "text/csv", "application/x+json", "image/png"]
    ),
)
def test_decode_body_by_content_type(data, charset, mimetype):
    try:
        codec.decode_body(mimetype, charset, data, 100)
    except RuntimeHTTPError as exc:
        client_error(exc)


# ---------------------------------------------------------------- v2 tensors

DATATYPES = list(codec.V2_TO_NUMPY)
CARDS = [
    {"name": "m", "version": "1", "inputs": [], "outputs": []},
    {
        "name": "m",
        "version": "1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [],
    },
    {
        "name": "m",
        "version": "1",
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [-1]},
            {"name": "b", "datatype": "BYTES", "shape": [2]},
        ],
        "outputs": [],
    },
]


@st.composite
def tensors(draw):
    """A v2 input tensor: well-formed (data matches shape and datatype) or drawn at random."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    n = math.prod(shape)
    element = {
        "BOOL": st.booleans(),
        "BYTES": st.text(max_size=5),
        "FP16": st.floats(-1000, 1000),
        "FP32": st.floats(-1e30, 1e30),
        "FP64": st.floats(allow_nan=False),
    }.get(datatype, st.integers(0, 100))
    good = {
        "name": draw(st.sampled_from(["x", "a", "b", "input-0"])),
        "shape": shape,
        "datatype": datatype,
        "data": draw(st.lists(element, min_size=n, max_size=n)),
    }
    if draw(st.booleans()):
        return good
    field = draw(st.sampled_from(["name", "shape", "datatype", "data", None]))
    junk = draw(json_docs | st.lists(st.integers(-(2**70), 2**70), max_size=6))
    if field is None:
        return junk
    broken = dict(good)
    if draw(st.booleans()):
        broken.pop(field)
    else:
        broken[field] = junk
    return broken


@settings(FUZZ, max_examples=600)
@given(
    inputs=st.lists(tensors(), max_size=3) | json_docs,
    outputs=st.none() | st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)})) | json_docs,
    card=st.sampled_from(CARDS),
)
def test_decode_infer_request_gives_tensors_or_a_client_error(inputs, outputs, card):
    body = {"inputs": inputs, "outputs": outputs, "id": "r"}
    try:
        x, requested, rid = codec.decode_infer_request(body, card)
    except RuntimeHTTPError as exc:
        client_error(exc)
        return
    assert rid == "r"
    arrays = x.values() if isinstance(x, dict) else [x]
    for arr in arrays:
        assert hasattr(arr, "dtype") and hasattr(arr, "shape")
    if not card["inputs"] and isinstance(inputs, list) and len(inputs) == 1:
        assert list(x.shape) == inputs[0]["shape"]


# ---------------------------------------------------------------- routes (Flask test client)


@pytest.fixture(scope="module")
def client():
    app, _ = app_for(
        models.describe, max_request_bytes=64 * 1024, max_json_values=200, max_form_parts=8
    )
    return app.test_client()


def check_answer(response) -> None:
    assert response.status_code in (200, 400, 413, 415), (
        response.status_code,
        response.get_data()[:300],
    )
    body = response.get_json()
    if response.status_code >= 400:
        assert body["error"]
    else:
        assert "prediction" in body or "predictions" in body or "outputs" in body


BOUNDARY = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?",
    min_size=1,
    max_size=20,
).filter(lambda b: not b.endswith(" "))
header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'),
    max_size=12,
)
part = st.tuples(
    header_text,  # name
    st.none() | header_text,  # filename (a file part) or None (a field)
    st.none()
    | st.sampled_from(["text/plain; charset=utf-8", "application/json", "image/png", "x/y"]),
    st.binary(max_size=40),
)


def multipart(boundary: str, parts: list) -> bytes:
    out = b""
    for name, filename, ctype, content in parts:
        disp = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@settings(FUZZ, max_examples=400)
@given(
    boundary=BOUNDARY,
    parts=st.lists(part, max_size=12),
    edit=edits,
    declared=st.none() | BOUNDARY,
    route=st.sampled_from(["/predict", "/predict/batch", "/run"]),
)
def test_multipart_bodies_answer_a_result_or_a_client_error(
    client, boundary, parts, edit, declared, route
):
    body = mutate(multipart(boundary, parts), edit)
    ctype = f'multipart/form-data; boundary="{declared if declared is not None else boundary}"'
    check_answer(client.post(route, data=body, content_type=ctype))


@FUZZ
@given(
    body=st.binary(max_size=120) | json_docs.map(lambda d: json.dumps(d).encode()),
    ctype=st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
            "text/plain; charset=utf-16",
            "text/plain; charset=bogus",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "",
        ]
    ),
    route=st.sampled_from(["/predict", "/predict/batch", "/run", "/v2/models/describe/infer"]),
)
def test_any_body_and_content_type_on_every_route(client, body, ctype, route):
    check_answer(client.post(route, data=body, content_type=ctype or None))


@FUZZ
@given(inputs=st.lists(tensors(), max_size=2), edit=edits)
def test_infer_route(client, inputs, edit):
    body = mutate(json.dumps({"inputs": inputs}).encode(), edit)
    check_answer(
        client.post("/v2/models/describe/infer", data=body, content_type="application/json")
    )


# ---------------------------------------------------------------- request framing (worker)

header_line = st.tuples(
    st.sampled_from(
        ["Content-Length", "content-length", "Transfer-Encoding", "Expect", "Host", "X-A", "", " X"]
    ),
    st.sampled_from([":", ": ", " :", ""]),
    st.sampled_from(
        [
            "0",
            "5",
            "chunked",
            "gzip, chunked",
            "100-continue",
            "-1",
            "1 1",
            "",
            "\n5",
            "99999999999999999999",
        ]
    ),
)


@settings(FUZZ, max_examples=500)
@given(
    lines=st.lists(header_line, max_size=5), version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "X"])
)
def test_frame_head_frames_or_refuses(lines, version):
    head = (
        f"POST / {version}\r\n" + "".join(f"{n}{c}{v}\r\n" for n, c, v in lines) + "\r\n"
    ).encode()
    try:
        length, wants_continue, rewritten = frame_head(head, 1000)
    except Reject as reject:
        assert reject.status in (400, 413, 501) and reject.message
        return
    assert length == -1 or 0 <= length <= 1000
    if rewritten is not None:
        assert b"100-continue" not in rewritten.lower() and rewritten.endswith(b"\r\n\r\n")


def body_end(data: bytes, splits: list[int], max_body: int = 10_000):
    """Feed a chunked body to the worker's framing in pieces; where it ends, or Reject."""
    fake = SimpleNamespace(max_body=max_body)
    conn = Conn(None, ("127.0.0.1", 0), None)  # type: ignore[arg-type]
    conn.length = -1
    conn.head_len = conn.scan = 0
    cuts = sorted({s % (len(data) + 1) for s in splits} | {len(data)})
    for cut in cuts:
        conn.buf = bytearray(data[:cut])
        end = Worker._body_end(fake, conn)  # type: ignore[arg-type]
        if end is not None:
            return end
    return None


@settings(FUZZ, max_examples=500)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=30), max_size=6),
    ext=st.sampled_from(["", ";a=b", " ;x"]),
    trailers=st.lists(st.sampled_from(["X-T: 1", "Y: 2"]), max_size=2),
    after=st.binary(max_size=10),
    splits=st.lists(st.integers(0, 1000), max_size=6),
    edit=st.none() | edits,
)
def test_chunked_framing_finds_the_end_however_the_bytes_arrive(
    chunks, ext, trailers, after, splits, edit
):
    encoded = b"".join(f"{len(c):x}{ext}\r\n".encode() + c + b"\r\n" for c in chunks)
    encoded += b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"
    if edit is None:
        assert body_end(encoded + after, splits) == len(encoded)
        assert body_end(encoded + after, []) == len(encoded)
        return
    data = mutate(encoded, edit)
    assume(data != encoded)
    try:
        end = body_end(data, splits)
    except Reject as reject:
        assert reject.status in (400, 413)
        return
    assert end is None or 0 < end <= len(data)

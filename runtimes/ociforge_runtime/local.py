"""Run a model through the server's exact request path, without a server.

The builder's ``ociforge.test(model, sample)`` uses this to show, before any
image is built, what the image would answer.  The model is packaged with
``package_files`` and unpickled again (so an unpicklable model fails here, not
in production), then a sample is sent through the real Flask app with its
test client: the same decode -> predict -> encode code as over HTTP.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import pickle
from typing import Any

from . import codec
from .config import Settings
from .errors import ModelError
from .metrics import Registry
from .package import MODEL_JSON, MODEL_PKL, instantiate, normalize_card, package_files
from .predictor import Predictor


class LocalTestError(RuntimeError):
    """The server would have answered with an error; ``status`` and ``message`` say which.

    For a model exception (status 500) the original exception is ``__cause__``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _file_path(sample: Any) -> str | None:
    if isinstance(sample, os.PathLike) or (
        isinstance(sample, str) and len(sample) < 4096 and "\n" not in sample
    ):
        path = os.fspath(sample)
        if os.path.isfile(path):
            return path
    return None


def as_body(sample: Any) -> tuple[bytes, str]:
    """A sample -> (body, Content-Type), as a client would send it to ``/predict``.

    bytes -> application/octet-stream; a path to a file -> its content with the
    type guessed from the extension (.json parsed, text as str, else bytes);
    another str -> text/plain; anything else -> JSON.
    """
    if isinstance(sample, (bytes, bytearray, memoryview)):
        return bytes(sample), "application/octet-stream"
    path = _file_path(sample)
    if path is not None:
        with open(path, "rb") as fh:
            data = fh.read()
        guessed = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if guessed.startswith("text/"):
            guessed += "; charset=utf-8"
        return data, guessed
    if isinstance(sample, str):
        return sample.encode("utf-8"), "text/plain; charset=utf-8"
    return codec.dumps(sample), "application/json"


def _is_binary(sample: Any) -> bool:
    return isinstance(sample, (bytes, bytearray, memoryview)) or _file_path(sample) is not None


class LocalServer:
    """A loaded model plus the Flask app around it; reusable for several samples."""

    def __init__(
        self, model: Any, *, batch_size: int | None = None, card: dict[str, Any] | None = None
    ) -> None:
        from .app import create_app

        files = package_files(model, batch_size=batch_size, card=card)
        manifest = json.loads(files[MODEL_JSON])
        manifest["card"] = normalize_card(manifest["card"])
        obj = pickle.loads(files[MODEL_PKL])
        # The developer's own machine: errors carry the model's exception text (the server
        # answers a generic message unless OCIFORGE_ERROR_DETAILS=1); the exception itself
        # is the LocalTestError's __cause__.
        self.settings = Settings(workers=1, access_log=False, error_details=True)
        self.predictor = Predictor(
            self.settings, lambda: instantiate(obj, manifest), Registry(), manifest
        )
        self.predictor.load()
        self._errors: list[ModelError] = []
        self.app = create_app(
            self.predictor,
            self.settings,
            on_model_error=self._errors.append,
            log_model_errors=False,
        )
        self.client = self.app.test_client()

    def close(self) -> None:
        self.predictor.stop()

    def post(self, route: str, data: Any, content_type: str) -> Any:
        self._errors.clear()
        response = self.client.post(route, data=data, content_type=content_type)
        body = json.loads(response.get_data())
        if response.status_code >= 400:
            error = LocalTestError(response.status_code, body.get("error", ""))
            cause = self._errors[0].original if self._errors else None
            raise error from cause
        return body

    def test(self, sample: Any) -> Any:
        body, content_type = as_body(sample)
        return self.post("/predict", body, content_type)

    def test_batch(self, samples: list[Any]) -> Any:
        samples = list(samples)
        if any(_is_binary(s) for s in samples):
            parts = [(f"input-{i}", *as_body(s)) for i, s in enumerate(samples)]
            return self.post("/predict/batch", _multipart(parts), "multipart/form-data")
        return self.post("/predict/batch", codec.dumps(samples), "application/json")


def _multipart(parts: list[tuple[str, bytes, str]]) -> Any:
    """One file part per sample, in order (what a client's multipart upload looks like)."""
    from werkzeug.datastructures import FileStorage, MultiDict

    data: MultiDict[str, Any] = MultiDict()
    for name, body, content_type in parts:
        data.add(name, FileStorage(io.BytesIO(body), filename=name, content_type=content_type))
    return data


def test(
    model: Any, sample: Any, *, batch_size: int | None = None, card: dict[str, Any] | None = None
) -> Any:
    """What ``POST /predict`` with ``sample`` would answer: ``{"prediction": ...}`` (+ ``meta``).

    Raises ``LocalTestError`` (status, message; the model's exception as cause)
    where the server would answer an error, and ``TypeError``/``ValueError``
    for a model that cannot be packaged.
    """
    server = LocalServer(model, batch_size=batch_size, card=card)
    try:
        return server.test(sample)
    finally:
        server.close()


def test_batch(
    model: Any,
    samples: list[Any],
    *,
    batch_size: int | None = None,
    card: dict[str, Any] | None = None,
) -> Any:
    """What ``POST /predict/batch`` would answer: ``{"predictions": [...]}``, one per sample, in order."""
    server = LocalServer(model, batch_size=batch_size, card=card)
    try:
        return server.test_batch(samples)
    finally:
        server.close()

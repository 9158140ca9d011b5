"""The Flask application: routes, request decoding, error answers, request logs.

Routes are thin: they take a concurrency slot, decode with ``codec``, call the
``Predictor`` and encode with ``codec``.  Every error leaves as JSON ``{"error":
message}`` (the Open Inference Protocol's error shape) with a status that says whose
fault it is; a 500 also carries a ``request_id`` (and ``X-Request-Id``) that names
its log line, which alone holds the model's exception text and traceback.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from . import __version__, binary, codec, kserve_v1, logs, openapi, seldon
from .config import Settings
from .errors import (
    BadInput,
    Forbidden,
    ModelError,
    NotFound,
    RuntimeHTTPError,
    TooLarge,
    UnsupportedType,
)
from .metrics import LATENCY_BUCKETS, Exporter, Registry, render
from .predictor import Admission, Predictor

JSON = "application/json"
ROUTE_KEY = "ociforge.route"
INFER_RULES = ("/v2/models/<name>/infer", "/v2/models/<name>/versions/<version>/infer")
# the paths of INFER_RULES, as werkzeug's default converter ([^/]+) matches them
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
BINARY_HEADER_KEY = "HTTP_" + binary.HEADER.upper().replace("-", "_")  # as werkzeug looks it up


def _json(body: Any, status: int = 200) -> Response:
    return Response(codec.dumps(body), status=status, mimetype=JSON)


def _model_json(body: Any) -> Response:
    return Response(codec.encode_response(body), mimetype=JSON)


def new_request_id() -> str:
    return secrets.token_hex(8)


def body_limit_message(limit: int) -> str:
    return f"request body is larger than {limit} bytes (OCIFORGE_MAX_REQUEST_BYTES)"


def _read_terminated(stream: Any, limit: int) -> bytes | None:
    """A body of unknown length (chunked) read whole; None if it is over ``limit`` bytes."""
    chunks = []
    total = 0
    while True:
        chunk = stream.read(min(64 * 1024, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)


class RequestObserver:
    """WSGI middleware: one log line and the request metrics for every request.

    It wraps the whole Flask app so that the latency covers routing, error
    handling and encoding, and so that even a 404 or a 413 is counted.
    """

    def __init__(
        self,
        wsgi_app: Callable[..., Any],
        registry: Registry,
        access_log: bool,
        max_request_bytes: int | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.registry = registry
        self.access_log = access_log
        self.max_request_bytes = max_request_bytes
        registry.describe(
            "ociforge_requests_total", "counter", "HTTP requests by method, route and status"
        )
        registry.describe(
            "ociforge_request_duration_seconds",
            "histogram",
            "HTTP request latency by route",
            LATENCY_BUCKETS,
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start = time.perf_counter()
        status = [0]

        def observe_status(code: str, headers: list[Any], exc_info: Any = None) -> Any:
            status[0] = int(code[:3])
            return start_response(code, headers, exc_info)

        try:
            if environ.get("HTTP_TRANSFER_ENCODING") and not environ.get("CONTENT_LENGTH"):
                limited = self._chunked(environ, observe_status)
                if limited is not None:
                    return limited
            return self.wsgi_app(environ, observe_status)
        finally:
            latency = time.perf_counter() - start
            route = environ.get(ROUTE_KEY, "<unmatched>")
            method = environ.get("REQUEST_METHOD", "")
            self.registry.record_request(method, route, status[0], latency)
            if self.access_log:
                logs.request(
                    method, route, environ.get("PATH_INFO", ""), status[0], latency * 1000.0
                )

    def _chunked(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """A chunked body: read it whole within the body limit (werkzeug would silently cut
        it at the limit and the model would see a truncated body); 413 beyond."""
        limit = self.max_request_bytes
        if limit is None or "wsgi.input" not in environ:
            return None
        data = _read_terminated(environ["wsgi.input"], limit)
        if data is None:
            body = codec.dumps({"error": body_limit_message(limit)})
            start_response(
                "413 Request Entity Too Large",
                [
                    ("Content-Type", JSON),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ],
            )
            return [body]
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        return None


class RuntimeFlask(Flask):
    """Flask that notes the matched route template in the WSGI environ for ``RequestObserver``.

    Done as the request is dispatched rather than in a ``before_request`` hook, which Flask
    would run through ``ensure_sync`` and ``inspect`` on every request. A request that matched
    no route (404, 405) is noted as ``<unmatched>``.
    """

    # Flask's own dispatch of every route (``fast_infer``'s fallback), wrapped by nothing: the
    # reference the fast path's answers are compared with (tests/runtime/test_infer_fast_path.py)
    routed_wsgi_app: Callable[..., Any] | None = None

    def dispatch_request(self) -> Any:
        req = request._get_current_object()  # type: ignore[attr-defined]
        rule = req.url_rule
        req.environ[ROUTE_KEY] = rule.rule if rule is not None else "<unmatched>"
        return super().dispatch_request()


def create_app(
    predictor: Predictor,
    settings: Settings,
    *,
    exporter: Exporter | None = None,
    shutdown: Callable[[], None] | None = None,
    on_model_error: Callable[[ModelError], None] | None = None,
    log_model_errors: bool = True,
) -> Flask:
    """Build the WSGI app around a ``Predictor`` (which may still be loading)."""
    app = RuntimeFlask("ociforge_runtime")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_request_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_form_parts  # counted first, see check_form_parts
    started = time.time()
    openapi_doc: dict[str, bytes] = {}

    # ------------------------------------------------------------------ plumbing

    def error_body(
        exc: Exception, extra: dict[str, Any] | None = None, route: str | None = None
    ) -> Response:
        """The error answer for ``exc``; ``route`` (the matched route template) is taken from
        the request being answered when not given (``fast_infer`` answers outside Flask)."""
        request_id = None
        if isinstance(exc, ModelError):
            request_id = new_request_id()
            if log_model_errors:
                logs.event(
                    "model_error",
                    level="error",
                    request_id=request_id,
                    route=route if route is not None else request.environ.get(ROUTE_KEY),
                    error=exc.message,
                    traceback=logs.format_exception(exc.original or exc),
                )
            if on_model_error is not None:
                on_model_error(exc)
        if isinstance(exc, ModelError):
            status = exc.status
            message = exc.message if settings.error_details else exc.public
        elif isinstance(exc, RuntimeHTTPError):
            status, message = exc.status, exc.message
        elif isinstance(exc, RequestEntityTooLarge):
            status, message = 413, body_limit_message(settings.max_request_bytes)
        elif isinstance(exc, HTTPException):
            status, message = exc.code or 500, exc.description or exc.name
        else:
            request_id = new_request_id()
            status, message = 500, "internal server error"
            if settings.error_details:
                message = f"internal server error: {type(exc).__name__}: {exc}"
            logs.event(
                "internal_error",
                level="error",
                request_id=request_id,
                route=route if route is not None else request.environ.get(ROUTE_KEY),
                error=f"{type(exc).__name__}: {exc}",
                traceback=logs.format_exception(exc),
            )
        body = {**(extra or {}), "error": message}
        if request_id is not None:
            body["request_id"] = request_id
        response = _json(body, status)
        if request_id is not None:
            response.headers["X-Request-Id"] = request_id
        if status == 503:
            response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def handle_error(exc: Exception) -> Response:
        return error_body(exc)

    def check_model(name: str, version: str | None = None) -> None:
        card = predictor.card
        if name != card.get("name"):
            raise NotFound(f"model '{name}' not found; this server serves '{card.get('name')}'")
        if version is not None and version != card.get("version"):
            raise NotFound(
                f"model '{name}' has no version '{version}' (version: {card.get('version')})"
            )

    def check_form_parts(req: Any) -> None:
        """413 naming the part limit for a multipart body with too many parts.

        Counted on the raw body before werkzeug parses it (every part starts with the
        boundary delimiter), so the answer can say which limit was hit; werkzeug's own
        ``MAX_FORM_PARTS`` check would only say "too large".
        """
        boundary = req.mimetype_params.get("boundary")
        if not boundary:
            return  # werkzeug finds no parts: a 400 below
        data = req.get_data(cache=True)  # werkzeug then parses these bytes, not the stream
        delimiter = b"--" + boundary.encode("latin-1", "replace")
        parts = data.count(delimiter) - min(1, data.count(delimiter + b"--"))
        if parts > settings.max_form_parts:
            raise TooLarge(
                f"multipart body has more than {settings.max_form_parts} parts "
                "(OCIFORGE_MAX_FORM_PARTS)"
            )

    def read_input(batch: bool) -> Any:
        """Decode the body of /predict, /predict/batch and /run by Content-Type."""
        req = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        mimetype = req.mimetype
        if mimetype == "multipart/form-data":
            check_form_parts(req)
            parts: list[tuple[str, Any]] = list(req.form.items(multi=True))
            parts += [(k, f.read()) for k, f in req.files.items(multi=True)]
            if batch:
                if not parts:
                    raise BadInput("multipart batch has no parts: send one file or field per input")
                return [value for _, value in parts]
            return codec.decode_parts(parts)
        data = req.get_data(cache=False)
        if mimetype == "application/x-www-form-urlencoded":
            # curl -d sends JSON with this type; take it as JSON when it looks like JSON.
            if data.lstrip()[:1] in (b"{", b"["):
                mimetype = JSON
            else:
                if data.count(b"&") >= settings.max_form_parts:
                    raise TooLarge(
                        f"form body has more than {settings.max_form_parts} fields "
                        "(OCIFORGE_MAX_FORM_PARTS)"
                    )
                return codec.decode_parts(parse_qsl(data.decode("utf-8", "replace")))
        if batch:
            if not codec.is_json_type(mimetype):
                raise BadInput(
                    "/predict/batch takes a JSON list (Content-Type: application/json) "
                    "or multipart/form-data with one part per input"
                )
            return codec.decode_batch_json(data, settings.max_json_values)
        return codec.decode_body(
            mimetype, req.mimetype_params.get("charset"), data, settings.max_json_values
        )

    def admitted(decode: Callable[[], Any], call: Callable[[Any, Admission], Any]) -> Any:
        """Take a concurrency slot, then decode the body, then call the model.

        The slot comes first: decoding a large JSON body costs many times its size in
        memory, so no more bodies are decoded at once than requests are let in.
        """
        admission = predictor.admit()
        try:
            x = decode()
        except BaseException:
            admission.release()
            raise
        return call(x, admission)

    def with_meta(body: dict[str, Any]) -> dict[str, Any]:
        tags = predictor.tags()
        if tags is not None:
            body["meta"] = {"tags": tags}
        return body

    # ------------------------------------------------------------------ simple route

    def decode_limited(data: bytes) -> Any:
        return codec.decode_json(data, settings.max_json_values)

    # ------------------------------------------------------------------ Seldon protocol

    seldon_answer, seldon_form_view = seldon.register(
        app, predictor, admitted=admitted, error_response=error_body, decode_json=decode_limited
    )

    @app.post("/predict")
    def predict() -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        if req.mimetype == "multipart/form-data":
            check_form_parts(req)
        if seldon.wants_form(req):  # SeldonClient / Seldon Core: the message in a form field
            return seldon_form_view()
        answered: list[Response] = []

        def call(x: Any, admission: Admission) -> Any:
            if seldon.is_message(x) and (
                codec.is_json_type(req.mimetype)
                or req.mimetype == "application/x-www-form-urlencoded"  # curl -d '{"data": ...}'
            ):
                answered.append(seldon_answer(x, admission))  # a SeldonMessage body
                return None
            return predictor.predict(x, admission)

        result = admitted(lambda: read_input(batch=False), call)
        if answered:
            return answered[0]
        return _model_json(with_meta({"prediction": result}))

    @app.get("/predict")
    def predict_get() -> Response:
        """The Seldon wrapper's ``GET /predict?json=<SeldonMessage>`` (no query: a 400 in the
        wrapper's error form, as the wrapper answers)."""
        return seldon_form_view()

    @app.post("/predict/batch")
    def predict_batch() -> Response:
        results = admitted(lambda: read_input(batch=True), predictor.predict_many)
        return _model_json(with_meta({"predictions": results}))

    # ------------------------------------------------------------------ Open Inference Protocol

    @app.get("/v2/health/live")
    def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    def ready() -> Response:
        return _json({"ready": predictor.ready}, 200 if predictor.ready else 503)

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        return _json({"name": name, "ready": predictor.ready}, 200 if predictor.ready else 503)

    @app.get("/v2")
    def server_metadata() -> Response:
        return _json(
            {"name": "ociforge", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        card = predictor.card
        return _json(
            {
                "name": card["name"],
                "versions": [card["version"]],
                "platform": "ociforge",
                "inputs": [
                    {k: d[k] for k in ("name", "datatype", "shape")} for d in card["inputs"]
                ],
                "outputs": [
                    {k: d[k] for k in ("name", "datatype", "shape")} for d in card["outputs"]
                ],
            }
        )

    def read_body(environ: dict[str, Any]) -> bytes:
        """The body as Flask's ``request.get_data()`` reads it: werkzeug's input stream under
        the body limit. When the server ends the stream at the body's end
        (``wsgi.input_terminated``: gunicorn) and declared a length within the limit, the limit
        cannot be crossed, and the stream is read directly (werkzeug's wrapper only copies)."""
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            environ.get("wsgi.input_terminated")
            and length.isdigit()
            and int(length) <= settings.max_request_bytes
        ):
            return environ["wsgi.input"].read()
        return get_input_stream(environ, max_content_length=settings.max_request_bytes).read()

    def answer_infer(name: str, version: str | None, environ: dict[str, Any]) -> tuple[bytes, int]:
        """OIP v2 ``infer`` from the WSGI environ alone (the Flask route and ``fast_infer`` both
        call it): the response body and, when outputs are binary, the length of its JSON
        header (else -1)."""
        check_model(name, version)
        decoded: list[Any] = []

        def decode() -> Any:
            data = read_body(environ)
            size = binary.header_length(environ.get(BINARY_HEADER_KEY), len(data))
            arrays = None
            if size is None:
                body = codec.decode_json(data, settings.max_json_values)
            else:  # binary tensor extension: a JSON header, then the tensors' bytes
                view = memoryview(data)
                body = codec.decode_json(bytes(view[:size]), settings.max_json_values)
                arrays = binary.decode_inputs(body, view[size:])
            x, requested, request_id = codec.decode_infer_request(body, predictor.card, arrays)
            decoded[:] = [requested, request_id, binary.wanted(body)]
            return x

        result = admitted(decode, predictor.predict)
        requested, request_id, wanted = decoded
        blobs: list[bytes] = []
        body = codec.encode_infer_response(
            result, predictor.card, requested, request_id, wanted, blobs
        )
        header = codec.encode_response(body)
        if not blobs:
            return header, -1
        return b"".join([header, *blobs]), len(header)

    def infer_response(data: bytes, header_length: int) -> Response:
        if header_length < 0:
            return Response(data, mimetype=JSON)
        response = Response(data, mimetype="application/octet-stream")
        response.headers[binary.HEADER] = str(header_length)
        return response

    @app.post(INFER_RULES[0])
    @app.post(INFER_RULES[1])
    def infer(name: str, version: str | None = None) -> Response:
        return infer_response(*answer_infer(name, version, request.environ))

    def fast_infer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """The WSGI app in front of Flask: ``POST /v2/models/<name>[/versions/<v>]/infer`` for
        the served model, answered without Flask's request context, URL routing and response
        object (together about half of the server's own CPU time on a small prediction), with
        the same status, headers and body as the Flask route; any other request (another
        model's name: a 404 naming it, another method, another path) goes to Flask."""
        if environ.get("REQUEST_METHOD") == "POST":
            match = INFER_PATH.fullmatch(environ.get("PATH_INFO") or "")
            if match is not None:
                name, version = match.group(1), match.group(2)
                card = predictor.card
                if name == card.get("name") and (version is None or version == card.get("version")):
                    route = INFER_RULES[0] if version is None else INFER_RULES[1]
                    environ[ROUTE_KEY] = route
                    try:
                        data, header_length = answer_infer(name, version, environ)
                    except Exception as exc:  # noqa: BLE001 - answered as the app's error handler
                        return error_body(exc, route=route)(environ, start_response)
                    if header_length >= 0:
                        return infer_response(data, header_length)(environ, start_response)
                    # what Response(data, mimetype=JSON) sends (werkzeug's header order)
                    start_response(
                        "200 OK", [("Content-Type", JSON), ("Content-Length", str(len(data)))]
                    )
                    return [data]
        return flask_wsgi(environ, start_response)

    kserve_v1.register(app, predictor, admitted=admitted, decode_json=decode_limited)

    # ------------------------------------------------------------------ Chassis-style lifecycle

    @app.post("/run")
    def run() -> Response:
        try:
            result = admitted(lambda: read_input(batch=False), predictor.predict)
            return _model_json(with_meta({"success": True, "outputs": [result]}))
        except Exception as exc:  # noqa: BLE001 - answered Chassis-style, with success: false
            return error_body(exc, {"success": False})

    @app.get("/status")
    def status() -> Response:
        card = predictor.card
        manifest = predictor.model.manifest if predictor.model else predictor.manifest
        state = "ready" if predictor.ready else ("failed" if predictor.load_error else "loading")
        return _json(
            {
                "success": predictor.ready,
                "status": state,
                **card,
                "kind": manifest.get("kind"),
                "batch_size": predictor.batch_size,
                "ociforge_version": manifest.get("ociforge_version"),
                "runtime_version": __version__,
                "build": manifest.get("build", {}),
                "python": {"package": manifest.get("python"), "runtime": sys.version.split()[0]},
                "server": {
                    "workers": settings.workers,
                    "threads": settings.threads,
                    "uptime_s": round(time.time() - started, 3),
                },
            }
        )

    def check_not_cross_site(req: Any) -> None:
        """Refuse what a web page in a browser could send to ``/shutdown`` (CSRF).

        A form or a no-CORS ``fetch`` can only send the "simple" content types (form,
        multipart, text/plain, or none) without a CORS preflight, which this server never
        grants; browsers also say where a request comes from in ``Sec-Fetch-Site`` and
        ``Origin``. Operators' tools (curl, kubectl exec) send neither.
        """
        site = (req.headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site and site not in ("same-origin", "none"):
            raise Forbidden(f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origin = req.headers.get("Origin")
        if origin is not None:
            origin_host = urlsplit(origin.strip()).netloc.lower()
            if not origin_host or origin_host != (req.host or "").lower():
                raise Forbidden("cross-origin request refused (Origin does not match Host)")
        if not codec.is_json_type(req.mimetype):
            raise UnsupportedType(
                "POST /shutdown needs Content-Type: application/json "
                "(curl -X POST -H 'Content-Type: application/json' .../shutdown)"
            )

    @app.post("/shutdown")
    def shutdown_route() -> Response:
        if not settings.enable_shutdown:
            raise Forbidden("shutdown is disabled; set OCIFORGE_ENABLE_SHUTDOWN=1 to allow it")
        if shutdown is None:
            raise Forbidden("no server process to shut down")
        check_not_cross_site(request._get_current_object())  # type: ignore[attr-defined]
        logs.event("shutdown_requested", remote=request.remote_addr)
        shutdown()
        return _json({"shutting_down": True}, 202)

    # ------------------------------------------------------------------ operations

    @app.get("/metrics")
    def metrics() -> Response:
        if exporter is not None:
            text = exporter.collect()
        else:
            from .metrics import merge

            text = render(merge([predictor.registry.snapshot()], os.getpid()))
        return Response(
            text, mimetype="text/plain", content_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        if "doc" not in openapi_doc:
            openapi_doc["doc"] = codec.dumps(openapi.build(predictor.card))
        return Response(openapi_doc["doc"], mimetype=JSON)

    @app.get("/")
    def index() -> Response:
        card = predictor.card
        return _json(
            {
                "name": card.get("name"),
                "version": card.get("version"),
                "ready": predictor.ready,
                "openapi": "/openapi.json",
            }
        )

    flask_wsgi = app.routed_wsgi_app = app.wsgi_app
    app.wsgi_app = RequestObserver(  # type: ignore[method-assign]
        fast_infer, predictor.registry, settings.access_log, settings.max_request_bytes
    )
    return app

"""The Flask application: routes, request decoding, error answers, request logs.

Routes are thin: they decode with ``codec``, call the ``Predictor`` and encode
with ``codec``.  Every error leaves as JSON ``{"error": message}`` (the Open
Inference Protocol's error shape) with a status that says whose fault it is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import __version__, codec, logs, openapi
from .config import Settings
from .errors import BadInput, Forbidden, ModelError, NotFound, RuntimeHTTPError
from .metrics import LATENCY_BUCKETS, Exporter, Registry, render
from .predictor import Predictor

JSON = "application/json"
ROUTE_KEY = "ociforge.route"


def _json(body: Any, status: int = 200) -> Response:
    return Response(codec.dumps(body), status=status, mimetype=JSON)


def _model_json(body: Any) -> Response:
    return Response(codec.encode_response(body), mimetype=JSON)


class RequestObserver:
    """WSGI middleware: one log line and the request metrics for every request.

    It wraps the whole Flask app so that the latency covers routing, error
    handling and encoding, and so that even a 404 or a 413 is counted.
    """

    def __init__(self, wsgi_app: Callable[..., Any], registry: Registry, access_log: bool) -> None:
        self.wsgi_app = wsgi_app
        self.registry = registry
        self.access_log = access_log
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


class RuntimeFlask(Flask):
    """Flask that notes the matched route template in the WSGI environ for ``RequestObserver``.

    Done as the request is dispatched rather than in a ``before_request`` hook, which Flask
    would run through ``ensure_sync`` and ``inspect`` on every request. A request that matched
    no route (404, 405) is noted as ``<unmatched>``.
    """

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
    started = time.time()
    openapi_doc: dict[str, bytes] = {}

    # ------------------------------------------------------------------ plumbing

    def error_body(exc: Exception, extra: dict[str, Any] | None = None) -> Response:
        if isinstance(exc, ModelError) and log_model_errors:
            original = exc.original or exc
            logs.event(
                "model_error",
                level="error",
                route=request.environ.get(ROUTE_KEY),
                error=exc.message,
                traceback=logs.format_exception(original),
            )
        if isinstance(exc, ModelError) and on_model_error is not None:
            on_model_error(exc)
        if isinstance(exc, RuntimeHTTPError):
            status, message = exc.status, exc.message
        elif isinstance(exc, RequestEntityTooLarge):
            status = 413
            message = (
                f"request body is larger than {settings.max_request_bytes} bytes "
                "(OCIFORGE_MAX_REQUEST_BYTES)"
            )
        elif isinstance(exc, HTTPException):
            status, message = exc.code or 500, exc.description or exc.name
        else:
            status, message = 500, "internal server error"
            logs.event("internal_error", level="error", traceback=logs.format_exception(exc))
        response = _json({**(extra or {}), "error": message}, status)
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

    def read_input(batch: bool) -> Any:
        """Decode the body of /predict, /predict/batch and /run by Content-Type."""
        req = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        mimetype = req.mimetype
        if mimetype == "multipart/form-data":
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
                return codec.decode_parts(parse_qsl(data.decode("utf-8", "replace")))
        if batch:
            if not codec.is_json_type(mimetype):
                raise BadInput(
                    "/predict/batch takes a JSON list (Content-Type: application/json) "
                    "or multipart/form-data with one part per input"
                )
            return codec.decode_batch_json(data)
        return codec.decode_body(mimetype, req.mimetype_params.get("charset"), data)

    def with_meta(body: dict[str, Any]) -> dict[str, Any]:
        tags = predictor.tags()
        if tags is not None:
            body["meta"] = {"tags": tags}
        return body

    # ------------------------------------------------------------------ simple route

    @app.post("/predict")
    def predict() -> Response:
        x = read_input(batch=False)
        return _model_json(with_meta({"prediction": predictor.predict(x)}))

    @app.post("/predict/batch")
    def predict_batch() -> Response:
        xs = read_input(batch=True)
        return _model_json(with_meta({"predictions": predictor.predict_many(xs)}))

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
        return _json({"name": "ociforge", "version": __version__, "extensions": []})

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

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        body = codec.decode_json(request.get_data(cache=False))
        x, requested, request_id = codec.decode_infer_request(body, predictor.card)
        result = predictor.predict(x)
        return _model_json(
            codec.encode_infer_response(result, predictor.card, requested, request_id)
        )

    # ------------------------------------------------------------------ Chassis-style lifecycle

    @app.post("/run")
    def run() -> Response:
        try:
            x = read_input(batch=False)
            return _model_json(with_meta({"success": True, "outputs": [predictor.predict(x)]}))
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
                    "pid": os.getpid(),
                    "uid": os.geteuid(),
                    "uptime_s": round(time.time() - started, 3),
                },
            }
        )

    @app.post("/shutdown")
    def shutdown_route() -> Response:
        if not settings.enable_shutdown:
            raise Forbidden("shutdown is disabled; set OCIFORGE_ENABLE_SHUTDOWN=1 to allow it")
        if shutdown is None:
            raise Forbidden("no server process to shut down")
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

    app.wsgi_app = RequestObserver(app.wsgi_app, predictor.registry, settings.access_log)  # type: ignore[method-assign]
    return app

"""The Seldon protocol: SeldonMessage in and out, as the Seldon Core Python wrapper answers.

A model packaged "the Seldon way" (a class with ``predict(X, features_names)``, optional
``tags()``, ``metrics()``, ``class_names``, ``transform_input``, ``route``, ``aggregate``,
``send_feedback``, ``init_metadata``) moves over unchanged: the wrapper's routes answer the
same bodies (``data`` with ``names`` and ``ndarray`` or ``tensor``, ``binData``, ``strData``,
``jsonData``, and ``meta`` with ``tags``/``metrics``), in the form the request came in.

Request bodies are read as the wrapper's ``get_request`` reads them: multipart fields (``binData``
as a file, others as JSON, ``strData`` as text), a form or query field ``json``, or a JSON body.
Errors answer the wrapper's ``{"status": {"status": 1, "info", "code": -1, "reason"}}``.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from . import tftensor
from .errors import BadInput

PAYLOAD_KEYS = ("data", "binData", "strData", "jsonData")
MESSAGE_KEYS = frozenset((*PAYLOAD_KEYS, "meta"))


def _np() -> Any:
    import numpy

    return numpy


def is_message(obj: Any) -> bool:
    """A SeldonMessage-shaped JSON object: its keys are SeldonMessage fields, one a payload."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and set(obj) <= MESSAGE_KEYS
        and any(k in obj for k in PAYLOAD_KEYS)
    )


def read_request(req: Any, decode_json: Callable[[bytes], Any]) -> Any:
    """The request's JSON message, as the wrapper's ``flask_utils.get_request`` reads it."""
    if req.mimetype == "multipart/form-data":
        out: dict[str, Any] = {}
        for key, value in req.form.items():
            out[key] = value if key == "strData" else decode_json(value.encode("utf-8"))
        for key, f in req.files.items():
            data = f.read()
            if key == "binData":
                out[key] = base64.b64encode(data).decode("ascii")
            else:
                out[key] = data.decode("utf-8", "replace")
        return out
    field = None
    if req.mimetype == "application/x-www-form-urlencoded":
        field = req.form.get("json")
    if not field:
        field = req.args.get("json")
    if field:
        return decode_json(field.encode("utf-8"))
    return decode_json(req.get_data(cache=False))


def extract(msg: Any) -> tuple[Any, dict[str, Any] | None, dict[str, Any] | None, str]:
    """A SeldonMessage -> (features, meta, datadef, payload kind); 400 when it is not one."""
    if not isinstance(msg, dict):
        raise BadInput(
            f"invalid request data type: expected a SeldonMessage object, got {type(msg).__name__}"
        )
    meta = msg.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise BadInput("'meta' must be an object")
    if "data" in msg:
        datadef = msg["data"]
        if not isinstance(datadef, dict):
            raise BadInput("'data' must be an object with 'ndarray' or 'tensor'")
        np = _np()
        if "tensor" in datadef:
            tensor = datadef["tensor"]
            if not isinstance(tensor, dict) or "values" not in tensor or "shape" not in tensor:
                raise BadInput("'data.tensor' needs 'shape' and 'values'")
            try:
                features = np.array(tensor["values"]).reshape(tensor["shape"])
            except (ValueError, TypeError) as exc:
                raise BadInput(f"'data.tensor': values do not fit shape: {exc}") from None
        elif "ndarray" in datadef:
            try:
                features = np.array(datadef["ndarray"])
            except ValueError as exc:
                raise BadInput(f"'data.ndarray' is not a regular array: {exc}") from None
        elif "tftensor" in datadef:
            features = tftensor.decode(datadef["tftensor"])
        else:
            features = np.array([])
        names = datadef.get("names", [])
        if not isinstance(names, list):
            raise BadInput("'data.names' must be a list of strings")
        return features, meta, datadef, "data"
    if "jsonData" in msg:
        return msg["jsonData"], meta, None, "jsonData"
    if "strData" in msg:
        if not isinstance(msg["strData"], str):
            raise BadInput("'strData' must be a string")
        return msg["strData"], meta, None, "strData"
    if "binData" in msg:
        try:
            return base64.b64decode(msg["binData"], validate=True), meta, None, "binData"
        except (ValueError, TypeError):
            raise BadInput("'binData' is not base64") from None
    raise BadInput(
        "invalid request data type: a SeldonMessage needs 'data', 'binData', 'strData' or 'jsonData'"
    )


def names_of(datadef: dict[str, Any] | None) -> list[Any]:
    return list(datadef.get("names") or []) if datadef else []


def _user_names(obj: Any, attr: str) -> Any:
    value = getattr(obj, attr, None)
    if value is None:
        return None
    if inspect.ismethod(value) or inspect.isfunction(value):
        return value()
    return value


def call_user(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a user method as the wrapper does: with keyword arguments (``meta``...) when
    its signature takes them, else only the positional ones it takes."""
    try:
        sig = inspect.signature(method)
    except (TypeError, ValueError):
        return method(*args, **kwargs)
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        positional = len(args)
    else:
        positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = kwargs
    else:
        accepted = {k: v for k, v in kwargs.items() if k in sig.parameters}
    return method(*args[: max(1, positional)], **accepted)


def request_path() -> dict[str, str]:
    name = os.environ.get("PREDICTIVE_UNIT_ID")
    if not name:
        return {}
    return {name: os.environ.get("PREDICTIVE_UNIT_IMAGE", "")}


def construct(
    obj: Any,
    is_request: bool,
    request_msg: Any,
    result: Any,
    meta: dict[str, Any] | None,
    metrics: list[Any] | None,
    tags: dict[str, Any] | None,
) -> dict[str, Any]:
    """The answer as the wrapper's ``utils.construct_response_json`` builds it."""
    np = _np()
    response: dict[str, Any] = {}
    if isinstance(result, dict):
        response["jsonData"] = result
    elif isinstance(result, (bytes, bytearray)):
        response["binData"] = base64.b64encode(bytes(result)).decode("utf-8")
    elif isinstance(result, str):
        response["strData"] = result
    else:
        if isinstance(result, np.ndarray):
            arr, as_list = result, result.tolist()
        elif isinstance(result, (list, tuple)):
            arr, as_list = np.array(result), list(result)
        elif isinstance(result, (np.generic, int, float, bool)):
            arr = np.array(result)
            as_list = arr.tolist()
        else:
            raise TypeError(
                f"unknown data type returned as payload (must be list or np array): "
                f"{type(result).__name__}"
            )
        numeric = np.issubdtype(arr.dtype, np.number)
        data_in = request_msg.get("data") if isinstance(request_msg, dict) else None
        if data_in is not None:
            form_in = isinstance(data_in, dict) and numeric
            use_tensor = form_in and "tensor" in data_in
            use_tftensor = form_in and not use_tensor and "tftensor" in data_in
        else:
            use_tensor, use_tftensor = numeric, False
        if use_tensor:
            body: Any = {"values": arr.ravel().tolist(), "shape": list(arr.shape)}
            kind = "tensor"
        elif use_tftensor:
            body, kind = tftensor.encode(arr), "tftensor"
        else:
            body, kind = as_list, "ndarray"
        data: dict[str, Any] = {kind: body}
        if is_request:
            req_names = names_of(data_in if isinstance(data_in, dict) else None)
            names = _user_names(obj, "feature_names")
            data["names"] = list(names) if names is not None else req_names
        elif arr.ndim > 1:
            names = _user_names(obj, "class_names")
            data["names"] = (
                list(names) if names is not None else [f"t:{i}" for i in range(arr.shape[1])]
            )
        else:
            data["names"] = []
        response["data"] = data
    out_meta: dict[str, Any] = {}
    all_tags = dict((meta or {}).get("tags") or {})
    all_metrics = list((meta or {}).get("metrics") or [])
    if tags:
        all_tags.update(tags)
    if metrics:
        all_metrics.extend(metrics)
    if all_tags:
        out_meta["tags"] = all_tags
    if all_metrics:
        out_meta["metrics"] = all_metrics
    puid = (request_msg.get("meta") or {}).get("puid") if isinstance(request_msg, dict) else None
    if puid:
        out_meta["puid"] = puid
    path = {**request_path(), **((meta or {}).get("requestPath") or {})}
    if path:
        out_meta["requestPath"] = path
    response["meta"] = out_meta
    return response


def error_body(status: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The wrapper's error form (``SeldonMicroserviceException.to_dict``)."""
    reason = "MICROSERVICE_BAD_DATA" if status < 500 else "MICROSERVICE_INTERNAL_ERROR"
    body: dict[str, Any] = {"status": {"status": 1, "info": message, "code": -1, "reason": reason}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def parse_parameters(text: str | None) -> dict[str, Any]:
    """``PREDICTIVE_UNIT_PARAMETERS`` (JSON list of ``{name, value, type}``) -> keyword args.

    Types as the wrapper's ``microservice.parse_parameters``: INT, FLOAT, DOUBLE, STRING, BOOL
    (``true``/``yes``/``1``... as ``strtobool``). A bad value raises ``ValueError``.
    """
    if not text or not text.strip():
        return {}
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"PREDICTIVE_UNIT_PARAMETERS is not JSON: {exc}") from None
    if not isinstance(params, list):
        raise ValueError("PREDICTIVE_UNIT_PARAMETERS must be a JSON list of {name, value, type}")
    out: dict[str, Any] = {}
    for p in params:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise ValueError(f"PREDICTIVE_UNIT_PARAMETERS: bad entry {p!r}")
        name, value, kind = p["name"], p.get("value"), str(p.get("type", "STRING")).upper()
        try:
            if kind == "BOOL":
                text_value = str(value).strip().lower()
                if text_value in ("y", "yes", "t", "true", "on", "1"):
                    out[name] = True
                elif text_value in ("n", "no", "f", "false", "off", "0"):
                    out[name] = False
                else:
                    raise ValueError(f"not a boolean: {value!r}")
            elif kind == "INT":
                out[name] = int(value)
            elif kind in ("FLOAT", "DOUBLE"):
                out[name] = float(value)
            elif kind == "STRING":
                out[name] = str(value)
            else:
                raise ValueError(f"unknown type {kind!r} (INT, FLOAT, DOUBLE, STRING, BOOL)")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"PREDICTIVE_UNIT_PARAMETERS: parameter {name!r}: {exc}") from None
    return out


def metadata(obj: Any, card: dict[str, Any]) -> dict[str, Any]:
    """``GET /metadata``: defaults from the card, then ``init_metadata()``, then the
    ``MODEL_METADATA`` environment variable (JSON), as the wrapper merges them."""
    meta: dict[str, Any] = {
        "name": card.get("name", ""),
        "versions": [card.get("version", "")],
        "platform": "",
        "inputs": [],
        "outputs": [],
        "custom": {},
    }
    init = getattr(obj, "init_metadata", None)
    if callable(init):
        user = init()
        if isinstance(user, dict):
            meta.update(user)
    env = os.environ.get("MODEL_METADATA")
    if env:
        try:
            extra = json.loads(env)
        except ValueError:
            extra = None
        if isinstance(extra, dict):
            meta.update(extra)
    return meta


def env_flag(name: str) -> bool:
    """A boolean variable as the wrapper's ``getenv_as_bool`` reads it (1, true, t)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "t")


def read_raw_request(req: Any, decode_json: Callable[[bytes], Any]) -> Any:
    """The request as ``get_request(skip_decoding=True)`` gives it (``PAYLOAD_PASSTHROUGH``):
    the ``json`` form or query field as text, else the body's bytes (multipart still decoded)."""
    if req.mimetype == "multipart/form-data":
        return read_request(req, decode_json)
    field = None
    if req.mimetype == "application/x-www-form-urlencoded":
        field = req.form.get("json")
    if not field:
        field = req.args.get("json")
    if field:
        return field
    return req.get_data(cache=False)


def not_implemented(exc: BaseException) -> bool:
    """Raised by a ``*_raw`` hook of a ``SeldonComponent`` subclass that does not override it:
    the wrapper then goes on with the ordinary method. Matched by name, so an image needs no
    seldon-core for the ordinary case."""
    return any(cls.__name__ == "SeldonNotImplementedError" for cls in type(exc).__mro__)


_NOT_IMPLEMENTED = object()


def as_feedback_proto(msg: dict[str, Any]) -> Any:
    """The wrapper hands ``send_feedback_raw`` a ``prediction_pb2.Feedback``: given one when the
    image has seldon-core (the model's own requirement, never ociforge's: looked up by name,
    so neither the runtime nor its tests depend on it), else the JSON object."""
    import importlib

    try:
        json_to_feedback = importlib.import_module("seldon_core.utils").json_to_feedback
    except Exception:  # noqa: BLE001 - not installed (or broken): the dict, documented
        return msg
    try:
        return json_to_feedback(msg)
    except Exception as exc:  # noqa: BLE001 - its parse errors: a 400 as the wrapper's
        raise BadInput(f"feedback is not a Seldon Feedback message: {exc}") from None


def register(
    app: Any, predictor: Any, *, admitted: Any, error_response: Any, decode_json: Any
) -> Any:
    """Add the wrapper's routes to ``app``; returns ``answer_predict(msg, admission)`` for the
    SeldonMessage-shaped requests that arrive on ``POST /predict``, and the view answering one
    whose message is in a form field."""
    from flask import Response, request

    from .codec import encode_response
    from .errors import ModelError, NotFound
    from .metrics import record_model_metrics

    cache: dict[str, Any] = {}
    passthrough = env_flag("PAYLOAD_PASSTHROUGH")
    include_metrics = (
        os.environ.get("INCLUDE_METRICS_IN_CLIENT_RESPONSE", "true").strip().lower() == "true"
    )

    def instance() -> Any:
        model = predictor.model
        return model.instance if model is not None else None

    def to_response(body: Any) -> Any:
        if isinstance(body, Response):  # a raw hook's own answer
            return body
        return Response(encode_response(body), mimetype="application/json")

    def raw_answer(result: Any, method: str) -> Any:
        """What a ``*_raw`` hook returned, answered as the wrapper answers it: a dict (or a
        protobuf message, as JSON) as it is, with its ``meta.metrics`` exported (and dropped
        from the answer when ``INCLUDE_METRICS_IN_CLIENT_RESPONSE`` is not true); text or bytes
        verbatim (``PAYLOAD_PASSTHROUGH``); ``predict_raw``'s ``status.code`` as the status."""
        if isinstance(result, (bytes, bytearray, str)):
            return Response(
                bytes(result) if not isinstance(result, str) else result,
                mimetype="application/json",
            )
        if hasattr(result, "DESCRIPTOR") and hasattr(result, "SerializeToString"):
            from google.protobuf import json_format

            result = json_format.MessageToDict(result)
        if not isinstance(result, (dict, list)):
            raise ModelError(
                f"{method} returned {type(result).__name__}: expected a dict (a SeldonMessage)",
                public=f"the model's {method} did not return a SeldonMessage",
            )
        status = 200
        if isinstance(result, dict):
            meta = result.get("meta")
            metrics = meta.get("metrics") if isinstance(meta, dict) else None
            if isinstance(metrics, list) and metrics:
                record_model_metrics(predictor.registry, metrics)
                if not include_metrics:
                    del meta["metrics"]
            code = (result.get("status") or {}) if method == "predict_raw" else {}
            code = code.get("code") if isinstance(code, dict) else None
            if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                status = code
        return Response(encode_response(result), status=status, mimetype="application/json")

    def try_raw(method: str, arg: Any, admission: Any) -> tuple[Any, Any]:
        """Call the model's ``method`` (``predict_raw``...) with the whole request when it has
        one, as the wrapper does before anything else: ``(answer, admission)``, the answer None
        when there is no such hook or it raised ``SeldonNotImplementedError`` (then the
        admission is a fresh one for the ordinary method, the first having been used)."""
        fn = getattr(instance(), method, None)
        if not callable(fn):
            return None, admission
        hook_arg = as_feedback_proto(arg) if method == "send_feedback_raw" else arg

        def run() -> Any:
            try:
                return fn(hook_arg)
            except Exception as exc:
                if not_implemented(exc):
                    return _NOT_IMPLEMENTED
                raise

        result = predictor.call(run, admission)
        if result is _NOT_IMPLEMENTED:
            return None, predictor.admit()
        return raw_answer(result, method), admission

    def decoded(msg: Any) -> Any:
        """A passed-through payload (text or bytes) decoded, for the ordinary method."""
        if isinstance(msg, str):
            return decode_json(msg.encode("utf-8"))
        if isinstance(msg, (bytes, bytearray)):
            return decode_json(bytes(msg))
        return msg

    def seldon_error(exc: Exception) -> Any:
        plain = error_response(exc)
        try:
            body = json.loads(plain.get_data())
        except ValueError:
            body = {}
        out = error_body(plain.status_code, body.get("error", ""), body.get("request_id"))
        response = Response(json.dumps(out), status=plain.status_code, mimetype="application/json")
        for key in ("X-Request-Id", "Retry-After"):
            if key in plain.headers:
                response.headers[key] = plain.headers[key]
        return response

    def user_call(fn: Callable[[], Any], admission: Any) -> tuple[Any, Any]:
        """Run ``fn`` under the admission's slot and deadline, then the model's ``metrics()``."""
        model = predictor.model

        def run() -> tuple[Any, Any]:
            result = fn()
            metrics = model.metrics() if model.metrics is not None else None
            if metrics is not None:
                record_model_metrics(predictor.registry, metrics)
            return result, metrics if isinstance(metrics, list) else None

        return predictor.call(run, admission)

    def build(obj: Any, is_request: bool, msg: Any, result: Any, meta: Any, metrics: Any) -> Any:
        try:
            return construct(obj, is_request, msg, result, meta, metrics, predictor.tags())
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"model output cannot be encoded as a SeldonMessage: {exc}",
                exc,
                public="the model's output cannot be encoded as a SeldonMessage",
            ) from exc

    def seldon_route(
        handler: Callable[[Any, Any], Any], *, raw_payload: bool = False
    ) -> Callable[[], Any]:
        """A route: take a slot, read and check the message, call ``handler(msg, admission)``.
        ``raw_payload``: under ``PAYLOAD_PASSTHROUGH``, a model with ``predict_raw`` gets the
        payload undecoded."""

        def read() -> Any:
            if raw_payload and passthrough and callable(getattr(instance(), "predict_raw", None)):
                return read_raw_request(request, decode_json)
            return read_request(request, decode_json)

        def view() -> Any:
            try:
                return to_response(admitted(read, handler))
            except Exception as exc:  # noqa: BLE001 - answered in the wrapper's error form
                return seldon_error(exc)

        return view

    def guarded(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def run(msg: Any, admission: Any) -> Any:
            try:
                return handler(msg, admission)
            finally:
                admission.release()  # a no-op once the model call took it

        return run

    def raw_first(hook: str) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
        """The wrapper's order for every service method: the model's ``hook`` (``predict_raw``,
        ...) gets the whole message first; the decorated ordinary method runs only when there
        is no hook or it declined, with the fresh admission, released after it."""

        def wrap(plain: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def handler(msg: Any, admission: Any) -> Any:
                answer, admission = try_raw(hook, msg, admission)
                if answer is not None:
                    return answer
                try:
                    return plain(msg, admission)
                finally:
                    admission.release()  # the fresh one after a raw hook, when nothing took it

            return handler

        return wrap

    @guarded
    @raw_first("predict_raw")
    def do_predict(msg: Any, admission: Any) -> Any:
        msg = decoded(msg)
        features, meta, datadef, _ = extract(msg)
        model, obj = predictor.model, instance()
        if model.kind in ("function", "batch") or predictor.batch_size:
            result, metrics = predictor.predict(features, admission), None
        else:
            names = names_of(datadef)
            result, metrics = user_call(
                lambda: call_user(obj.predict, features, names, meta=meta), admission
            )
        return build(obj, False, msg, result, meta, metrics)

    def answer_predict(msg: Any, admission: Any) -> Any:
        try:
            return to_response(do_predict(msg, admission))
        except Exception as exc:  # noqa: BLE001
            return seldon_error(exc)

    def transform(method: str) -> Callable[[Any, Any], Any]:
        @guarded
        @raw_first(f"{method}_raw")
        def handler(msg: Any, admission: Any) -> Any:
            features, meta, datadef, _ = extract(msg)
            obj = instance()
            fn = getattr(obj, method, None)
            names = names_of(datadef)
            if callable(fn):
                result, metrics = user_call(
                    lambda: call_user(fn, features, names, meta=meta), admission
                )
            else:  # the wrapper passes the payload through
                result, metrics = features, None
            return build(obj, method == "transform_input", msg, result, meta, metrics)

        return handler

    def needs(method: str) -> Callable[[], Any]:
        obj = instance()
        fn = getattr(obj, method, None)
        if not callable(fn):
            raise NotFound(f"the model has no {method}() method")
        return fn

    @guarded
    @raw_first("route_raw")
    def do_route(msg: Any, admission: Any) -> Any:
        features, meta, datadef, _ = extract(msg)
        fn = needs("route")
        names = names_of(datadef)
        result, metrics = user_call(lambda: call_user(fn, features, names, meta=meta), admission)
        if not isinstance(result, int) or isinstance(result, bool):
            raise ModelError(
                f"routing response must be int but got {result!r}",
                public="the model's route() did not return an int",
            )
        return build(instance(), False, msg, _np().array([[result]]), None, metrics)

    @guarded
    @raw_first("aggregate_raw")
    def do_aggregate(msg: Any, admission: Any) -> Any:
        if isinstance(msg, dict) and isinstance(msg.get("seldonMessages"), list):
            msgs = msg["seldonMessages"]
        elif isinstance(msg, list):
            msgs = msg
        else:
            raise BadInput('aggregate takes a SeldonMessageList: {"seldonMessages": [...]}')
        if not msgs:
            raise BadInput("aggregate: 'seldonMessages' is empty")
        parts = [extract(m) for m in msgs]
        fn = needs("aggregate")
        features = [p[0] for p in parts]
        names = [names_of(p[2]) for p in parts]
        result, metrics = user_call(lambda: call_user(fn, features, names), admission)
        tags: dict[str, Any] = {}
        path: dict[str, Any] = {}
        all_metrics: list[Any] = []
        for _, meta, _, _ in parts:
            if meta:
                tags.update(meta.get("tags") or {})
                path.update(meta.get("requestPath") or {})
                all_metrics.extend(meta.get("metrics") or [])
        merged = {"tags": tags, "requestPath": path}
        return build(instance(), False, msgs[0], result, merged, all_metrics + (metrics or []))

    @guarded
    def do_feedback(msg: Any, admission: Any) -> Any:
        if not isinstance(msg, dict):
            raise BadInput("feedback must be an object: {request, response, reward, truth}")
        return feedback(msg, admission)

    @raw_first("send_feedback_raw")
    def feedback(msg: Any, admission: Any) -> Any:
        req_msg = msg.get("request") or {}
        features, _, datadef, _ = extract(req_msg) if req_msg else (None, None, None, "")
        truth = extract(msg["truth"])[0] if msg.get("truth") else None
        reward = msg.get("reward", 0.0)
        if not isinstance(reward, (int, float)) or isinstance(reward, bool):
            raise BadInput("'reward' must be a number")
        routing = (((msg.get("response") or {}).get("meta") or {}).get("routing") or {}).get(
            os.environ.get("PREDICTIVE_UNIT_ID", "")
        )
        obj = instance()
        fn = getattr(obj, "send_feedback", None)
        names = names_of(datadef)
        if callable(fn):
            result, metrics = user_call(
                lambda: call_user(fn, features, names, reward, truth, routing=routing), admission
            )
        else:
            result, metrics = None, None
        if result is None:
            result = _np().array([])
        return build(obj, False, req_msg, result, None, metrics)

    cache["predict"] = seldon_route(do_predict, raw_payload=True)

    routes = [
        ("/api/v1.0/predictions", "seldon_predictions", do_predict, ["POST"]),
        ("/api/v0.1/predictions", "seldon_predictions_v01", do_predict, ["POST"]),
        ("/api/v1.0/feedback", "seldon_feedback", do_feedback, ["POST"]),
        ("/api/v0.1/feedback", "seldon_feedback_v01", do_feedback, ["POST"]),
        ("/send-feedback", "seldon_send_feedback", do_feedback, ["GET", "POST"]),
        (
            "/transform-input",
            "seldon_transform_input",
            transform("transform_input"),
            ["GET", "POST"],
        ),
        (
            "/transform-output",
            "seldon_transform_output",
            transform("transform_output"),
            ["GET", "POST"],
        ),
        ("/route", "seldon_route", do_route, ["GET", "POST"]),
        ("/aggregate", "seldon_aggregate", do_aggregate, ["GET", "POST"]),
    ]
    for rule, endpoint, handler, methods in routes:
        view = seldon_route(handler, raw_payload=handler is do_predict)
        app.add_url_rule(rule, endpoint, view, methods=methods)

    def ping() -> Any:
        return Response("pong", mimetype="text/html")

    def health_status() -> Any:
        try:
            if not predictor.ready:
                from .errors import NotReady

                raise NotReady("model is still loading")
            obj = instance()
            raw = getattr(obj, "health_status_raw", None)
            if callable(raw):  # the wrapper answers it as it is
                try:
                    return to_response(raw_answer(raw(), "health_status_raw"))
                except Exception as exc:
                    if not not_implemented(exc):
                        raise
            fn = getattr(obj, "health_status", None)
            result = fn() if callable(fn) else "healthy"
            return to_response(build(obj, False, {}, result, None, None))
        except Exception as exc:  # noqa: BLE001
            return seldon_error(exc)

    def metadata_view() -> Any:
        try:
            if "metadata" not in cache:
                if not predictor.ready:
                    from .errors import NotReady

                    raise NotReady("model is still loading")
                cache["metadata"] = metadata(instance(), predictor.card)
            return to_response(cache["metadata"])
        except Exception as exc:  # noqa: BLE001
            return seldon_error(exc)

    app.add_url_rule("/health/ping", "seldon_ping", ping, methods=["GET"])
    app.add_url_rule("/health/status", "seldon_status", health_status, methods=["GET"])
    app.add_url_rule("/api/v1.0/health/status", "seldon_status_v1", health_status, methods=["GET"])
    app.add_url_rule("/metadata", "seldon_metadata", metadata_view, methods=["GET"])
    app.add_url_rule("/api/v1.0/metadata", "seldon_metadata_v1", metadata_view, methods=["GET"])
    return answer_predict, cache["predict"]


def wants_form(req: Any) -> bool:
    """A ``/predict`` request carrying its message in a ``json`` form or query field (what
    ``SeldonClient`` and Seldon Core's executor send): answered the Seldon way."""
    if req.args.get("json"):
        return True
    if req.mimetype == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        data = req.get_data(cache=True)
        if data.lstrip()[:1] in (b"{", b"["):
            return False
        try:
            keys = {k for k, _ in parse_qsl(data.decode("utf-8", "replace"))}
        except ValueError:
            return False
        return keys == {"json"}
    if req.mimetype == "multipart/form-data":
        keys = set(req.form) | set(req.files)
        return bool(keys) and keys <= MESSAGE_KEYS and any(k in keys for k in PAYLOAD_KEYS)
    return False

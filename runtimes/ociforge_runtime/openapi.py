"""The OpenAPI 3.0 document served at ``/openapi.json``.

Generated from the model card so clients (and API gateways) see the real
model name in paths and the declared tensors in the metadata examples.
"""

from __future__ import annotations

from typing import Any

from . import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input (malformed JSON, wrong tensor shape or datatype, missing field)",
        403: "Disabled, or a cross-site request",
        404: "Unknown model or route",
        408: "The request did not arrive in full in time (OCIFORGE_READ_TIMEOUT)",
        413: "Over a limit: body bytes (OCIFORGE_MAX_REQUEST_BYTES), JSON values "
        "(OCIFORGE_MAX_JSON_VALUES) or multipart parts (OCIFORGE_MAX_FORM_PARTS)",
        415: "Not a JSON content type",
        500: "The model raised: a generic message and a request_id (also in X-Request-Id) that "
        "names the server's log line with the details",
        503: "Model still loading, or too many requests in flight",
        504: "Prediction timed out (OCIFORGE_TIMEOUT)",
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _get(summary: str, schema: dict[str, Any], *errors: int, tag: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "responses": {"200": _json(schema, "OK"), **_errors(*errors)},
        }
    }


_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {}},
        "text/plain": {"schema": {"type": "string"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "additionalProperties": {"type": "string", "format": "binary"},
            }
        },
    },
}
_PREDICT_ERRORS = (400, 408, 413, 500, 503, 504)


def build(card: dict[str, Any]) -> dict[str, Any]:
    """The whole document for a model card."""
    name = card.get("name", "model")
    tensor_spec = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            **tensor_spec["properties"],
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    model_meta = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": tensor_spec},
            "outputs": {"type": "array", "items": tensor_spec},
        },
        "example": {
            "name": name,
            "versions": [card.get("version", "1")],
            "platform": "ociforge",
            "inputs": card.get("inputs", []),
            "outputs": card.get("outputs", []),
        },
    }
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
            "outputs": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
    }
    infer_response = {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        },
    }
    ready = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    v2 = "Open Inference Protocol (KServe v2)"
    model_path = "/v2/models/{model_name}"
    version_path = "/v2/models/{model_name}/versions/{model_version}"
    infer_op = {
        "post": {
            "summary": "Run inference on v2 tensors",
            "tags": [v2],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}
                },
            },
            "responses": {
                "200": _json({"$ref": "#/components/schemas/InferResponse"}, "Outputs"),
                **_errors(400, 404, 408, 413, 500, 503, 504),
            },
        }
    }
    name_param = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [name]},
    }
    version_param = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }

    def with_params(item: dict[str, Any], *params: dict[str, Any]) -> dict[str, Any]:
        return {**item, "parameters": list(params)}

    paths: dict[str, Any] = {
        "/v2/health/live": _get(
            "Server liveness",
            {"type": "object", "properties": {"live": {"type": "boolean"}}},
            tag=v2,
        ),
        "/v2/health/ready": _get("Server readiness (model loaded)", ready, 503, tag=v2),
        "/v2": _get(
            "Server metadata",
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                },
            },
            tag=v2,
        ),
        model_path: with_params(_get("Model metadata", model_meta, 404, tag=v2), name_param),
        f"{model_path}/ready": with_params(
            _get("Model readiness", ready, 404, 503, tag=v2), name_param
        ),
        f"{model_path}/infer": with_params(infer_op, name_param),
        version_path: with_params(
            _get("Model metadata", model_meta, 404, tag=v2), name_param, version_param
        ),
        f"{version_path}/ready": with_params(
            _get("Model readiness", ready, 404, 503, tag=v2), name_param, version_param
        ),
        f"{version_path}/infer": with_params(infer_op, name_param, version_param),
        "/predict": {
            "post": {
                "summary": "Predict one input (JSON, raw bytes, text or multipart upload)",
                "tags": ["simple"],
                "requestBody": _PREDICT_BODY,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"prediction": {}, "meta": {"type": "object"}},
                        },
                        "The prediction",
                    ),
                    **_errors(*_PREDICT_ERRORS),
                },
            },
            "get": {
                "summary": "Seldon wrapper form: a SeldonMessage in the 'json' query parameter",
                "tags": ["seldon"],
                "parameters": [
                    {"name": "json", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json(_SELDON_MESSAGE, "The SeldonMessage answer"),
                    **_errors(400, 500, 503, 504),
                },
            },
        },
        "/predict/batch": {
            "post": {
                "summary": "Predict a list of inputs (JSON list, or one multipart part per input)",
                "tags": ["simple"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {}}},
                        "multipart/form-data": _PREDICT_BODY["content"]["multipart/form-data"],
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"predictions": {"type": "array", "items": {}}},
                        },
                        "One prediction per input, in order",
                    ),
                    **_errors(*_PREDICT_ERRORS),
                },
            }
        },
        "/run": {
            "post": {
                "summary": "Chassis-style run: same inputs as /predict",
                "tags": ["lifecycle"],
                "requestBody": _PREDICT_BODY,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "success": {"type": "boolean"},
                                "outputs": {"type": "array", "items": {}},
                            },
                        },
                        "Outputs",
                    ),
                    **_errors(*_PREDICT_ERRORS),
                },
            }
        },
        "/status": _get("Model card, versions and build info", {"type": "object"}, tag="lifecycle"),
        "/shutdown": {
            "post": {
                "summary": "Graceful stop (only when OCIFORGE_ENABLE_SHUTDOWN=1; "
                "Content-Type: application/json, not cross-site)",
                "tags": ["lifecycle"],
                "responses": {
                    "202": _json({"type": "object"}, "Shutting down"),
                    **_errors(403, 415),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": _get("This document", {"type": "object"}, tag="operations"),
        "/": _get("Index: model name and where to look next", {"type": "object"}, tag="operations"),
    }
    paths.update(_protocol_paths(name_param))
    binary_note = (
        "Binary tensor extension: with an Inference-Header-Content-Length header the body is "
        "that many bytes of JSON, then the raw bytes of each input that has "
        "parameters.binary_data_size (little-endian, row-major; BOOL 1 byte; BYTES elements "
        "with a 4-byte little-endian length). Outputs asked for with binary_data (or "
        "binary_data_output) are answered the same way (Content-Type application/octet-stream)."
    )
    for path in (f"{model_path}/infer", f"{version_path}/infer"):
        paths[path]["post"] = {**paths[path]["post"], "description": binary_note}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{name} (ociforge model server)",
            "version": str(card.get("version", "1")),
            "description": card.get("description") or f"ociforge runtime {__version__}",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "request_id": {
                            "type": "string",
                            "description": "500 only: names the server's log line",
                        },
                    },
                },
                "Tensor": tensor,
                "InferRequest": infer_request,
                "InferResponse": infer_response,
            }
        },
    }


_SELDON_MESSAGE = {
    "type": "object",
    "description": "SeldonMessage: one of data ({names, ndarray | tensor {shape, values}}), "
    "binData (base64), strData, jsonData; and meta ({puid, tags, metrics, requestPath})",
    "properties": {
        "data": {"type": "object"},
        "binData": {"type": "string", "format": "byte"},
        "strData": {"type": "string"},
        "jsonData": {},
        "meta": {"type": "object"},
    },
}
_SELDON_ERROR = {
    "type": "object",
    "properties": {
        "status": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "info": {"type": "string"},
                "code": {"type": "integer"},
                "reason": {"type": "string"},
            },
        }
    },
}


def _seldon_op(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = body or _SELDON_MESSAGE
    return {
        "summary": summary,
        "tags": ["seldon"],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {"json": {"type": "string"}}}
                },
                "multipart/form-data": {"schema": {"type": "object"}},
            },
        },
        "responses": {
            "200": _json(_SELDON_MESSAGE, "SeldonMessage, in the form the request came in"),
            "400": _json(_SELDON_ERROR, "Bad input (reason MICROSERVICE_BAD_DATA)"),
            "404": _json(_SELDON_ERROR, "The model has no such method"),
            "500": _json(_SELDON_ERROR, "The model raised (reason MICROSERVICE_INTERNAL_ERROR)"),
            "503": _json(_SELDON_ERROR, "Model still loading, or too busy"),
        },
    }


def _protocol_paths(name_param: dict[str, Any]) -> dict[str, Any]:
    """The Seldon wrapper's routes and KServe's v1 data plane."""
    feedback = {
        "type": "object",
        "properties": {
            "request": _SELDON_MESSAGE,
            "response": _SELDON_MESSAGE,
            "reward": {"type": "number"},
            "truth": _SELDON_MESSAGE,
        },
    }
    message_list = {
        "type": "object",
        "properties": {"seldonMessages": {"type": "array", "items": _SELDON_MESSAGE}},
    }
    seldon_get = {"type": "object"}
    paths: dict[str, Any] = {
        "/api/v1.0/predictions": {"post": _seldon_op("Seldon protocol prediction")},
        "/api/v0.1/predictions": {"post": _seldon_op("Seldon protocol prediction (v0.1)")},
        "/api/v1.0/feedback": {"post": _seldon_op("Seldon feedback (send_feedback)", feedback)},
        "/api/v0.1/feedback": {"post": _seldon_op("Seldon feedback (v0.1)", feedback)},
        "/send-feedback": {"post": _seldon_op("Seldon microservice feedback", feedback)},
        "/transform-input": {"post": _seldon_op("Seldon transform_input (else passed through)")},
        "/transform-output": {"post": _seldon_op("Seldon transform_output (else passed through)")},
        "/route": {"post": _seldon_op("Seldon router: route() -> branch index")},
        "/aggregate": {"post": _seldon_op("Seldon combiner: aggregate()", message_list)},
        "/health/ping": {
            "get": {
                "summary": "Seldon liveness: answers pong",
                "tags": ["seldon"],
                "responses": {
                    "200": {"description": "pong", "content": {"text/html": {"schema": {}}}}
                },
            }
        },
        "/health/status": _get("Seldon health_status()", seldon_get, 503, tag="seldon"),
        "/api/v1.0/health/status": _get("Seldon health_status()", seldon_get, 503, tag="seldon"),
        "/metadata": _get("Seldon model metadata (init_metadata())", seldon_get, tag="seldon"),
        "/api/v1.0/metadata": _get("Seldon model metadata", seldon_get, tag="seldon"),
        "/v1/models": _get(
            "KServe v1: served models",
            {"type": "object", "properties": {"models": {"type": "array"}}},
            tag="kserve-v1",
        ),
        "/v1/models/{model_name}": {
            **_get(
                "KServe v1: model readiness",
                {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
                },
                404,
                503,
                tag="kserve-v1",
            ),
            "parameters": [name_param],
        },
        "/v1/models/{model_name}:predict": {
            "post": {
                "summary": "KServe v1 predict: instances (or inputs) -> predictions",
                "tags": ["kserve-v1"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "instances": {"type": "array", "items": {}},
                                    "inputs": {"type": "array", "items": {}},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"predictions": {"type": "array", "items": {}}},
                        },
                        "One prediction per instance",
                    ),
                    **_errors(*_PREDICT_ERRORS, 404),
                },
            },
            "parameters": [name_param],
        },
    }
    return paths

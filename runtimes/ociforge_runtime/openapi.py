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
        403: "Disabled",
        404: "Unknown model or route",
        413: "Request body too large (OCIFORGE_MAX_REQUEST_BYTES)",
        500: "The model raised; details are in the server log",
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
_PREDICT_ERRORS = (400, 413, 500, 503, 504)


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
                **_errors(400, 404, 413, 500, 503, 504),
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
            }
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
                "summary": "Graceful stop (only when OCIFORGE_ENABLE_SHUTDOWN=1)",
                "tags": ["lifecycle"],
                "responses": {"202": _json({"type": "object"}, "Shutting down"), **_errors(403)},
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
                    "properties": {"error": {"type": "string"}},
                },
                "Tensor": tensor,
                "InferRequest": infer_request,
                "InferResponse": infer_response,
            }
        },
    }

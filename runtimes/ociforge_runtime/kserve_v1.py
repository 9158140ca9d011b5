"""KServe's v1 data plane (the TensorFlow Serving style REST API KServe's Python server offers).

* ``GET /v1/models`` -> ``{"models": [name]}``
* ``GET /v1/models/{name}`` -> ``{"name": name, "ready": true}`` (503 while loading)
* ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` (or ``{"inputs": [...]}``)
  -> ``{"predictions": [...]}``.

How the instances reach the model: an object or class model (sklearn style, ``predict(X)``)
gets them in one call, as a numpy array when they form a regular array (else the list), and
its result's rows are the predictions (a dict result with a ``predictions`` key is answered as
it is). A function or batch model gets each instance as ``POST /predict/batch`` gives it.
Errors answer ``{"error": message}`` as KServe does (400 bad input, 404 unknown model).
"""

from __future__ import annotations

from typing import Any

from .errors import BadInput, NotFound, NotReady


def instances_of(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise BadInput('Expected a JSON object with "instances" or "inputs"')
    key = "instances" if "instances" in body else "inputs" if "inputs" in body else None
    if key is None:
        raise BadInput('Expected "instances" or "inputs" in the request body')
    instances = body[key]
    if not isinstance(instances, list):
        raise BadInput(f'Expected "{key}" to be a list')
    return instances


def as_model_input(instances: list[Any]) -> Any:
    import numpy as np

    try:
        arr = np.asarray(instances)
    except ValueError:  # ragged
        return instances
    return instances if arr.dtype.kind == "O" else arr


def register(app: Any, predictor: Any, *, admitted: Any, decode_json: Any) -> None:
    from flask import Response, request

    from .codec import dumps, encode_response

    def check(name: str) -> None:
        served = predictor.card.get("name")
        if name != served:
            raise NotFound(f"Model with name {name} does not exist.")

    def models() -> Any:
        return Response(
            dumps({"models": [predictor.card.get("name")]}), mimetype="application/json"
        )

    def model_ready(name: str) -> Any:
        check(name)
        if not predictor.ready:
            raise NotReady(f"Model with name {name} is not ready.")
        return Response(dumps({"name": name, "ready": True}), mimetype="application/json")

    def call(instances: list[Any], admission: Any) -> Any:
        model = predictor.model
        if model.kind in ("function", "batch"):
            return {"predictions": predictor.predict_many(instances, admission)}
        result = predictor.predict(as_model_input(instances), admission)
        if isinstance(result, dict) and "predictions" in result:
            return result
        return {"predictions": result}

    def predict(name: str) -> Any:
        check(name)
        body = admitted(lambda: instances_of(decode_json(request.get_data(cache=False))), call)
        return Response(encode_response(body), mimetype="application/json")

    app.add_url_rule("/v1/models", "kserve_v1_models", models, methods=["GET"])
    app.add_url_rule("/v1/models/<name>", "kserve_v1_model", model_ready, methods=["GET"])
    app.add_url_rule("/v1/models/<name>:predict", "kserve_v1_predict", predict, methods=["POST"])

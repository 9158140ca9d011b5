"""Models for the protocol tests (Seldon, KServe v1, OIP v2 binary), written the way each
serving world writes them. Pickled by value (see ``test_protocol_clients``)."""

from __future__ import annotations

import os

import numpy as np


class SeldonModel:
    """A model written for the Seldon Core Python wrapper, unchanged."""

    def __init__(self, scale=1.0, offset=0, label="plain", verbose=False):
        self.scale = scale
        self.offset = offset
        self.label = label
        self.verbose = verbose
        self.loads = 0
        self.rewards = []

    def load(self):
        self.loads += 1

    def predict(self, X, features_names=None, **kwargs):
        if isinstance(X, str):
            return X.upper() + f":{self.label}"
        if isinstance(X, (bytes, bytearray)):
            return bytes(X)[::-1]
        if isinstance(X, dict):
            return {"keys": sorted(X), "label": self.label, "loads": self.loads}
        X = np.asarray(X, dtype=float)
        return X * self.scale + self.offset

    def class_names(self):
        return ["a", "b", "c"]

    def tags(self):
        return {"model": "seldon", "label": self.label}

    def metrics(self):
        return [{"type": "COUNTER", "key": "seldon_calls", "value": 1}]

    def transform_input(self, X, features_names=None, **kwargs):
        return np.asarray(X, dtype=float) + 1

    def transform_output(self, X, features_names=None, **kwargs):
        return np.asarray(X, dtype=float) * 10

    def route(self, X, features_names=None):
        return 1 if float(np.asarray(X, dtype=float).sum()) > 0 else 0

    def aggregate(self, Xs, features_names=None):
        return np.sum([np.asarray(x, dtype=float) for x in Xs], axis=0)

    def send_feedback(self, features, feature_names, reward, truth, routing=None):
        self.rewards.append(reward)
        return None

    def init_metadata(self):
        return {
            "name": "seldon-model",
            "versions": ["v7"],
            "platform": "ociforge-test",
            "inputs": [{"messagetype": "tensor", "schema": {"names": ["a", "b", "c"]}}],
            "outputs": [{"messagetype": "tensor", "schema": {"shape": [3]}}],
        }


class FailingLoad:
    """An instance whose load() raises: the container must stop with the reason logged."""

    def load(self):
        raise RuntimeError("weights not found at /nowhere")

    def predict(self, X):
        return X


class SkLike:
    """An sklearn-style object: predict(X) over a 2-D array, one prediction per row."""

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {X.shape}")
        return X.sum(axis=1)


def tensor_model(x):
    """A v2 model: numbers doubled, BYTES upper-cased; several inputs -> several outputs."""
    if isinstance(x, dict):
        return {f"{k}_out": tensor_model(v) for k, v in x.items()}
    arr = np.asarray(x)
    if arr.dtype.kind in "OUS":
        flat = [v.upper() for v in arr.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(arr.shape)
    if arr.dtype.kind == "b":
        return ~arr
    return arr * 2


def env_weights_dir():
    return os.environ.get("OCIFORGE_WEIGHTS_DIR")


class SeldonNotImplementedError(Exception):
    """Named like seldon-core's: a ``*_raw`` hook raising it hands over to the ordinary method
    (what ``SeldonComponent``'s defaults raise; matched by name, no seldon-core needed)."""


class RawModel:
    """A model with the wrapper's ``*_raw`` hooks: each gets the whole request message and
    answers a whole SeldonMessage; ``transform_output_raw`` is not implemented (the ordinary
    ``transform_output`` answers)."""

    def __init__(self):
        self.feedback = []

    def predict(self, X, names=None):  # never called while predict_raw answers
        raise AssertionError("predict called although predict_raw answers")

    def predict_raw(self, msg):
        if isinstance(msg, dict) and msg.get("jsonData", {}).get("fail"):
            return {"status": {"code": 422, "info": "refused by the model", "status": 1}}
        return {
            "jsonData": {"seen": msg, "hook": "predict_raw"},
            "meta": {"metrics": [{"type": "GAUGE", "key": "raw_gauge", "value": 7}]},
        }

    def transform_input_raw(self, msg):
        return {"jsonData": {"hook": "transform_input_raw", "keys": sorted(msg)}}

    def transform_output_raw(self, msg):
        raise SeldonNotImplementedError("transform_output_raw is not implemented")

    def transform_output(self, X, names=None):
        return np.asarray(X, dtype=float) * 3

    def route_raw(self, msg):
        return {"data": {"ndarray": [[2]]}, "meta": {"tags": {"hook": "route_raw"}}}

    def aggregate_raw(self, msgs):
        return {"jsonData": {"count": len(msgs["seldonMessages"])}}

    def send_feedback_raw(self, feedback):
        self.feedback.append(feedback["reward"])
        return {"jsonData": {"rewards": self.feedback}}

    def health_status_raw(self):
        return {"jsonData": {"healthy": "raw"}}


class PassthroughModel:
    """For ``PAYLOAD_PASSTHROUGH=true``: ``predict_raw`` gets the payload undecoded (bytes of
    the body, or the ``json`` field's text) and its answer goes out verbatim."""

    def predict_raw(self, payload):
        kind = type(payload).__name__
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        return ('{"got": ' + text + ', "as": "' + kind + '"}').encode("utf-8")


class TfModel:
    """A Seldon model for ``data.tftensor``: doubles what it gets, keeping its dtype."""

    def predict(self, X, names=None):
        X = np.asarray(X)
        return X * 2

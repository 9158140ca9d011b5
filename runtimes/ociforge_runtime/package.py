"""The model package: the contract between the builder and the runtime.

A package is a directory with two files:

* ``model.pkl`` -- the user's object, pickled with cloudpickle (so functions
  and classes defined in ``__main__`` or a notebook travel by value);
* ``model.json`` -- what the runtime needs to know without unpickling: the
  model's *kind*, ``batch_size``, the model card, the ociforge version, build
  info and the Python version the pickle was made with.

``package_files`` is called by the builder (at build time); ``load_package``
by the server (once per worker).  Keeping both here means the two sides can
never disagree on the format.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import DEFAULT_WEIGHTS_DIR, WEIGHTS_ENV, __version__

FORMAT_VERSION = 1
# Modules the server loads by name rather than by an import statement (gunicorn's worker and
# logger classes): the builder compiles their bytecode with the rest of what starts the server.
# The server's worker (ociforge_runtime.worker) builds on gunicorn's base worker, parser and
# WSGI response; gthread is no longer used by the server but stays compiled (images' tests and
# tools still import it).
STARTUP_IMPORTS = (
    "gunicorn.app.base",
    "gunicorn.glogging",
    "gunicorn.workers.base",
    "gunicorn.http.parser",
    "gunicorn.http.wsgi",
    "gunicorn.workers.gthread",
)
MODEL_PKL = "model.pkl"
MODEL_JSON = "model.json"
KINDS = ("function", "batch", "object", "class")
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
CARD_DEFAULTS: dict[str, Any] = {
    "name": "model",
    "version": "1",
    "description": "",
    "authors": [],
    "inputs": [],
    "outputs": [],
    "license": None,
    "resources": {},
}
# A model name appears in URL paths (/v2/models/{name}), so it must be path-safe.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def python_tag() -> str:
    """``"3.11"``: pickled code objects only load on the same minor version."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _predicts(model: Any) -> bool:
    """Has ``predict``, or only the Seldon wrapper's ``predict_raw`` (whole messages)."""
    return callable(getattr(model, "predict", None)) or callable(
        getattr(model, "predict_raw", None)
    )


def _raw_only(*_args: Any, **_kwargs: Any) -> Any:
    from .errors import BadInput

    raise BadInput(
        "this model has only predict_raw(): send SeldonMessages to /api/v1.0/predictions"
    )


def detect_kind(model: Any, batch_size: int | None = None) -> str:
    """Classify the user's object; raises ``TypeError`` if it cannot serve predictions."""
    if inspect.isclass(model):
        if not _predicts(model):
            raise TypeError(
                f"model class {model.__qualname__} has no predict() method; "
                "a class model needs predict() (and optionally load())"
            )
        return "class"
    if _predicts(model):
        return "object"
    if callable(model):
        return "batch" if batch_size is not None else "function"
    raise TypeError(
        f"model of type {type(model).__qualname__} is not usable: pass a function "
        "predict(x), a batch function fn(list) -> list with batch_size, an object "
        "with predict(X), or a class with load() and predict()"
    )


def _default_name(model: Any) -> str:
    raw = getattr(model, "__name__", None) or type(model).__name__
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(raw)).strip("-_.")
    return name if name and _NAME_RE.match(name) else "model"


def _check_tensor_specs(specs: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(specs, list):
        raise ValueError(f"card {where} must be a list of {{name, datatype, shape}}")
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ValueError(f"card {where}[{i}] must be a dict with a string 'name'")
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise ValueError(
                f"card {where}[{i}] ({spec['name']!r}): datatype {datatype!r} is not "
                f"one of {', '.join(DATATYPES)}"
            )
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise ValueError(
                f"card {where}[{i}] ({spec['name']!r}): shape must be a list of ints "
                f"(-1 for a variable dimension), got {shape!r}"
            )
        out.append(dict(spec))
    return out


def normalize_card(card: dict[str, Any] | None, model: Any = None) -> dict[str, Any]:
    """Fill defaults and validate the model card, so the server can trust it blindly."""
    if card is not None and not isinstance(card, dict):
        raise TypeError(f"card must be a dict, got {type(card).__name__}")
    merged = {
        k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
        for k, v in CARD_DEFAULTS.items()
    }
    if model is not None:
        merged["name"] = _default_name(model)
    merged.update(card or {})
    if not isinstance(merged["name"], str) or not _NAME_RE.match(merged["name"]):
        raise ValueError(
            f"model name {merged['name']!r} must be 1-128 characters of letters, digits, "
            "'_', '.', '-' (it is used in URLs)"
        )
    merged["version"] = str(merged["version"])
    if isinstance(merged["authors"], str):
        merged["authors"] = [merged["authors"]]
    if not isinstance(merged["resources"], dict):
        raise ValueError("card resources must be a dict (e.g. {'cpu': 1, 'memory': '512Mi'})")
    merged["inputs"] = _check_tensor_specs(merged["inputs"], "inputs")
    merged["outputs"] = _check_tensor_specs(merged["outputs"], "outputs")
    return merged


def stable_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: the same inputs give the same layer digest."""
    try:
        text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model.json content is not JSON-serialisable: {exc}") from exc
    return (text + "\n").encode("utf-8")


def package_files(
    model: Any,
    *,
    batch_size: int | None = None,
    card: dict[str, Any] | None = None,
    build: dict[str, Any] | None = None,
    dumps: Callable[[Any], bytes] | None = None,
) -> dict[str, bytes]:
    """Serialise ``model`` into the files of a model package (``model.pkl``, ``model.json``).

    ``dumps`` pickles the model (default: ``cloudpickle.dumps``); the builder passes its own.

    Raises ``TypeError`` for an object that cannot be served or pickled and
    ``ValueError`` for a bad ``batch_size``/card/build, each naming the problem,
    so that a build fails on the developer's machine instead of in production.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if build is not None and not isinstance(build, dict):
        raise ValueError(f"build must be a dict, got {type(build).__name__}")
    kind = detect_kind(model, batch_size)
    normalized = normalize_card(card, model)
    import cloudpickle  # build-time only: the server unpickles with plain pickle

    try:
        if dumps is not None:
            pkl = dumps(model)
        else:
            pkl = cloudpickle.dumps(model, protocol=pickle.DEFAULT_PROTOCOL)
    except Exception as exc:  # pickling raises many types (TypeError, PicklingError, ...)
        raise TypeError(
            f"model of type {type(model).__qualname__} cannot be pickled "
            f"({type(exc).__name__}: {exc}). Remove open files, sockets, locks, threads "
            "or connections from it, or use a class whose load() creates them at start-up."
        ) from exc
    manifest = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "batch_size": batch_size,
        "card": normalized,
        "ociforge_version": __version__,
        "build": dict(build or {}),
        "python": python_tag(),
    }
    return {MODEL_PKL: pkl, MODEL_JSON: stable_json(manifest)}


def write_package(dirpath: str | os.PathLike[str], files: dict[str, bytes]) -> None:
    """Write ``package_files`` output into a directory (used by tests and local runs)."""
    os.makedirs(dirpath, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(dirpath, name), "wb") as fh:
            fh.write(data)


def read_manifest(dirpath: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``model.json`` without unpickling anything (cheap; used before forking)."""
    path = os.path.join(dirpath, MODEL_JSON)
    try:
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no model package at {os.fspath(dirpath)!r}: {MODEL_JSON} is missing "
            "(set OCIFORGE_MODEL_DIR to the package directory)"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") not in KINDS:
        raise ValueError(f"{path}: 'kind' must be one of {', '.join(KINDS)}")
    if manifest.get("format", 1) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: package format {manifest['format']} is newer than this runtime "
            f"supports ({FORMAT_VERSION}); rebuild with a matching ociforge"
        )
    batch_size = manifest.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"{path}: batch_size must be null or a positive int")
    manifest["card"] = normalize_card(manifest.get("card") or {})
    manifest.setdefault("build", {})
    return manifest


@dataclass
class LoadedModel:
    """A model ready to serve: one callable plus what the server needs around it.

    ``predict`` takes one input (or, when ``batch_size`` is set, a list of
    inputs and returns a list).  ``tags``/``metrics`` are the Seldon-style
    optional hooks of object and class models.
    """

    kind: str
    predict: Callable[[Any], Any]
    card: dict[str, Any]
    batch_size: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    tags: Callable[[], Any] | None = None
    metrics: Callable[[], Any] | None = None
    instance: Any = None

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def version(self) -> str:
        return self.card["version"]


def instantiate(obj: Any, manifest: dict[str, Any]) -> LoadedModel:
    """Turn an unpickled object into a ``LoadedModel`` (instantiating/loading class models)."""
    kind = manifest["kind"]
    instance = obj
    # the model reads $OCIFORGE_WEIGHTS_DIR for weights shipped apart from its image
    os.environ.setdefault(WEIGHTS_ENV, DEFAULT_WEIGHTS_DIR)
    if kind == "class":
        # Seldon wrapper style: PREDICTIVE_UNIT_PARAMETERS become the constructor's kwargs
        from .seldon import parse_parameters

        instance = obj(**parse_parameters(os.environ.get("PREDICTIVE_UNIT_PARAMETERS")))
    if kind in ("object", "class"):
        # load() once per worker, for an instance too (as the Seldon wrapper does)
        load = getattr(instance, "load", None)
        if callable(load):
            load()
    if kind in ("object", "class"):
        predict = getattr(instance, "predict", None)
        if not callable(predict) and callable(getattr(instance, "predict_raw", None)):
            predict = _raw_only  # other routes answer 400; the Seldon ones call predict_raw
        tags = getattr(instance, "tags", None)
        metrics = getattr(instance, "metrics", None)
    else:
        predict, tags, metrics = obj, None, None
    if not callable(predict):
        raise TypeError(f"model of kind {kind!r} has no callable predict")
    return LoadedModel(
        kind=kind,
        predict=predict,
        card=manifest["card"],
        batch_size=manifest.get("batch_size"),
        manifest=manifest,
        tags=tags if callable(tags) else None,
        metrics=metrics if callable(metrics) else None,
        instance=instance,
    )


def load_package(dirpath: str | os.PathLike[str]) -> LoadedModel:
    """Load a package directory: read the manifest, unpickle, instantiate and ``load()``.

    Unpickling uses plain ``pickle``: cloudpickle is imported by the pickle
    stream itself only when needed, which keeps cold start small.
    """
    manifest = read_manifest(dirpath)
    path = os.path.join(dirpath, MODEL_PKL)
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        obj = pickle.loads(data)
    except Exception as exc:
        hint = ""
        if manifest.get("python") and manifest["python"] != python_tag():
            hint = (
                f" (the package was built with Python {manifest['python']}, "
                f"this is Python {python_tag()})"
            )
        raise RuntimeError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}{hint}") from exc
    return instantiate(obj, manifest)

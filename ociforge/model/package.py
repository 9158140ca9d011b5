"""The model as the image carries it: ``model.pkl`` and ``model.json`` (the runtime's format), and
the user's own modules that travel beside it as source.

A model comes in as a Python object, pickled here, or as a package folder already written (as
``ociforge bundle rebuild`` finds it in a built image), whose bytes are kept as they are.

Code pickled by value (what the user's script or notebook defines) carries the file it came
from: its module's ``__file__`` (kept among a function's globals) and, before cloudpickle 3, the
code's ``co_filename``. Both are recorded relative to the model's folder (the folder of the file
that defines the model), a file outside it by its name alone, so the same script in another
folder, or on another machine, gives the same ``model.pkl`` and no path of the building machine
goes into the image.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import posixpath
import types
from pathlib import Path
from typing import Any

import cloudpickle
from ociforge_runtime.package import MODEL_JSON, MODEL_PKL, package_files, stable_json

from ..errors import BuildError, InvalidInput
from .imports import UserCode, preimportable


def package_model(
    model: Any, batch_size: int | None, card: dict, build_info: dict
) -> dict[str, bytes]:
    """The model package, with the modules its pickle imports recorded for the runtime to
    import once before forking workers (``build.imports`` in model.json)."""
    root = model_folder(model)
    try:
        files = package_files(
            model,
            batch_size=batch_size,
            card=card,
            build=build_info,
            dumps=lambda m: dumps(m, root),
        )
    except (TypeError, ValueError) as e:
        raise BuildError(f"cannot package the model: {e}") from None
    manifest = json.loads(files[MODEL_JSON])
    manifest["build"]["imports"] = preimportable(files[MODEL_PKL])
    files[MODEL_JSON] = stable_json(manifest)
    return files


def portable_filename(filename: str, root: str | None) -> str:
    """``filename`` (a code object's) as the image records it: relative to ``root`` (as a POSIX
    path) when it is inside it, else its base name; ``<stdin>``-like names as they are."""
    if not filename or filename.startswith("<"):
        return filename
    path = os.path.abspath(filename)
    if root is not None:
        rel = os.path.relpath(path, root)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return posixpath.join(*rel.split(os.sep))
    return os.path.basename(path)


def model_folder(model: Any) -> str | None:
    """The folder of the file that defines ``model`` (a function, a class, or an instance of
    one), from its code; None when none is found (nothing but base names is recorded then)."""
    for code in _codes_of(model):
        if code.co_filename and not code.co_filename.startswith("<"):
            return os.path.dirname(os.path.abspath(code.co_filename))
    return None


def _codes_of(model: Any):
    func = getattr(model, "__func__", model)  # a bound method: its function
    code = getattr(func, "__code__", None)
    if isinstance(code, types.CodeType):
        yield code
        return
    cls = model if isinstance(model, type) else type(model)
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            continue
        for value in vars(klass).values():
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            code = getattr(value, "__code__", None)
            if isinstance(code, types.CodeType):
                yield code


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, recording the file of code pickled by value with :func:`portable_filename`."""

    def __init__(self, file, root: str | None) -> None:
        super().__init__(file, protocol=pickle.DEFAULT_PROTOCOL)
        self._root = root
        self._code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]

    def _function_getnewargs(self, func):
        # (code, base_globals, ...): base_globals keeps the module's __file__ for the function
        newargs = super()._function_getnewargs(func)
        base_globals = newargs[1] if len(newargs) > 1 else None
        if isinstance(base_globals, dict) and isinstance(base_globals.get("__file__"), str):
            base_globals["__file__"] = portable_filename(base_globals["__file__"], self._root)
        return newargs

    def reducer_override(self, obj):
        if type(obj) is types.CodeType:
            name = portable_filename(obj.co_filename, self._root)
            if name == obj.co_filename:
                return NotImplemented  # pickled as cloudpickle does
            # nested code objects (co_consts) pass through here in turn
            return self._code_reduce(obj.replace(co_filename=name))
        return super().reducer_override(obj)


def dumps(model: Any, root: str | None) -> bytes:
    """``cloudpickle.dumps(model)``, with the files of code pickled by value made portable."""
    with io.BytesIO() as f:
        _Pickler(f, root).dump(model)
        return f.getvalue()


def with_build_info(files: dict[str, bytes], **changes: Any) -> dict[str, bytes]:
    """The package with ``changes`` made to ``build`` in its ``model.json`` (the variant a build
    took from its resolution, for one)."""
    manifest = json.loads(files[MODEL_JSON])
    manifest.setdefault("build", {}).update(changes)
    return {**files, MODEL_JSON: stable_json(manifest)}


def package_dir(model: Any) -> Path | None:
    """``model`` as a model package directory (``model.pkl`` + ``model.json``), else None."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not (path / MODEL_PKL).is_file() or not (path / MODEL_JSON).is_file():
            raise InvalidInput(
                f"{path} is not a model package (a folder with model.pkl and model.json)"
            )
        return path
    return None


def read_package(path: Path) -> tuple[dict[str, bytes], list[UserCode]]:
    """A package's files, and the user's modules in its ``code/`` folder (as the build found
    them beside the model, so the code layer is the same)."""
    pkg = {name: (path / name).read_bytes() for name in (MODEL_JSON, MODEL_PKL)}
    code_dir = path / "code"
    code = []
    if code_dir.is_dir():
        for item in sorted(code_dir.iterdir()):
            if item.is_dir():
                code.append(UserCode(item.name, item))
            elif item.suffix == ".py":
                code.append(UserCode(item.stem, item))
    return pkg, code


def startup_imports(pkg: dict[str, bytes]) -> list[str]:
    """The modules the runtime imports before forking (recorded in ``model.json`` when packaged)."""
    return (json.loads(pkg[MODEL_JSON]).get("build") or {}).get("imports") or []

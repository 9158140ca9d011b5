"""The model as the image carries it: ``model.pkl`` and ``model.json`` (the runtime's format), and
the user's own modules that travel beside it as source.

A model comes in as a Python object, pickled here, or as a package folder already written (as
``ociforge bundle rebuild`` finds it in a built image), whose bytes are kept as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ociforge_runtime.package import MODEL_JSON, MODEL_PKL, package_files, stable_json

from ..errors import BuildError, InvalidInput
from .imports import UserCode, preimportable


def package_model(
    model: Any, batch_size: int | None, card: dict, build_info: dict
) -> dict[str, bytes]:
    """The model package, with the modules its pickle imports recorded for the runtime to
    import once before forking workers (``build.imports`` in model.json)."""
    try:
        files = package_files(model, batch_size=batch_size, card=card, build=build_info)
    except (TypeError, ValueError) as e:
        raise BuildError(f"cannot package the model: {e}") from None
    manifest = json.loads(files[MODEL_JSON])
    manifest["build"]["imports"] = preimportable(files[MODEL_PKL])
    files[MODEL_JSON] = stable_json(manifest)
    return files


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

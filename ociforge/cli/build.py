"""``ociforge build path/to/model.py:OBJECT``: the model build from the command line.

Settings come from ``[tool.ociforge]`` in the project's ``pyproject.toml`` (next to the model file,
or the working folder), overridden by flags. The model file is run as a script (not imported),
so what it defines is pickled by value, as from a notebook; modules of the project that it
imports travel as source.
"""

from __future__ import annotations

import json
import runpy
import sys
import tomllib
from pathlib import Path

from ..errors import InvalidInput
from ._common import add_registry_options, key_values, registry_kwargs

SETTINGS = (
    "platforms",
    "requirements",
    "python",
    "base",
    "to",
    "name",
    "version",
    "batch_size",
    "gpu",
    "files",
    "compression",
    "lock",
    "offline",
    "metadata",
    "test_sample",
    "labels",
)


def register(sub) -> None:
    p = sub.add_parser("build", help="build a model into a multi-arch serving image")
    p.add_argument(
        "model", metavar="FILE.py:OBJECT", help="a Python file and the model object in it"
    )
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        help="linux/amd64, linux/arm64 (repeat or comma-separate)",
    )
    p.add_argument("-r", "--requirements", help="requirements file, or 'auto'")
    p.add_argument(
        "--requirement",
        action="append",
        default=[],
        metavar="REQ",
        help="one requirement (repeatable)",
    )
    p.add_argument("--python", help="Python version of the image (default: the base's)")
    p.add_argument(
        "--python-path", help="the base's interpreter, when ociforge cannot find it (with --python)"
    )
    p.add_argument(
        "--libc", help="the base's C library when it cannot be found: 'glibc 2.36', 'musl 1.2'"
    )
    p.add_argument(
        "--base", help="base image (default: ociforge's Debian base for the Python version)"
    )
    p.add_argument("--to", help="destination (default: oci:./out:NAME)")
    p.add_argument("--name")
    p.add_argument("--version", dest="model_version")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--gpu", help="CUDA variant, e.g. cu121")
    p.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="IMAGE_PATH=LOCAL",
        help="an artifact (its own layer)",
    )
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--metadata",
        metavar="FILE.json",
        help="model card (description, authors, inputs, outputs, ...)",
    )
    p.add_argument(
        "--test-sample",
        metavar="FILE|JSON",
        help="run the model on this first; refuse to build if it fails",
    )
    p.add_argument("--compression", choices=("gzip", "zstd", "none"))
    p.add_argument("--lock", metavar="FILE", help="a lock from `ociforge lock` (resolves nothing)")
    p.add_argument(
        "--offline", action="store_true", help="touch no network (needs --lock and warm caches)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_registry_options(p)
    p.set_defaults(func=run)


def project_settings(start: Path) -> dict:
    """``[tool.ociforge]`` of the nearest ``pyproject.toml`` at or above ``start``."""
    for folder in [start, *start.parents]:
        f = folder / "pyproject.toml"
        if f.is_file():
            try:
                data = tomllib.loads(f.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise InvalidInput(f"{f}: {e}") from None
            settings = data.get("tool", {}).get("ociforge", {})
            unknown = sorted(set(settings) - set(SETTINGS))
            if unknown:
                raise InvalidInput(f"{f}: unknown [tool.ociforge] settings: {', '.join(unknown)}")
            return settings
    return {}


def load_model(spec: str):
    path_s, sep, obj_name = spec.rpartition(":")
    if not sep or not path_s or not obj_name:
        raise InvalidInput(f"{spec!r}: expected FILE.py:OBJECT")
    path = Path(path_s)
    if not path.is_file():
        raise InvalidInput(f"model file {path} does not exist")
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        namespace = runpy.run_path(str(path), run_name="__ociforge_model__")
    except SystemExit as e:
        raise InvalidInput(f"{path} exited ({e.code}) while loading") from None
    except Exception as e:
        raise InvalidInput(f"{path} failed while loading: {type(e).__name__}: {e}") from None
    if obj_name not in namespace:
        names = sorted(k for k, v in namespace.items() if not k.startswith("_") and callable(v))
        raise InvalidInput(
            f"{path} defines no {obj_name!r} (callables there: {', '.join(names) or 'none'})"
        )
    return namespace[obj_name], path


def _sample(text: str | None):
    if text is None:
        return None
    p = Path(text)
    if p.is_file():
        return str(p)
    try:
        return json.loads(text)
    except ValueError:
        return text


def run(args) -> int:
    from ..builder.build import build  # the build loads every part (~0.2 s): only for this command

    model, path = load_model(args.model)
    s = project_settings(path.parent.resolve())
    reqs = args.requirements or (args.requirement or None) or s.get("requirements")
    metadata = dict(s.get("metadata", {}))
    if args.metadata:
        try:
            metadata.update(json.loads(Path(args.metadata).read_text()))
        except (OSError, ValueError) as e:
            raise InvalidInput(f"--metadata {args.metadata}: {e}") from None
    name = args.name or s.get("name") or "model"
    files = {**s.get("files", {}), **key_values(args.file, "--file")}
    result = build(
        model,
        platforms=args.platform or s.get("platforms") or ["linux/amd64"],
        requirements=reqs,
        python=args.python or s.get("python"),
        python_path=args.python_path or s.get("python_path"),
        libc=args.libc or s.get("libc"),
        base=args.base or s.get("base"),
        to=args.to or s.get("to") or f"oci:./out:{name}",
        name=name,
        version=args.model_version or s.get("version", "0.1.0"),
        batch_size=args.batch_size or s.get("batch_size"),
        gpu=args.gpu or s.get("gpu"),
        metadata=metadata,
        files=files or None,
        test_sample=_sample(args.test_sample) if args.test_sample else s.get("test_sample"),
        compression=args.compression or s.get("compression", "gzip"),
        lock=args.lock or s.get("lock"),
        offline=args.offline or bool(s.get("offline", False)),
        labels={**s.get("labels", {}), **key_values(args.label, "--label")} or None,
        **registry_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"{result.reference}@{result.digest}")
        print(
            f"  platforms: {', '.join(map(str, result.platforms))}; {result.size / 1e6:.1f} MB stored"
        )
    return 0

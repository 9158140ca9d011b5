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
    "python_path",
    "libc",
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
    "folder",
    "grpc",
    "verify",
    "system_packages",
    "cache",
    "check_libraries",
)


def register(sub) -> None:
    p = sub.add_parser("build", help="build a model into a multi-arch serving image")
    p.add_argument(
        "model",
        metavar="FILE.py[:OBJECT]",
        help="a Python file and the model object in it (default: the class named like the "
        "file, as Seldon's wrapper takes MyModel from MyModel.py)",
    )
    p.add_argument(
        "--folder",
        metavar="DIR",
        help="ship DIR's other files (weights, configs) beside the model, in the image's working "
        "folder (/opt/ociforge/app), as Seldon's s2i ships the model's folder; dotfiles and "
        "__pycache__ left out",
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
    p.add_argument(
        "--gpu",
        help="variant: cpu or CUDA, e.g. cu121 (default: the CUDA builds the requirements "
        "resolve to, said on stderr, else cpu)",
    )
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
        "--offline",
        action="store_true",
        help="touch no network: warm caches and --lock, or the resolution an online build of "
        "the same requirements remembered",
    )
    p.add_argument(
        "--cache",
        metavar="REF",
        help="where memo entries of reusable layers are looked up and left: REGISTRY/REPO or "
        "oci:DIR (default: the destination's repository when it is a registry; 'none': no cache)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--sbom-format",
        choices=("spdx", "cyclonedx"),
        default="spdx",
        help="SBOM attached to each platform image in a registry or layout (default spdx)",
    )
    p.add_argument("--no-sbom", action="store_true", help="attach no SBOM")
    p.add_argument(
        "--sign-key",
        metavar="KEY",
        help="cosign private key: sign the index and each image (password: $COSIGN_PASSWORD)",
    )
    p.add_argument(
        "--grpc",
        action="store_true",
        help="also serve the Open Inference Protocol over gRPC on port 8081, with "
        "grpc.health.v1.Health (adds grpcio, grpcio-health-checking)",
    )
    p.add_argument(
        "--system-package",
        action="append",
        default=[],
        metavar="PKG",
        help="a Debian package of the base's suite, installed into a layer above the base, "
        "e.g. libgl1 (repeat or comma-separate)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="once written, start each platform's image here (bubblewrap; qemu-user for another "
        "architecture, as `ociforge run`) and fail unless it answers --test-sample as the local "
        "test did",
    )
    p.add_argument(
        "--no-check-libraries",
        action="store_true",
        help="skip the check that every shared library the wheels need is in the image",
    )
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
    if not sep and spec.endswith(".py"):
        # Seldon's wrapper way: MyModel.py holds class MyModel
        path_s, obj_name = spec, Path(spec).stem
    elif not sep or not path_s or not obj_name:
        raise InvalidInput(f"{spec!r}: expected FILE.py[:OBJECT]")
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


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def folder_files(folder: str | Path, model_file: Path | None = None) -> dict[str, str]:
    """``--folder DIR``: its entries as build ``files`` (image path relative to the working
    folder -> local path), the model file itself, dotfiles and ``__pycache__`` left out. A
    top-level folder with nothing hidden in it is one entry (one layer), else its files are."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"--folder {folder}: not a directory")
    skip = model_file.resolve() if model_file is not None else None
    out: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        rel = entry.relative_to(root)
        if _hidden(rel) or entry.resolve() == skip:
            continue
        if entry.is_dir():
            inner = sorted(p for p in entry.rglob("*") if p.is_file() or p.is_symlink())
            if any(_hidden(p.relative_to(root)) for p in entry.rglob("*")):
                for p in inner:
                    prel = p.relative_to(root)
                    if not _hidden(prel) and p.is_file():
                        out[prel.as_posix()] = str(p)
            elif inner:
                out[rel.as_posix()] = str(entry)
        elif entry.is_file():
            out[rel.as_posix()] = str(entry)
    return out


def _names(values: list[str]) -> list[str]:
    """Repeated and comma-separated names, in one list."""
    return [n for v in values for n in v.replace(",", " ").split()]


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
    folder = getattr(args, "folder", None) or s.get("folder")
    shipped = folder_files(folder, path) if folder else {}
    files = {**shipped, **s.get("files", {}), **key_values(args.file, "--file")}
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
        sbom=False if args.no_sbom else args.sbom_format,
        sign_key=args.sign_key,
        grpc=args.grpc or bool(s.get("grpc", False)),
        check_libraries=not args.no_check_libraries and bool(s.get("check_libraries", True)),
        verify=args.verify or bool(s.get("verify", False)),
        system_packages=_names(args.system_package) or s.get("system_packages"),
        cache=args.cache or s.get("cache"),
        **registry_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"{result.reference}@{result.digest}")
        print(
            f"  platforms: {', '.join(map(str, result.platforms))}; {result.size / 1e6:.1f} MB stored"
        )
        code = next((e["files"] for ls in result.layers.values() for e in ls if "files" in e), None)
        if code is not None:  # what of the user's folders went into the image, to be checked
            more = f", and {len(code) - 40} more (--json lists them)" if len(code) > 40 else ""
            print(f"  code layer: {', '.join(code[:40])}{more}")
        if result.verified:  # --verify (a failure is an error naming the platform)
            print(f"  verified: {', '.join(result.verified)} answered the test sample as locally")
    return 0

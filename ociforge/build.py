"""``ociforge.build``: a Python model in, a multi-arch serving image out. The one build path.

Layers, from least to most often changed, so a rebuild after a model change writes and pushes
one small layer plus configs, manifests and the index:

    base image layers (reused by digest, never read)
    → dependency wheel layers (per big wheel, or grouped; shared across models and platforms)
    → the ociforge runtime layer (the same on every platform)
    → the user's own code (modules the model imports from the project, as source)
    → artifact layers (one per ``files`` entry; same files, same digest)
    → the serialized model (``model.pkl`` + ``model.json``)

Nothing runs inside the target: wheels are resolved and installed for each platform directly,
so an arm64 image builds as fast as an amd64 one on any machine.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .blobstore import BlobStore, default_cache_dir
from .errors import InvalidInput, OciforgeError
from .image import ConfigChanges, Image, ImageIndex, append, make_index, store_source
from .layer import Entry, Layer, entries_from_tree, image_path, source_date_epoch, write_layer
from .layercache import memo_key, memoized
from .manifest import rfc3339
from .platform import Platform, parse_platforms

log = logging.getLogger(__name__)

ROOT = "/opt/ociforge"
RUNTIME_DIR = f"{ROOT}/runtime"
CODE_DIR = f"{ROOT}/code"
MODEL_DIR = f"{ROOT}/model"
APP_DIR = f"{ROOT}/app"  # WorkingDir: artifacts land here, so relative paths in user code work
USER = "65532:65532"
PORT = 8080
IGNORE = ("__pycache__", "*.pyc", "*.pyo", ".git", ".ipynb_checkpoints")
ANNOTATION_PREFIX = "org.opencontainers.image."


class BuildError(OciforgeError):
    """The model cannot be built into an image (the message says what to change)."""


@dataclass
class BuildResult:
    """What a build produced and where it went."""

    reference: str
    digest: str
    platforms: list[Platform]
    layers: dict[str, list[dict]]  # per platform: the new layers (digest, size, what)
    size: int  # stored bytes of everything the index references (layers counted once)
    image: Image | ImageIndex = field(repr=False)
    requirements: list[str] = field(default_factory=list)
    locks: dict = field(default_factory=dict, repr=False)
    written: Any = field(default=None, repr=False)  # the transport's WriteResult (push stats...)

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "platforms": [str(p) for p in self.platforms],
            "layers": self.layers,
            "size": self.size,
            "requirements": self.requirements,
        }


def host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def runtime_requirements() -> list[str]:
    """What the runtime itself needs in the image. cloudpickle is pinned to the builder's version:
    pickles it writes are only guaranteed to load with the same cloudpickle."""
    import cloudpickle

    return ["flask>=3.0", "gunicorn>=22.0", f"cloudpickle=={cloudpickle.__version__}", "numpy"]


def _requirement_list(requirements) -> list[str]:
    if requirements is None:
        return []
    if isinstance(requirements, (str, os.PathLike)) and requirements != "auto":
        path = Path(requirements)
        if not path.is_file():
            raise InvalidInput(f"requirements file {path} does not exist")
        from .resolve import _read_requirement_lines

        return _read_requirement_lines(path)
    return [str(r) for r in requirements]


def test(
    model: Any, sample: Any, *, batch_size: int | None = None, metadata: dict | None = None
) -> Any:
    """Run ``sample`` through the same decode → predict → encode path the server uses, locally."""
    from ociforge_runtime import local

    return local.test(model, sample, batch_size=batch_size, card=metadata)


def test_batch(
    model: Any, samples: list, *, batch_size: int | None = None, metadata: dict | None = None
) -> Any:
    """The batch route's answer for ``samples``, computed locally."""
    from ociforge_runtime import local

    return local.test_batch(model, samples, batch_size=batch_size, card=metadata)


def _package(model, batch_size, card, build_info) -> dict[str, bytes]:
    """The model package, with the modules its pickle imports recorded for the runtime to
    import once before forking workers (``build.imports`` in model.json)."""
    import json

    from ociforge_runtime.package import MODEL_JSON, MODEL_PKL, package_files, stable_json

    from .model import preimportable

    try:
        files = package_files(model, batch_size=batch_size, card=card, build=build_info)
    except (TypeError, ValueError) as e:
        raise BuildError(f"cannot package the model: {e}") from None
    manifest = json.loads(files[MODEL_JSON])
    manifest["build"]["imports"] = preimportable(files[MODEL_PKL])
    files[MODEL_JSON] = stable_json(manifest)
    return files


def _package_dir(model: Any) -> Path | None:
    """``model`` as a model package directory (``model.pkl`` + ``model.json``), else None."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not (path / "model.pkl").is_file() or not (path / "model.json").is_file():
            raise InvalidInput(
                f"{path} is not a model package (a folder with model.pkl and model.json)"
            )
        return path
    return None


def _read_package(path: Path) -> tuple[dict[str, bytes], list]:
    """A package's files, and the user's modules in its ``code/`` folder (as the build found
    them beside the model, so the code layer is the same)."""
    from .model import UserCode

    pkg = {name: (path / name).read_bytes() for name in ("model.json", "model.pkl")}
    code_dir = path / "code"
    code = []
    if code_dir.is_dir():
        for item in sorted(code_dir.iterdir()):
            if item.is_dir():
                code.append(UserCode(item.name, item))
            elif item.suffix == ".py":
                code.append(UserCode(item.stem, item))
    return pkg, code


def _bases(
    base, platforms: list[Platform], python: str | None, registry_opts: dict, offline: bool = False
) -> dict[Platform, tuple[Image, str]]:
    """The base image of each platform, and the name it was read from."""
    if base is None:
        from .base import default_base

        built = default_base(python or host_python(), platforms, offline=offline)
        return {p: (built[p], f"ociforge-base:python{python or host_python()}") for p in platforms}
    if isinstance(base, (Image, ImageIndex)):
        obj, name = base, ""
    else:
        from .transport import open_source

        obj, name = open_source(str(base), **registry_opts), str(base)
    out = {}
    for p in platforms:
        if isinstance(obj, ImageIndex):
            out[p] = (obj.select(p), name)
        elif p.matches(obj.platform):
            out[p] = (obj, name)
        else:
            raise BuildError(
                f"the base {name or obj.digest} is a {obj.platform} image; it has nothing for {p}"
            )
    return out


def _targets(
    bases: dict, python: str | None, python_path: str | None, libc: str | None, gpu: str | None
) -> dict:
    """The wheel target of each platform, from its base's Python (shared with ``ociforge fetch``,
    so the lock it writes is the one a build looks up)."""
    from .base import PythonInfo, python_info
    from .target import Target, parse_libc

    declared = None
    if python_path:
        if not python:
            raise InvalidInput(
                "python_path needs python (the version of that interpreter, e.g. '3.12.4')"
            )
        kind, level = parse_libc(libc or "glibc 2.17")
        declared = PythonInfo(version=python, path=python_path, libc=kind, libc_version=level)

    targets: dict = {}
    for p, (img, bname) in bases.items():
        try:
            info = python_info(img, declared)
        except OciforgeError as e:
            raise BuildError(f"base {bname or img.digest} ({p}): {e}") from None
        if info.major_minor != host_python():
            raise BuildError(
                f"the base {bname or img.digest} has Python {info.major_minor}, but this model is pickled "
                f"with Python {host_python()}; pickled code only loads on the same minor version: "
                f"build with Python {info.major_minor} or choose a base with Python {host_python()}"
            )
        if python and info.major_minor != ".".join(python.split(".")[:2]):
            raise BuildError(
                f"python={python!r}, but the base for {p} has Python {info.major_minor}"
            )
        libc = (
            f"{info.libc} {info.libc_version[0]}.{info.libc_version[1]}"
            if info.libc_version
            else info.libc
        )
        targets[p] = Target.make(
            p,
            info.version,
            libc,
            gpu or "cpu",
            interpreter=info.path,
            site_packages=info.site_packages,
        )
    return targets


def _runtime_entries() -> list[Entry]:
    import ociforge_runtime

    src = Path(ociforge_runtime.__file__).parent
    return list(entries_from_tree(src, f"{RUNTIME_DIR}/ociforge_runtime", IGNORE))


def _code_entries(user_code) -> list[Entry]:
    entries: list[Entry] = []
    for uc in user_code:
        dest = f"{CODE_DIR}/{uc.name}" if uc.is_package else f"{CODE_DIR}/{uc.name}.py"
        entries.extend(entries_from_tree(uc.path, dest, IGNORE))
    return entries


def _startup_roots(own_files, imports: list[str]) -> list[str]:
    """Where the image's startup imports begin: the runtime's and the user's modules, the
    pickle's modules, and what the runtime loads by name."""
    from ociforge_runtime.package import STARTUP_IMPORTS

    from .bytecode import modules_under

    return sorted(
        set(modules_under(own_files, RUNTIME_DIR))
        | set(modules_under(own_files, CODE_DIR))
        | set(imports)
        | set(STARTUP_IMPORTS)
    )


def _search_path(target) -> list[str]:
    """The image's PYTHONPATH, where its modules are found (also its ``PYTHONPATH`` env)."""
    return [RUNTIME_DIR, CODE_DIR, target.site_packages]


def _prewarm(targets: dict, bytecode, own_files, roots: list[str], pool, resolves: bool):
    """A thread compiling the startup closure from this Python's installed packages while the
    requirements resolve (:func:`ociforge.bytecode.prewarm`); None when nothing will compile.
    It starts at once when the resolution goes to the network (``resolves``), else only if the
    lookup takes longer than a moment."""
    import threading

    from .bytecode import prewarm
    from .install import can_compile_for

    target = next((t for t in targets.values() if can_compile_for(t)), None)
    if target is None or bytecode is False:
        return None
    thread = threading.Thread(
        target=prewarm,
        args=(own_files, _search_path(target), target.site_packages, roots, pool),
        kwargs={"delay": 0.0 if resolves else 0.25},
        name="ociforge-prewarm",
        daemon=True,
    )
    thread.start()
    return thread


def _bytecode_layer(
    target,
    lock,
    wheel_files: list[Path],
    own_files,
    roots: list[str],
    code_hash: str,
    store: BlobStore,
    compression: str,
    pool,
) -> Layer | None:
    """The .pyc of what the image imports when it starts (:mod:`ociforge.bytecode`), over the
    wheels, the runtime and the user's code (``own_files``, whose content ``code_hash`` keys),
    on the image's own PYTHONPATH."""
    from contextlib import ExitStack

    from .bytecode import bytecode_layer, wheel_sources
    from .install import PYC_FORMAT
    from .wheelzip import WheelZip

    search = _search_path(target)
    key = memo_key(
        "bytecode",
        sorted(w.sha256 for w in lock.packages),
        search,
        roots,
        code_hash,
        compression,
        source_date_epoch(),
        f"{sys.version} {PYC_FORMAT}",
    )

    def make() -> Layer | None:  # only on a miss: a rebuild opens no wheel
        with ExitStack() as stack:
            files: dict = {}
            for path in wheel_files:
                zf = stack.enter_context(WheelZip(path))
                files.update(wheel_sources(Path(path), target.site_packages, zf))
            files.update(own_files)
            return bytecode_layer(files, search, roots, store, compression, pool=pool)

    return memoized(store, key, make)


def _artifact_layers(
    files: Mapping[str, str] | None, store: BlobStore, compression: str
) -> list[tuple[str, Layer]]:
    out = []
    for dest, local in sorted((files or {}).items()):
        rel = image_path(dest, "artifact path")
        if not rel:
            raise InvalidInput(f"artifact {dest!r}: needs a path relative to the working directory")
        if not Path(local).exists():
            raise InvalidInput(f"artifact {dest!r}: {local} does not exist")
        out.append((rel, list(entries_from_tree(local, f"{APP_DIR}/{rel}", IGNORE))))
    # every artifact is checked before any layer is written; a layer whose files hash the same
    # as last time is reused, so unchanged multi-GB weights are hashed (fast), not recompressed
    return [
        (
            rel,
            memoized(
                store,
                _entries_key(entries, compression),
                lambda e=entries: write_layer(e, store, compression),
            ),
        )
        for rel, entries in out
    ]


def _entries_key(entries: list[Entry], compression: str) -> str:
    """A memo key over what shapes a layer of local files: paths, kinds, modes, links, contents."""
    import hashlib

    from .digest import CHUNK

    parts = []
    for e in entries:
        content = ""
        if e.kind == "file":
            h = hashlib.sha256()
            if e.data is not None:
                h.update(e.data)
            else:
                try:
                    with open(e.source, "rb") as f:
                        while chunk := f.read(CHUNK):
                            h.update(chunk)
                except OSError as err:
                    raise InvalidInput(f"cannot read {e.source}: {err.strerror}") from None
            content = h.hexdigest()
        parts.append([e.path, e.kind, e.mode, e.linkname, e.uid, e.gid, content])
    return memo_key("files", parts, compression, source_date_epoch())


def _labels(card: dict, name: str, version: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    labels = {
        f"{ANNOTATION_PREFIX}title": name,
        f"{ANNOTATION_PREFIX}version": version,
        "dev.ociforge.version": __version__,
    }
    if card.get("description"):
        labels[f"{ANNOTATION_PREFIX}description"] = str(card["description"])[:512]
    if card.get("license"):
        labels[f"{ANNOTATION_PREFIX}licenses"] = str(card["license"])
    if card.get("authors"):
        authors = card["authors"]
        labels[f"{ANNOTATION_PREFIX}authors"] = (
            ", ".join(authors) if isinstance(authors, list) else str(authors)
        )
    for key in ("source", "revision", "url", "documentation", "vendor"):
        if card.get(key):
            labels[f"{ANNOTATION_PREFIX}{key}"] = str(card[key])
    labels.update(extra or {})
    return labels


def build(
    model: Any,
    *,
    platforms: Sequence[str | Platform] = ("linux/amd64",),
    requirements: Sequence[str] | str | os.PathLike | None = None,
    python: str | None = None,
    python_path: str | None = None,
    libc: str | None = None,
    base: str | Image | ImageIndex | None = None,
    to: str = "oci:out:model",
    name: str = "model",
    version: str = "0.1.0",
    batch_size: int | None = None,
    gpu: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    files: Mapping[str, str] | None = None,
    test_sample: Any = None,
    compression: str = "gzip",
    lock: str | os.PathLike | None = None,
    offline: bool = False,
    labels: Mapping[str, str] | None = None,
    cache: str | os.PathLike | None = None,
    bytecode: bool | None = None,
    **registry_opts: Any,
) -> BuildResult:
    """Build ``model`` into an image for every platform and write it to ``to``.

    ``requirements`` is a list, a requirements file, or ``"auto"`` (the model's imports mapped to
    installed distributions at their exact versions). ``gpu`` is a CUDA variant (``"cu121"``).
    ``files`` maps paths relative to the working directory in the image to local files or folders.
    ``python_path`` (with ``python`` and ``libc``, e.g. ``"glibc 2.36"``) declares the Python of a
    base where it cannot be found from the image's files and config.
    ``test_sample`` runs :func:`test` first and refuses to build when it fails. ``lock`` is a lock
    file from ``ociforge lock`` (a build from it resolves nothing); ``offline`` touches no network.
    """
    plats = parse_platforms(list(platforms))
    if not plats:
        raise InvalidInput("build: no platforms given")
    if compression not in ("gzip", "zstd", "none"):
        raise InvalidInput(f"unknown compression {compression!r} (gzip, zstd or none)")
    from .transport import check_writable

    check_writable(to)
    if offline:  # everything checked at once, before any work: one list of what is missing
        from .offline import preflight

        preflight(plats, lock=lock, base=base, python=python or host_python(), gpu=gpu)
    card = {**dict(metadata or {}), "name": name, "version": version}
    if test_sample is not None and _package_dir(model) is None:
        from ociforge_runtime.local import LocalTestError

        try:
            test(model, test_sample, batch_size=batch_size, metadata=card)
        except LocalTestError as e:
            raise BuildError(f"the model's test on the sample failed ({e}); not building") from None
    epoch = source_date_epoch()
    build_info = {
        "created": rfc3339(epoch),
        "platforms": [str(p) for p in plats],
        "gpu": gpu or "cpu",
    }
    packaged = _package_dir(model)
    if packaged is not None:  # a serialized model (e.g. from a bundle): its bytes as they are
        pkg, user_code = _read_package(packaged)
    else:
        pkg = _package(model, batch_size, card, build_info)

    from .model import auto_requirements, classify, referenced_modules

    if requirements == "auto":
        reqs, found_code = auto_requirements(pkg["model.pkl"])
        user_code = user_code if packaged is not None else found_code
        print("requirements='auto' resolved to: " + (", ".join(reqs) or "(none)"), file=sys.stderr)
    else:
        reqs = _requirement_list(requirements)
        if packaged is None:
            user_code, _third = classify(referenced_modules(pkg["model.pkl"]))

    store = BlobStore(cache or default_cache_dir())
    bases = _bases(base, plats, python, registry_opts, offline)

    targets = _targets(bases, python, python_path, libc, gpu)

    all_reqs = reqs + runtime_requirements()

    import json as _json
    from concurrent.futures import ThreadPoolExecutor

    from .bytecode import CompilePool, entry_sources
    from .install import can_compile_for, wheel_layers
    from .wheelcache import fetch

    runtime_entries = _runtime_entries()
    code_entries = _code_entries(user_code)
    runtime = write_layer(runtime_entries, store, compression)
    code = write_layer(code_entries, store, compression) if code_entries else None
    artifacts = _artifact_layers(files, store, compression)
    model_layer = write_layer(
        [Entry.dir(APP_DIR)]
        + [Entry.file(f"{MODEL_DIR}/{fname}", data, 0o644) for fname, data in sorted(pkg.items())],
        store,
        compression,
    )
    imports = (_json.loads(pkg["model.json"]).get("build") or {}).get("imports") or []
    labels_ = _labels(card, name, version, labels)
    images, layer_report = [], {}
    own = runtime_entries + code_entries
    own_files = entry_sources(own)
    roots = _startup_roots(own_files, imports)
    code_hash = _entries_key(own, compression)
    pool = CompilePool()
    side = ThreadPoolExecutor(1, thread_name_prefix="ociforge-bytecode")
    try:
        resolves = _resolves(all_reqs, list(targets.values()), lock, offline)
        warm = _prewarm(targets, bytecode, own_files, roots, pool, resolves)
        try:
            locks = _locks(all_reqs, list(targets.values()), lock, offline)
            # downloading waits on the network too: the head start goes on meanwhile
            fetched = {t: fetch(locks[t], offline=offline) for t in targets.values()}
        finally:
            pool.stop_optional()
            if warm is not None:
                warm.join()
        for p, target in targets.items():
            base_img, base_name = bases[p]
            wheel_files = fetched[target]
            compile_ = can_compile_for(target) if bytecode is None else bytecode
            if compile_ and not can_compile_for(target):
                raise BuildError(
                    f"bytecode=True, but this is Python {host_python()} and the image has Python "
                    f"{target.python}: build with that Python or bytecode=None"
                )
            # the bytecode compiles in worker processes while the wheel layers compress here
            pycs = (
                side.submit(
                    _bytecode_layer,
                    target,
                    locks[target],
                    wheel_files,
                    own_files,
                    roots,
                    code_hash,
                    store,
                    compression,
                    pool,
                )
                if compile_
                else None
            )
            wheels = wheel_layers(
                locks[target], target, store, compression, offline=offline, paths=wheel_files
            )
            bytecode_layer = pycs.result() if pycs is not None else None
            named: list[tuple[str, Layer]] = [
                (f"wheels {w.descriptor.annotations.get('org.ociforge.wheels', '')}", w)
                for w in wheels
            ]
            if bytecode_layer is not None:
                named.append(("bytecode of the modules loaded at start", bytecode_layer))
            named.append(("ociforge runtime", runtime))
            if code is not None:
                named.append(("model code: " + ", ".join(u.name for u in user_code), code))
            named.extend((f"artifact {rel}", layer) for rel, layer in artifacts)
            named.append(("model", model_layer))
            env = {
                "PYTHONPATH": ":".join(_search_path(target)),
                "PATH": f"{target.bin_dir}:"
                + base_img.config.config.env_dict().get(
                    "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                ),
                "PORT": str(PORT),
                "OCIFORGE_MODEL_DIR": MODEL_DIR,
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            changes = ConfigChanges(
                entrypoint=[target.interpreter, "-m", "ociforge_runtime"],
                cmd=[],
                env=env,
                working_dir=APP_DIR,
                user=USER,
                exposed_ports=[f"{PORT}/tcp"],
                labels=labels_,
                stop_signal="SIGTERM",
            )
            annotations = {k: v for k, v in labels_.items() if k.startswith(ANNOTATION_PREFIX)}
            img = append(
                base_img,
                [layer for _n, layer in named],
                store_source(store),
                changes=changes,
                history=[n for n, _l in named],
                annotations=annotations,
                created=epoch,
                store=store,
                base_name=base_name or None,
            )
            images.append(img)
            layer_report[str(p)] = [
                {"digest": layer.digest, "size": layer.size, "what": n} for n, layer in named
            ]
    finally:
        side.shutdown(wait=True)
        pool.close()
    index_annotations = {k: v for k, v in labels_.items() if k.startswith(ANNOTATION_PREFIX)}
    index_annotations[f"{ANNOTATION_PREFIX}created"] = rfc3339(epoch)
    result_obj: Image | ImageIndex = make_index(images, annotations=index_annotations)

    from .transport import write_to

    written = write_to(result_obj, to, **registry_opts)
    seen: dict[str, int] = {}
    for img in images:
        for d in img.blobs():
            seen[d.digest] = d.size
    return BuildResult(
        reference=written.reference,
        digest=written.digest,
        platforms=plats,
        layers=layer_report,
        size=sum(seen.values()),
        image=result_obj,
        requirements=all_reqs,
        locks=locks,
        written=written,
    )


def _resolve_options():
    """A build shows no requested_by: it skips the second uv run that finds them."""
    from .resolve import ResolveOptions

    return ResolveOptions(annotate=False)


def _resolves(reqs: list[str], targets: list, lock_path, offline: bool) -> bool:
    """Whether :func:`_locks` will wait on the network (uv): time the head start can use."""
    from .resolve import remembered

    return lock_path is None and not offline and not remembered(reqs, targets, _resolve_options())


def _locks(reqs: list[str], targets: list, lock_path, offline: bool) -> dict:
    from .lock import find_lock, read_lockfile

    if lock_path is not None:
        locks = read_lockfile(lock_path)
        return {t: find_lock(locks, t) for t in targets}
    if offline:
        raise BuildError(
            "offline=True needs a lock file: run `ociforge fetch` (or `ociforge lock`) on a "
            "connected machine and pass its lock"
        )
    from .resolve import resolve

    return resolve(reqs, targets, _resolve_options())

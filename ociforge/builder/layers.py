"""The layers a model build writes itself, over the base and the wheel layers: the bytecode of
what the image imports at start, the ociforge runtime, the user's code, artifacts, the model.

Each is keyed by what it is made of, so a rebuild that changes none of it writes none of it.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import ociforge_runtime
from ociforge_runtime.package import STARTUP_IMPORTS

from ..errors import InvalidInput
from ..model.imports import UserCode
from ..oci.blobstore import BlobStore
from ..oci.digest import CHUNK
from ..oci.layer import Entry, Layer, entries_from_tree, image_path, source_date_epoch, write_layer
from ..oci.layercache import memo_key, memoized
from ..python.bytecode import CompilePool, bytecode_layer, modules_under, prewarm, wheel_sources
from ..python.install import PYC_FORMAT, can_compile_for
from ..python.lock import Lock
from ..python.target import Target
from ..python.wheelzip import WheelZip
from .paths import APP_DIR, CODE_DIR, IGNORE, MODEL_DIR, RUNTIME_DIR


def runtime_entries() -> list[Entry]:
    """The ociforge runtime's package, as this ociforge ships it (the same on every platform)."""
    src = Path(ociforge_runtime.__file__).parent
    return list(entries_from_tree(src, f"{RUNTIME_DIR}/ociforge_runtime", IGNORE))


def code_entries(user_code: list[UserCode]) -> list[Entry]:
    """The user's own modules that the model imports, as source."""
    entries: list[Entry] = []
    for uc in user_code:
        dest = f"{CODE_DIR}/{uc.name}" if uc.is_package else f"{CODE_DIR}/{uc.name}.py"
        entries.extend(entries_from_tree(uc.path, dest, IGNORE))
    return entries


def model_entries(pkg: Mapping[str, bytes]) -> list[Entry]:
    """The model package, and the working folder it is served from."""
    return [Entry.dir(APP_DIR)] + [
        Entry.file(f"{MODEL_DIR}/{fname}", data, 0o644) for fname, data in sorted(pkg.items())
    ]


def startup_roots(own_files, imports: list[str]) -> list[str]:
    """Where the image's startup imports begin: the runtime's and the user's modules, the
    pickle's modules, and what the runtime loads by name."""
    return sorted(
        set(modules_under(own_files, RUNTIME_DIR))
        | set(modules_under(own_files, CODE_DIR))
        | set(imports)
        | set(STARTUP_IMPORTS)
    )


def search_path(target: Target) -> list[str]:
    """The image's PYTHONPATH, where its modules are found (also its ``PYTHONPATH`` env)."""
    return [RUNTIME_DIR, CODE_DIR, target.site_packages]


def start_prewarm(
    targets: Mapping,
    bytecode: bool | None,
    own_files,
    roots: list[str],
    pool: CompilePool,
    resolves: bool,
) -> threading.Thread | None:
    """A thread compiling the startup closure from this Python's installed packages while the
    requirements resolve (:func:`ociforge.python.bytecode.prewarm`); None when nothing will
    compile. It starts at once when the resolution goes to the network (``resolves``), else only
    if the lookup takes longer than a moment."""
    target = next((t for t in targets.values() if can_compile_for(t)), None)
    if target is None or bytecode is False:
        return None
    thread = threading.Thread(
        target=prewarm,
        args=(own_files, search_path(target), target.site_packages, roots, pool),
        kwargs={"delay": 0.0 if resolves else 0.25},
        name="ociforge-prewarm",
        daemon=True,
    )
    thread.start()
    return thread


def startup_bytecode_layer(
    target: Target,
    lock: Lock,
    wheel_files: list[Path],
    own_files,
    roots: list[str],
    code_hash: str,
    store: BlobStore,
    compression: str,
    pool: CompilePool,
) -> Layer | None:
    """The .pyc of what the image imports when it starts (:mod:`ociforge.python.bytecode`), over
    the wheels, the runtime and the user's code (``own_files``, whose content ``code_hash`` keys),
    on the image's own PYTHONPATH."""
    search = search_path(target)
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


def artifact_layers(
    files: Mapping[str, str] | None, store: BlobStore, compression: str
) -> list[tuple[str, Layer]]:
    """One layer per ``files`` entry, under the working folder."""
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
                entries_key(entries, compression),
                lambda e=entries: write_layer(e, store, compression),
            ),
        )
        for rel, entries in out
    ]


def entries_key(entries: list[Entry], compression: str) -> str:
    """A memo key over what shapes a layer of local files: paths, kinds, modes, links, contents."""
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

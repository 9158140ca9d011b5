"""The layers a model build writes itself, over the base and the wheel layers: the bytecode of
what the image imports at start, the ociforge runtime, the user's code, artifacts, the model.

Each is keyed by what it is made of, so a rebuild that changes none of it writes none of it.

The user's folders hold more than code: ``.env`` files, ``.pypirc``, SSH keys, cloud
credentials. The code layer leaves out what :data:`SECRETS` names (every dotfile and dot-folder,
well-known key and credential files) and private keys found by their content; a
``.ociforgeignore`` (gitignore syntax) beside a package or in it leaves out more, and a ``!NAME``
line there ships one of those anyway. ``files=`` ships what the user named, as named, and says so
on the log for each file that looks like a secret.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import ociforge_runtime
import pathspec
from ociforge_runtime.package import STARTUP_IMPORTS

from ..cache import records
from ..errors import InvalidInput
from ..model.imports import UserCode
from ..oci.blobstore import BlobStore
from ..oci.digest import CHUNK
from ..oci.layer import Entry, Layer, entries_from_tree, image_path, source_date_epoch, write_layer
from ..oci.layercache import memo_key, memoized
from ..python.bytecode import (
    CompilePool,
    Trace,
    bytecode_layer,
    modules_under,
    prewarm,
    wheel_sources,
)
from ..python.install import PYC_FORMAT, can_compile_for
from ..python.lock import Lock
from ..python.target import Target
from ..python.wheelzip import WheelZip
from .cachestep import wheel_paths
from .paths import APP_DIR, CODE_DIR, IGNORE, MODEL_DIR, RUNTIME_DIR


def runtime_entries() -> list[Entry]:
    """The ociforge runtime's package, as this ociforge ships it (the same on every platform)."""
    src = Path(ociforge_runtime.__file__).parent
    return list(entries_from_tree(src, f"{RUNTIME_DIR}/ociforge_runtime", IGNORE))


log = logging.getLogger("ociforge.build")

CODE_IGNORE_FILE = ".ociforgeignore"
# Left out of the code layer unless a .ociforgeignore says otherwise (gitignore syntax).
SECRETS = (
    ".*",  # dotfiles and dot-folders: .env*, .pypirc, .netrc, .npmrc, .git-credentials,
    #        .dockercfg, .aws/, .ssh/, .docker/, .kube/, .gnupg/ ...
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "credentials.json",
    "client_secret*.json",
    "service-account*.json",
    "kubeconfig",
)
_SECRETS = pathspec.GitIgnoreSpec.from_lines(SECRETS)
_KEY_NAMES = pathspec.GitIgnoreSpec.from_lines(["*.pem", "id_*", "!*.pub", "!*.py"])
_KEY_MARK = b"PRIVATE KEY"  # -----BEGIN (RSA |EC |OPENSSH |ENCRYPTED )PRIVATE KEY-----, PGP's


def _ignored(spec: pathspec.PathSpec, path: str) -> bool | None:
    """True: ``spec`` leaves ``path`` out; False: a ``!`` line takes it back; None: no line."""
    return spec.check_file(path).include


def _private_key(path: Path) -> bool:
    """A file named like a key (``*.pem``, ``id_*``) whose first 64 KiB hold a private key."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 << 10)
    except OSError:
        return False
    return b"-----BEGIN" in head and _KEY_MARK in head


def looks_secret(rel: str, local: Path | None = None) -> bool:
    """Whether the file at ``rel`` (a ``/``-separated path, ``local`` on disk) looks like a
    secret: named so by :data:`SECRETS`, or a private key by its name and content."""
    if _ignored(_SECRETS, rel):
        return True
    return local is not None and bool(_ignored(_KEY_NAMES, rel)) and _private_key(local)


def _ignore_file(folder: Path) -> pathspec.PathSpec | None:
    try:
        text = (folder / CODE_IGNORE_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read {folder / CODE_IGNORE_FILE}: {e}") from None
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


class _CodeFilter:
    """What of one package folder stays out of the code layer: :data:`SECRETS` and private keys,
    then the ``.ociforgeignore`` beside the package (its paths start with the package's name),
    then the package's own; the last file with a line for a path decides, as with git."""

    def __init__(self, package: Path) -> None:
        self.package = package
        self.rules: list[tuple[str, pathspec.PathSpec]] = []
        above = _ignore_file(package.parent)
        if above is not None:
            self.rules.append((f"{package.name}/", above))
        own = _ignore_file(package)
        if own is not None:
            self.rules.append(("", own))
        self.left_out: list[str] = []

    def __call__(self, rel: str, is_dir: bool) -> bool:
        path = f"{rel}/" if is_dir else rel
        out = _ignored(_SECRETS, path) or (
            not is_dir and _ignored(_KEY_NAMES, rel) and _private_key(self.package / rel)
        )
        for base, spec in self.rules:
            said = _ignored(spec, base + path)
            if said is not None:
                out = said
        if out:
            self.left_out.append(f"{self.package.name}/{path}")
        return bool(out)


def code_entries(user_code: list[UserCode]) -> list[Entry]:
    """The user's own modules that the model imports, as source: for a package, its folder less
    what :class:`_CodeFilter` leaves out (said on the log, one line)."""
    entries: list[Entry] = []
    left_out: list[str] = []
    for uc in user_code:
        if uc.is_package:
            keep = _CodeFilter(uc.path)
            entries.extend(
                entries_from_tree(uc.path, f"{CODE_DIR}/{uc.name}", IGNORE, exclude=keep)
            )
            left_out += keep.left_out
        else:
            entries.extend(entries_from_tree(uc.path, f"{CODE_DIR}/{uc.name}.py", IGNORE))
    if left_out:
        log.warning(
            "left out of the code layer (dotfiles and secrets; a %s line !NAME ships one): %s",
            CODE_IGNORE_FILE,
            ", ".join(left_out),
        )
    return entries


def listing(entries: Iterable[Entry], under: str) -> list[str]:
    """The files and links of ``entries``, as paths below the image folder ``under``."""
    base = under.strip("/") + "/"
    return [e.path[len(base) :] if e.path.startswith(base) else e.path
            for e in entries if e.kind != "dir"]  # fmt: skip


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
    wheel_files: Sequence[Path],
    own_files,
    roots: list[str],
    code_hash: str,
    store: BlobStore,
    compression: str,
    pool: CompilePool,
) -> Layer | None:
    r"""The .pyc of what the image imports when it starts (:mod:`ociforge.python.bytecode`), over
    the wheels, the runtime and the user's code (``own_files``, whose content ``code_hash`` keys),
    on the image's own PYTHONPATH.

    The layer is keyed by the wheels the closure *used*, not by the whole lock, so adding a
    dependency the start does not import reuses it without opening a wheel. A *closure record*
    (:mod:`ociforge.cache.records`), keyed by everything but the wheels (search path, roots,
    code, compression, epoch, Python and .pyc format), says what the last closure read: the
    sha256s of the wheels whose sources it found (S), every wheel of its lock (L, the platform's:
    the platform is in its key), and the top-level names of the modules it looked up, found or not (N).

    Why reusing it is sound for a new lock L' when S ⊆ L' and no wheel of L' \ L ships a .py
    file under a name of N: the closure is a walk from the roots in which each step looks a
    module up (:class:`~ociforge.python.bytecode._Finder`: ``NAME/__init__.py``, then
    ``NAME.py``, in each search-path folder in turn) and compiles what it finds; what a
    lookup answers depends only on the files at the paths it checks, all below a top-level name
    of N. Those files are the own files (the same: ``code_hash`` is in the key), the files of
    the wheels of S (the same bytes: the same sha256s), and files of no other wheel of L
    (else that wheel's file would have been found or shadowed one that was, so it would be in
    S... a wheel of L whose file lost to S's at the same path stays in L' with S, in the same
    order). A wheel of L' \ L has no file there by the test. So every lookup answers the same,
    step by step, and the walk, its sources and the .pyc are the same: the layer is a function
    of S and the settings, which is its key. Anything else (no record, one for a lock where
    the test fails, a layer no longer there) compiles over every wheel, as a first build does.
    The record is trusted as the registry cache's layer entries are: whoever can push the
    image can write both.
    """
    search = search_path(target)
    settings = [search, roots, code_hash, compression, source_date_epoch()]
    settings.append(f"{sys.version} {PYC_FORMAT}")
    # per platform: another platform's wheels are another lock (its layer key may be the same)
    closure_key = memo_key("bytecode-closure", target.to_json(), *settings)
    shas = sorted(w.sha256 for w in lock.packages)
    last = records.recall(store, closure_key, _closure_record)
    if last is not None and _still_holds(last, lock, wheel_files, target):
        layer = memoized(store, memo_key("bytecode", last["used"], *settings), lambda: None)
        if layer is not None:
            records.keep(store, closure_key, {**last, "lock": shas})  # true of this lock too
            return layer

    wheels = list(lock.packages)
    trace = Trace()
    owner: dict[str, str] = {}  # image path of a wheel's source -> the wheel's sha256
    with ExitStack() as stack:
        files: dict = {}
        for w, path in zip(wheels, wheel_paths(wheel_files, lock, wheels), strict=True):
            zf = stack.enter_context(WheelZip(path))
            sources = wheel_sources(Path(path), target.site_packages, zf)
            files.update(sources)
            owner.update(dict.fromkeys(sources, w.sha256))  # the last one wins, as in files
        files.update(own_files)
        made = bytecode_layer(files, search, roots, store, compression, pool=pool, trace=trace)
    used = sorted({owner[p] for p in trace.found if p in owner and p not in own_files})
    record = {
        "format": _CLOSURE_FORMAT,
        "used": used,
        "lock": shas,
        "looked": sorted({name.split(".")[0] for name in trace.looked}),
    }
    layer = None
    if made is not None:
        layer = memoized(store, memo_key("bytecode", used, *settings), lambda: made)
    records.keep(store, closure_key, record)
    return layer


_CLOSURE_FORMAT = 1


def _closure_record(data) -> dict:
    """A closure record's fields, checked (it may come from a registry cache)."""
    if not isinstance(data, dict) or data.get("format") != _CLOSURE_FORMAT:
        raise ValueError("not a closure record of this format")
    used = records.hexes(data.get("used"), "used")
    lock = records.hexes(data.get("lock"), "lock")
    if not set(used) <= set(lock):
        raise ValueError("it used wheels that are not in its lock")
    looked = records.strings(data.get("looked"), "looked", longest=512)
    return {"format": _CLOSURE_FORMAT, "used": sorted(used), "lock": sorted(lock), "looked": looked}


def _still_holds(last: dict, lock: Lock, wheel_files: Sequence[Path], target: Target) -> bool:
    """Whether the closure ``last`` recorded is this lock's too (see
    :func:`startup_bytecode_layer`): every wheel it used is here, and no wheel new to this lock
    ships a module under a name it looked up. Reads only the new wheels' listings."""
    here = {w.sha256 for w in lock.packages}
    if not set(last["used"]) <= here:
        return False
    before = set(last["lock"])
    new = [w for w in lock.packages if w.sha256 not in before]
    looked = set(last["looked"])
    root = image_path(target.site_packages) + "/"
    for path in wheel_paths(wheel_files, lock, new):
        with WheelZip(path) as zf:
            sources = wheel_sources(Path(path), target.site_packages, zf)
        tops = {p[len(root) :].split("/")[0].removesuffix(".py") for p in sources}
        if tops & looked:
            return False
    return True


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
        entries = list(entries_from_tree(local, f"{APP_DIR}/{rel}", IGNORE))
        _say_secrets(rel, local, entries)
        out.append((rel, entries))
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


def _say_secrets(rel: str, local: str, entries: list[Entry]) -> None:
    """One warning naming the files of artifact ``rel`` that look like secrets (they ship: what
    ``files=`` names is what the image holds)."""
    base = f"{APP_DIR}/{rel}".strip("/")
    found = []
    for e in entries:
        if e.kind != "file" or e.source is None:
            continue
        inner = e.path[len(base) + 1 :] if e.path != base else Path(local).name
        if looks_secret(inner, Path(e.source)):
            found.append(e.source)
    if found:
        log.warning(
            "artifact %r ships files that look like secrets (take them out if they are): %s",
            rel,
            ", ".join(found),
        )


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

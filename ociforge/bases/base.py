"""Base images: built from a ``base_layers/`` recipe and Debian packages, or any image you trust.

A recipe (TOML, reviewed like code) names a Debian suite, the packages, users, folders,
environment and labels. Its *lock* (one per recipe and architecture, committed next to it) pins each
package's version and sha256, so the same recipe and lock give the same digests on any machine on
any day, rebuilt from the local ``.deb`` cache or any mirror or snapshot that still has them.

A built base has two layers: every package's files (``ociforge.bases.debian``), then what maintainer
scripts would have made that a container needs (``/etc/passwd``, ``/etc/group``, the CA bundle,
``/tmp``, homes, symlinks, a dpkg status for scanners). Built bases are cached by the hash of
recipe and lock (``default_cache_dir()/bases/``) and reused.

Whatever the base, the model build needs its Python: :mod:`ociforge.bases.pythoninfo` finds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tarfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ociforge_base_layers  # base_layers/, installed as a package with its data

from ..cachedir import default_cache_dir
from ..errors import InvalidInput, MissingInputs, NotFound
from ..fsutil import atomic_write
from ..oci import mediatypes as mt
from ..oci.blobstore import BlobStore
from ..oci.digest import of_bytes
from ..oci.image import ConfigChanges, Image, ImageIndex, append, from_raw, make_index, store_source
from ..oci.layer import Entry, Layer, decompressor, image_path, write_layer
from ..oci.layercache import compressor_versions, memo_key, memoized
from ..oci.manifest import canonical_json
from ..oci.platform import Platform, parse_platforms
from ..python.bytecode import compile_all, pyc_path
from ..python.install import PYC_FORMAT
from . import debian
from .pythoninfo import LABEL, OCIFORGE_SITE_PACKAGES

log = logging.getLogger(__name__)

# Bump when the bytes a recipe+lock produce change (layer contents, config), to miss old caches.
FORMAT = "3"  # 3: a layer of the standard library's bytecode
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


def recipes_dir() -> Path:
    """``$OCIFORGE_BASE_LAYERS``, else the ``base_layers/`` folder shipped with ociforge."""
    env = os.environ.get("OCIFORGE_BASE_LAYERS")
    if env:
        return Path(env)
    return Path(ociforge_base_layers.__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# Recipes


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str = "/sbin/nologin"


@dataclass(frozen=True)
class Folder:
    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    mirror: str
    suite: str
    components: tuple[str, ...]
    architectures: tuple[str, ...]
    packages: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    python_version: str = ""  # major.minor
    python_path: str = ""
    python_package: str = ""
    libc_package: str = "libc6"
    users: tuple[User, ...] = ()
    folders: tuple[Folder, ...] = ()
    symlinks: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    user: str = "65532:65532"
    workdir: str = ""
    cmd: tuple[str, ...] = ()
    extra_ca_certs: tuple[Path, ...] = ()
    compression: str = "gzip"
    default: bool = False

    @property
    def platforms(self) -> list[Platform]:
        return [Platform.parse(f"linux/{a}") for a in self.architectures]

    def lock_path(self, arch: str) -> Path:
        return self.path.parent / "locks" / f"{self.name}-{arch}.json"

    def resolution_inputs(self) -> dict:
        """What the lock was resolved from; a lock made from other inputs is stale."""
        return {
            "suite": self.suite,
            "components": list(self.components),
            "packages": sorted(self.packages),
            "exclude": sorted(self.exclude),
            "prefer": list(self.prefer),
        }

    def fingerprint(self) -> str:
        """A hash of everything in the recipe that shapes the image (not mirror or description)."""
        obj = {
            k: v
            for k, v in _recipe_json(self).items()
            if k not in ("mirror", "description", "path")
        }
        obj["extra_ca_certs"] = [of_bytes(p.read_bytes()) for p in self.extra_ca_certs]
        return of_bytes(canonical_json(obj))


def _recipe_json(r: Recipe) -> dict:
    out = {}
    for k, v in r.__dict__.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = [x.__dict__ if isinstance(x, (User, Folder)) else str(x) for x in v]
        out[k] = v
    return out


def _mode(value, where: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise InvalidInput(f'{where}: mode {value!r} is not octal (like "1777")') from None


_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[0-9]+[A-Za-z0-9_-]*)*")


def recipe_named_by_label(value: str | None) -> Recipe | None:
    """The recipe an image label names, or None.

    A label is outside data: it may only name a recipe shipped with ociforge, never a path to a
    file (``load_recipe`` also takes paths, which a hostile base image must not reach).
    """
    if not value or not _RECIPE_NAME.fullmatch(value):
        return None
    try:
        return load_recipe(value)
    except Exception:  # noqa: BLE001 - a recipe not here: callers fall back to defaults
        return None


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A recipe by name (``python3.11-bookworm``, from :func:`recipes_dir`) or by path to a .toml."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = recipes_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(r.name for r in list_recipes()) or "none"
        raise NotFound(f"no base recipe {str(name_or_path)!r} (known: {known})")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid TOML: {e}") from None
    where = str(path)
    try:
        deb = doc["debian"]
        py = doc.get("python", {})
        users = tuple(
            User(
                u["name"],
                int(u["uid"]),
                int(u.get("gid", u["uid"])),
                u.get("home", f"/home/{u['name']}"),
                u.get("shell", "/sbin/nologin"),
            )
            for u in doc.get("users", [])
        )
        folders = tuple(
            Folder(
                f["path"],
                _mode(f.get("mode", "0755"), where),
                int(f.get("uid", 0)),
                int(f.get("gid", f.get("uid", 0))),
            )
            for f in doc.get("folders", [])
        )
        cfg = doc.get("config", {})
        recipe = Recipe(
            name=doc.get("name", path.stem),
            path=path.resolve(),
            description=doc.get("description", ""),
            mirror=deb.get("mirror", debian.DEFAULT_MIRROR),
            suite=deb["suite"],
            components=tuple(deb.get("components", ["main"])),
            architectures=tuple(deb.get("architectures", ["amd64", "arm64"])),
            packages=tuple(deb["packages"]),
            exclude=tuple(deb.get("exclude", [])),
            prefer=tuple(deb.get("prefer", [])),
            python_version=str(py.get("version", "")),
            python_path=py.get("path", ""),
            python_package=py.get("package", ""),
            libc_package=deb.get("libc_package", "libc6"),
            users=users,
            folders=folders,
            symlinks=dict(doc.get("symlinks", {})),
            env={k: str(v) for k, v in doc.get("env", {}).items()},
            labels={k: str(v) for k, v in doc.get("labels", {}).items()},
            user=str(cfg.get("user", "65532:65532")),
            workdir=cfg.get("workdir", ""),
            cmd=tuple(cfg.get("cmd", [py["path"]] if py.get("path") else [])),
            extra_ca_certs=tuple(
                (path.parent / p).resolve() for p in doc.get("ca_certificates", {}).get("extra", [])
            ),
            compression=doc.get("compression", "gzip"),
            default=bool(doc.get("default", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"{where}: missing or invalid field {e}") from None
    for p in recipe.extra_ca_certs:
        if not p.is_file():
            raise NotFound(f"{where}: extra CA certificate {p} not found")
    if recipe.compression not in mt.COMPRESSIONS:
        raise InvalidInput(f"{where}: compression must be one of {', '.join(mt.COMPRESSIONS)}")
    for u in users:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]*", u.name):
            raise InvalidInput(f"{where}: invalid user name {u.name!r}")
    return recipe


def list_recipes(directory: Path | None = None) -> list[Recipe]:
    d = directory or recipes_dir()
    return [load_recipe(p) for p in sorted(d.glob("*.toml"))]


# ---------------------------------------------------------------------------------------------
# Locks


@dataclass(frozen=True)
class Lock:
    """What a recipe resolved to for one architecture: enough to rebuild it byte for byte."""

    recipe: str
    architecture: str
    suite: str
    date: int  # the InRelease date: the time stamp of every file and of the image
    inputs: dict
    packages: tuple[debian.Package, ...]

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe,
            "architecture": self.architecture,
            "suite": self.suite,
            "date": self.date,
            "inputs": self.inputs,
            "packages": [p.lock_json() for p in self.packages],
        }

    @classmethod
    def from_json(cls, obj: dict, where: str) -> Lock:
        try:
            return cls(
                recipe=obj["recipe"],
                architecture=obj["architecture"],
                suite=obj["suite"],
                date=int(obj["date"]),
                inputs=obj["inputs"],
                packages=tuple(debian.Package.from_lock(p) for p in obj["packages"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"{where}: invalid lock: {e}") from None

    def package(self, name: str) -> debian.Package | None:
        return next((p for p in self.packages if p.name == name), None)


def mirror_for(recipe: Recipe, mirror: str | None = None) -> str:
    """The Debian mirror to use: the one given, else ``$OCIFORGE_DEBIAN_MIRROR`` (named once for
    every command, e.g. a mirror inside an air-gapped network), else the recipe's."""
    return mirror or os.environ.get("OCIFORGE_DEBIAN_MIRROR") or recipe.mirror


def resolve_lock(
    recipe: Recipe, arch: str, mirror: str | None = None, keyring: str = debian.DEFAULT_KEYRING
) -> Lock:
    """Resolve the recipe against the mirror's current, signature-checked index."""
    release = debian.fetch_release(mirror_for(recipe, mirror), recipe.suite, keyring)
    index = debian.fetch_index(release, arch, recipe.components)
    pkgs = debian.resolve(index, recipe.packages, recipe.exclude, recipe.prefer)
    return Lock(
        recipe.name, arch, recipe.suite, release.date, recipe.resolution_inputs(), tuple(pkgs)
    )


def write_lock(lock: Lock, path: Path) -> None:
    atomic_write(path, json.dumps(lock.to_json(), indent=1, sort_keys=True) + "\n", mkdir=True)


def read_lock(recipe: Recipe, arch: str) -> Lock | None:
    path = recipe.lock_path(arch)
    if not path.is_file():
        return None
    try:
        lock = Lock.from_json(json.loads(path.read_text()), str(path))
    except ValueError as e:
        raise InvalidInput(f"{path}: not valid JSON: {e}") from None
    if lock.inputs != recipe.resolution_inputs():
        raise InvalidInput(
            f"{path} was resolved for other packages than {recipe.path} now names; "
            f"run `ociforge base lock {recipe.name}` to update it"
        )
    return lock


def lock_for(
    recipe: Recipe,
    arch: str,
    *,
    update: bool = False,
    mirror: str | None = None,
    keyring: str = debian.DEFAULT_KEYRING,
    offline: bool = False,
) -> Lock:
    """The committed lock, or (when there is none, or ``update``) a fresh one, written next to it."""
    lock = None if update else read_lock(recipe, arch)
    if lock is None and offline:
        raise MissingInputs(
            [f"base lock {recipe.lock_path(arch)} (recipe {recipe.name}, {arch})"],
            f"ociforge base lock {recipe.name}",
        )
    if lock is None:
        lock = resolve_lock(recipe, arch, mirror, keyring)
        write_lock(lock, recipe.lock_path(arch))
    return lock


# ---------------------------------------------------------------------------------------------
# Building


def _store() -> BlobStore:
    return BlobStore(default_cache_dir())


def _passwd(users: Iterable[User]) -> bytes:
    return "".join(
        f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{u.shell}\n" for u in users
    ).encode()


def _group(users: Iterable[User]) -> bytes:
    seen: dict[int, str] = {}
    for u in users:
        seen.setdefault(u.gid, u.name)
    return "".join(f"{name}:x:{gid}:\n" for gid, name in seen.items()).encode()


def _dpkg_status(pkg: debian.Package) -> bytes:
    """Enough of dpkg's record for image scanners (trivy, grype, syft) to see the package."""
    lines = [f"Package: {pkg.name}", "Status: install ok installed"]
    if pkg.source and pkg.source != pkg.name:
        lines.append(f"Source: {pkg.source}")
    lines += [f"Version: {pkg.version}", f"Architecture: {pkg.architecture}"]
    return ("\n".join(lines) + "\n").encode()


def _system_entries(
    recipe: Recipe, lock: Lock, certs: dict[str, bytes], tree: set[str]
) -> list[Entry]:
    """What maintainer scripts would have made that a container needs."""
    out = [
        Entry.file("etc/passwd", _passwd(recipe.users)),
        Entry.file("etc/group", _group(recipe.users)),
        Entry.file(
            "etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
        ),
    ]
    if certs or recipe.extra_ca_certs:
        bundle = b"".join(c if c.endswith(b"\n") else c + b"\n" for _p, c in sorted(certs.items()))
        for p in recipe.extra_ca_certs:
            c = p.read_bytes()
            bundle += c if c.endswith(b"\n") else c + b"\n"
        out.append(Entry.file(CA_BUNDLE, bundle))
    for u in recipe.users:
        if u.home != "/" and image_path(u.home) not in tree:
            out.append(Entry.dir(u.home, 0o700, uid=u.uid, gid=u.gid))
    for f in recipe.folders:
        out.append(Entry.dir(f.path, f.mode, uid=f.uid, gid=f.gid))
    for link, target in sorted(recipe.symlinks.items()):
        # /bin/sh is /usr/bin/sh on a merged-/usr system: writing it under bin/ would make a real
        # bin/ directory in this layer that hides the bin -> usr/bin link below it.
        path = debian.usrmerged(image_path(link))
        if path not in tree:
            out.append(Entry.symlink(path, target))
    for pkg in lock.packages:
        out.append(Entry.file(f"var/lib/dpkg/status.d/{pkg.name}", _dpkg_status(pkg)))
    return out


def _config_changes(recipe: Recipe, lock: Lock) -> ConfigChanges:
    labels = {
        f"{LABEL}.base.recipe": recipe.name,
        f"{LABEL}.base.suite": recipe.suite,
        "org.opencontainers.image.description": recipe.description,
    }
    py_pkg = lock.package(recipe.python_package) if recipe.python_package else None
    if recipe.python_path:
        version = debian.upstream_version(py_pkg.version) if py_pkg else recipe.python_version
        labels.update(
            {
                f"{LABEL}.python.version": version,
                f"{LABEL}.python.path": recipe.python_path,
                f"{LABEL}.python.site-packages": OCIFORGE_SITE_PACKAGES,
            }
        )
    libc = lock.package(recipe.libc_package)
    if libc is not None:
        labels[f"{LABEL}.libc"] = "glibc"
        labels[f"{LABEL}.libc.version"] = ".".join(
            debian.upstream_version(libc.version).split(".")[:2]
        )
    labels.update(recipe.labels)
    return ConfigChanges(
        env=recipe.env,
        user=recipe.user,
        labels=labels,
        cmd=list(recipe.cmd) if recipe.cmd else None,
        working_dir=recipe.workdir or None,
    )


def _cache_path(kind: str, key: str) -> Path:
    return default_cache_dir() / "bases" / kind / f"{key.split(':')[-1]}.json"


def _write_json_atomic(path: Path, obj: dict) -> None:
    atomic_write(path, canonical_json(obj), mkdir=True)


def _packages_layer(
    recipe: Recipe, lock: Lock, mirror: str, store: BlobStore
) -> tuple[Layer, set[str], dict[str, bytes]]:
    """The layer of all packages' files (cached), the paths in it, and the CA certificates."""
    debs = [(p, debian.fetch_deb(mirror, p)) for p in lock.packages]
    key = memo_key(
        "base-packages", FORMAT, lock.date, recipe.compression, [p.sha256 for p, _ in debs]
    )
    datas = [debian.DebData(path, f"{p.name}_{p.version}_{p.architecture}.deb") for p, path in debs]
    try:
        groups = [(d.what, debian.deb_entries(d)) for d in datas]
        entries = debian.merge_entries(groups)
        tree = {e.path for e in entries}
        certs: dict[str, bytes] = {}
        for d, (p, _path) in zip(datas, debs, strict=True):
            if p.name == "ca-certificates":
                certs = d.read_files(
                    lambda s: s.startswith("usr/share/ca-certificates/") and s.endswith(".crt")
                )
        layer = memoized(
            store, key, lambda: write_layer(entries, store, recipe.compression, epoch=lock.date)
        )
        return layer, tree, certs
    finally:
        for d in datas:
            d.close()


def _bytecode_identity(recipe: Recipe) -> str:
    """What the bytecode layer depends on besides the packages: the compiling Python and format."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != recipe.python_version:
        return ""
    return f"{sys.version} {PYC_FORMAT}"


def _bytecode_layer(recipe: Recipe, pkg_layer: Layer, store: BlobStore, epoch: int) -> Layer | None:
    """The .pyc files Debian's postinst scripts would have written (py3compile), as a layer.

    Without them every start of the image compiles the standard library again in memory (the
    server runs as a user who cannot write them), which costs about half a second of cold start.
    They are compiled with this interpreter, so only when it is the recipe's Python version
    (unchecked-hash .pyc: no source mtime inside, the same bytes every time); otherwise None.
    """
    if not _bytecode_identity(recipe):
        return None  # this Python cannot write the recipe Python's .pyc
    roots = (f"usr/lib/python{recipe.python_version}/", "usr/lib/python3/dist-packages/")

    def make() -> Layer:
        sources = []
        with (
            store.open_blob(pkg_layer.digest) as raw,
            tarfile.open(fileobj=decompressor(raw, pkg_layer.media_type), mode="r|") as tf,
        ):
            for m in tf:
                name = m.name.lstrip("./")
                if m.isfile() and name.endswith(".py") and name.startswith(roots):
                    sources.append(("/" + name, tf.extractfile(m).read()))
        entries = [  # compiled in worker processes, one per CPU
            Entry.file(pyc_path(name[1:]), pyc, 0o644)
            for name, pyc in compile_all(sources)
            if pyc is not None
        ]
        return write_layer(entries, store, recipe.compression, epoch=epoch)

    key = memo_key(
        "base-bytecode", pkg_layer.diff_id, recipe.compression, epoch, sys.version, PYC_FORMAT
    )
    return memoized(store, key, make)


def build_platform(
    recipe: Recipe,
    platform: Platform,
    *,
    mirror: str | None = None,
    update_lock: bool = False,
    store: BlobStore | None = None,
    keyring: str = debian.DEFAULT_KEYRING,
    offline: bool = False,
    memo=None,
) -> Image:
    """The base image of ``recipe`` for one platform, from its lock (cached, reused when built).

    ``offline``: from the built-base cache or the ``.deb`` cache only; what is missing is listed.
    ``memo``: a build's registry cache (:class:`ociforge.cache.memo.BuildMemo`), asked when this
    machine has not built the base, and told of the base used (no ``.deb`` is read on a hit).
    """
    platform = Platform.parse(platform)
    arch = platform.debian_arch
    if arch not in recipe.architectures:
        raise InvalidInput(
            f"recipe {recipe.name} is for {', '.join(recipe.architectures)}, not {arch} ({platform})"
        )
    store = store or _store()
    lock = lock_for(
        recipe, arch, update=update_lock, mirror=mirror, keyring=keyring, offline=offline
    )
    key = of_bytes(
        canonical_json(
            {
                "format": FORMAT,
                "recipe": recipe.fingerprint(),
                "lock": lock.to_json(),
                "platform": str(platform),
                "bytecode": _bytecode_identity(recipe),
                # a base built with another deflate or zstd build has other layer digests
                "compressors": compressor_versions(),
            }
        )
    )
    cached = _load_cached(key, store)
    if cached is None and memo is not None:
        cached = memo.image(key)
    if cached is not None:
        if memo is not None:
            memo.note_image(key, cached)
        return cached
    if offline:
        missing = [
            p for p in lock.packages if not (debian.deb_cache_dir() / f"{p.sha256}.deb").is_file()
        ]
        if missing:
            raise MissingInputs(
                [f"{p.name}_{p.version}_{p.architecture}.deb (sha256 {p.sha256})" for p in missing],
                f"ociforge fetch --platform {platform}",
            )
    pkg_layer, tree, certs = _packages_layer(recipe, lock, mirror_for(recipe, mirror), store)
    sys_layer = write_layer(
        _system_entries(recipe, lock, certs, tree), store, recipe.compression, epoch=lock.date
    )
    layers = [pkg_layer, sys_layer]
    history = [
        f"ociforge base: {len(lock.packages)} Debian {recipe.suite} packages for {arch}",
        "ociforge base: users, CA bundle, folders",
    ]
    pyc_layer = _bytecode_layer(recipe, pkg_layer, store, lock.date)
    if pyc_layer is not None:
        layers.append(pyc_layer)
        history.append(f"ociforge base: bytecode of Python {recipe.python_version}'s modules")
    img = append(
        None,
        layers,
        store_source(store),
        platform=platform,
        changes=_config_changes(recipe, lock),
        history=history,
        created=lock.date,
        store=store,
    )
    store.put_bytes(img.raw_manifest)
    _write_json_atomic(_cache_path("images", key), {"manifest": img.digest})
    if memo is not None:
        memo.note_image(key, img)
    return img


def _load_cached(key: str, store: BlobStore) -> Image | None:
    path = _cache_path("images", key)
    if not path.is_file():
        return None
    try:
        digest = json.loads(path.read_text())["manifest"]
        raw = store.read_bytes(digest)

        img = from_raw(raw, store_source(store))
        if all(store.has(d.digest) for d in img.layers):
            return img
    except (NotFound, InvalidInput, ValueError, KeyError):
        pass
    return None


def build(
    recipe: Recipe | str, platforms: Iterable[Platform | str] | None = None, **kw
) -> dict[Platform, Image]:
    """The base for each platform (all the recipe's architectures when none are named)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    plats = parse_platforms(list(platforms)) if platforms else recipe.platforms
    return {p: build_platform(recipe, p, **kw) for p in plats}


def build_index(
    recipe: Recipe | str, platforms: Iterable[Platform | str] | None = None, **kw
) -> ImageIndex:
    images = build(recipe, platforms, **kw)
    return make_index(list(images.values()))


def default_recipe(python: str = "3.11") -> Recipe:
    """The default recipe for a Python ``major.minor``."""
    for r in list_recipes():
        if r.default and r.python_version == python:
            return r
    have = sorted({r.python_version for r in list_recipes() if r.default})
    raise NotFound(
        f"no default base recipe for Python {python} (have: {', '.join(have) or 'none'})"
    )


def default_base(
    python: str = "3.11",
    platforms: Iterable[Platform | str] = ("linux/amd64",),
    *,
    offline: bool = False,
    memo=None,
) -> dict[Platform, Image]:
    """The default base for ``python`` on each platform: built once, then reused from the cache."""
    return build(default_recipe(python), platforms, offline=offline, memo=memo)

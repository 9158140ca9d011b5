"""Bundles: one file that crosses an air gap with everything needed on the other side.

A bundle is an **OCI archive** (an uncompressed tar of an OCI image layout), so skopeo, podman
and ``oci-archive:`` read its images as they are, with more content-addressed blobs beside the
images' own and one more file at the root, ``ociforge-bundle.json``, that names them:

* ``images``: each image or multi-arch index, by its tag in the layout, with the reference it was
  exported from and its digest;
* ``files``: the build inputs of a rebuild, each a blob of the layout by sha256: the wheel lock,
  every locked wheel of every platform, and the ``.deb`` files of the default base; the model's own
  inputs (the serialized model, user code, artifacts) are the image's layers, listed by role.

Why one OCI archive rather than a tar of layouts plus a wheelhouse: one content-addressed
namespace means one rule for every byte (its name is its sha256, checked before anything is
pushed or used), no file is stored twice, and the images stay readable by every OCI tool.

``import_`` pushes the images into a registry on the closed side, after hashing every blob of the
bundle (a changed byte is refused, naming the blob, before anything is sent); blobs the registry
already has are skipped. ``rebuild`` redoes the model image from the bundle alone, offline, with
the same digests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bases import base as bases
from ..bases import debian
from ..builder.build import build
from ..builder.paths import APP_DIR, CODE_DIR, MODEL_DIR
from ..errors import DigestMismatch, InvalidInput, NotFound, OciforgeError
from ..oci import mediatypes as mt
from ..oci.blobstore import BlobStore
from ..oci.digest import CHUNK
from ..oci.image import Image, ImageIndex, open_layer_tar
from ..oci.manifest import canonical_json
from ..oci.reference import parse as parse_ref
from ..python.lock import read_lockfile
from ..python.wheelcache import WheelCache, sha256_file
from ..python.wheelcache import fetch as fetch_wheels
from ..transports.archive import TarSource, _staging_dir, read_layout_in_tar, tar_directory
from ..transports.layout import atomic_write, write_layout
from ..transports.registry.remote import push
from ..transports.spec import parse
from ..transports.transport import open_source

MANIFEST_FILE = "ociforge-bundle.json"
FORMAT = 1
DEFAULT_BASE_PREFIX = "ociforge-base:python"
BASE_NAME = "org.opencontainers.image.base.name"


class BundleError(OciforgeError):
    """A bundle that cannot be written, read, trusted or used as asked."""


@dataclass(frozen=True)
class BundleImage:
    """One image or index in a bundle: its tag in the layout and where it came from."""

    tag: str
    reference: str  # as exported: "registry.example.com/team/model:1"
    repository: str  # "team/model"
    ref_tag: str | None  # "1"
    digest: str

    def to_json(self) -> dict:
        return {
            "tag": self.tag,
            "reference": self.reference,
            "repository": self.repository,
            "ref_tag": self.ref_tag,
            "digest": self.digest,
        }


# ---------------------------------------------------------------------------------------------
# Export


def _layout_tag(repository: str, tag: str | None, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{repository}_{tag or 'latest'}").lstrip("._-")
    name, n = (base or "image")[:120], 1
    while name in taken:
        n += 1
        name = f"{base[:110]}-{n}"
    taken.add(name)
    return name


def _where(ref: str) -> tuple[str, str | None]:
    """The repository path and tag of a source string (a registry reference, or a local name)."""
    spec = parse(ref)
    if spec.kind == "docker":
        r = parse_ref(spec.path)
        return r.repository, r.tag
    return Path(spec.path).name or "image", spec.tag


def _put_file(store: BlobStore, path: Path, sha256: str) -> str:
    digest = f"sha256:{sha256}"
    if not store.has(digest):
        with open(path, "rb") as f:
            store.put_stream(f, expected=digest)
    return digest


def _roles(img: Image) -> dict[str, Any]:
    """The model image's own layers by role (from the build's history names), or empty."""
    history = [h for h in img.config.history if not h.empty_layer]
    if len(history) != len(img.layers):
        return {}
    roles: dict[str, Any] = {"artifacts": {}}
    for h, desc in zip(history, img.layers, strict=True):
        name = h.created_by
        if name == "model":
            roles["model"] = desc
        elif name.startswith("model code: "):
            roles["code"] = desc
        elif name.startswith("artifact "):
            roles["artifacts"][name[len("artifact ") :]] = desc
    return roles if "model" in roles else {}


def _platform_images(obj: Image | ImageIndex) -> list[Image]:
    return [obj] if isinstance(obj, Image) else [img for _d, img in obj.images()]


def export(
    path: str | os.PathLike,
    images: Sequence[str],
    *,
    lock: str | os.PathLike | None = None,
    **registry_opts: Any,
) -> dict:
    """Write the bundle ``path`` holding ``images`` (any transport's references) and, with
    ``lock``, what a rebuild needs: the lock, its wheels for every platform, the default base's
    ``.deb`` files. Missing wheels or ``.deb`` files are fetched into the caches first (this runs
    on the connected side). Returns the bundle's manifest."""
    if not images:
        raise InvalidInput("bundle export: name at least one image")
    dest = Path(path)
    if dest.is_dir():
        raise InvalidInput(f"{dest} is a directory; a bundle is a file")
    stage = _staging_dir(dest)
    try:
        layout = stage / "layout"
        entries: list[BundleImage] = []
        taken: set[str] = set()
        objs = []
        for ref in images:
            obj = open_source(ref, **registry_opts)
            repo, tag = _where(ref)
            name = _layout_tag(repo, tag, taken)
            write_layout(obj, layout, name)
            entries.append(BundleImage(name, ref, repo, tag, obj.digest))
            objs.append(obj)
        store = BlobStore(layout)
        files: list[dict] = []
        rebuild = None
        if lock is not None:
            files, rebuild = _rebuild_inputs(store, objs, Path(lock))
        store.cleanup()
        manifest = {
            "format": FORMAT,
            "kind": "ociforge-bundle",
            "images": [e.to_json() for e in entries],
            "files": sorted(files, key=lambda f: (f["kind"], f["name"], f["digest"])),
            "rebuild": rebuild,
        }
        atomic_write(layout / MANIFEST_FILE, canonical_json(manifest))
        tar_directory(layout, dest)
        return manifest
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _rebuild_inputs(store: BlobStore, objs: list, lock_path: Path) -> tuple[list[dict], dict]:
    locks = read_lockfile(lock_path)
    files: list[dict] = []
    lock_sha = sha256_file(lock_path)
    files.append(
        {"kind": "lock", "name": "ociforge.lock", "digest": _put_file(store, lock_path, lock_sha)}
    )
    platforms = {str(img.platform) for obj in objs for img in _platform_images(obj)}
    cache = WheelCache()
    for target, lk in locks.items():
        if str(target.platform) not in platforms:
            continue
        for w, p in zip(lk.packages, fetch_wheels(lk, cache), strict=True):
            files.append(
                {
                    "kind": "wheel",
                    "name": w.filename,
                    "digest": _put_file(store, p, w.sha256),
                    "size": p.stat().st_size,
                }
            )
    bases: dict[str, str] = {}
    models: list[dict] = []
    for obj in objs:
        for img in _platform_images(obj):
            name = img.manifest.annotations.get(BASE_NAME, "")
            bases[str(img.platform)] = name
            if name.startswith(DEFAULT_BASE_PREFIX):
                files += _base_debs(store, name[len(DEFAULT_BASE_PREFIX) :], img.platform)
            roles = _roles(img)
            if roles:
                models.append(
                    {
                        "platform": str(img.platform),
                        "model": roles["model"].digest,
                        "code": roles["code"].digest if "code" in roles else None,
                        "artifacts": {k: d.digest for k, d in sorted(roles["artifacts"].items())},
                    }
                )
    unique = {(f["kind"], f["digest"]): f for f in files}
    return list(unique.values()), {"lock": files[0]["digest"], "bases": bases, "layers": models}


def _base_debs(store: BlobStore, python: str, platform) -> list[dict]:
    recipe = bases.default_recipe(python)
    lock = bases.lock_for(recipe, platform.debian_arch)
    out = []
    for pkg in lock.packages:
        path = debian.fetch_deb(bases.mirror_for(recipe), pkg)
        out.append(
            {
                "kind": "deb",
                "name": f"{pkg.name}_{pkg.version}_{pkg.architecture}.deb",
                "digest": _put_file(store, path, pkg.sha256),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Reading and verifying


class Bundle:
    """A bundle file opened for reading (members located once, nothing extracted)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.src = TarSource(self.path)
        if not self.src.has_member(MANIFEST_FILE):
            raise BundleError(f"{self.path} is not an ociforge bundle (no {MANIFEST_FILE})")
        try:
            self.manifest = json.loads(self.src.read_member(MANIFEST_FILE))
        except ValueError as e:
            raise BundleError(f"{self.path}: invalid {MANIFEST_FILE}: {e}") from None
        if self.manifest.get("format") != FORMAT:
            raise BundleError(
                f"{self.path}: bundle format {self.manifest.get('format')!r}, this ociforge "
                f"reads format {FORMAT}"
            )
        self.images = [
            BundleImage(i["tag"], i["reference"], i["repository"], i.get("ref_tag"), i["digest"])
            for i in self.manifest.get("images", [])
        ]

    def image(self, entry: BundleImage) -> Image | ImageIndex:
        obj = read_layout_in_tar(self.src, entry.tag)
        if obj.digest != entry.digest:
            raise DigestMismatch(
                f"{self.path}: image {entry.tag} is {obj.digest}, the bundle lists {entry.digest}"
            )
        return obj

    def blob_names(self) -> Iterator[tuple[str, str]]:
        for name in sorted(self.src.members):
            if name.startswith("blobs/"):
                alg, _, hexpart = name[len("blobs/") :].partition("/")
                yield name, f"{alg}:{hexpart}"

    def verify(self) -> int:
        """Hash every blob of the bundle; refuse (naming the blob and what it is) when one does
        not match its name, or when a listed image or file is missing. Returns bytes hashed."""
        what = {f["digest"]: f"{f['kind']} {f['name']}" for f in self.manifest.get("files", [])}
        total = 0
        for name, digest in self.blob_names():
            alg, _, expected = digest.partition(":")
            if alg != "sha256":
                raise BundleError(f"{self.path}: {name}: unsupported digest algorithm {alg!r}")
            h = hashlib.sha256()
            with self.src.open_member(name) as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    total += len(chunk)
            if h.hexdigest() != expected:
                label = f" ({what[digest]})" if digest in what else ""
                raise DigestMismatch(
                    f"{self.path}: blob {digest}{label} hashes to sha256:{h.hexdigest()}; "
                    f"the bundle was changed or damaged, nothing was pushed or used"
                )
        for f in self.manifest.get("files", []):
            if not self.src.has(f["digest"]):
                raise BundleError(
                    f"{self.path}: {f['kind']} {f['name']} ({f['digest']}) is missing"
                )
        for entry in self.images:
            for img in _platform_images(self.image(entry)):
                for d in img.blobs():
                    if not self.src.has(d.digest):
                        raise BundleError(
                            f"{self.path}: blob {d.digest} of {entry.reference} "
                            f"({img.platform}) is missing"
                        )
        return total

    def open_file(self, digest: str):
        return self.src.open_member("blobs/" + digest.replace(":", "/", 1))


# ---------------------------------------------------------------------------------------------
# Import


def target_reference(entry: BundleImage, to_registry: str, prefix: str = "") -> str:
    """Where an image goes on the closed side: ``TO_REGISTRY/PREFIX/REPOSITORY:TAG``."""
    registry = to_registry.rstrip("/")
    if registry.startswith("docker://"):
        registry = registry[len("docker://") :]
    if not registry:
        raise InvalidInput("--to-registry needs a registry host, like registry.internal:5000")
    prefix = prefix.strip("/")
    repo = f"{prefix}/{entry.repository}" if prefix else entry.repository
    return f"{registry}/{repo}:{entry.ref_tag or 'latest'}"


def import_(
    path: str | os.PathLike,
    to_registry: str,
    *,
    prefix: str = "",
    jobs: int = 4,
    progress=None,
    **registry_opts: Any,
) -> list[dict]:
    """Push every image of the bundle to ``to_registry`` (after verifying every blob; a bad one
    stops the import before anything is sent). Indexes are pushed whole, children first, the tag
    last; blobs the registry has are skipped. Returns one result per image."""
    bundle = Bundle(path)
    bundle.verify()
    out = []
    for entry in bundle.images:
        obj = bundle.image(entry)
        ref = target_reference(entry, to_registry, prefix)
        r = push(obj, ref, jobs=jobs, progress=progress, **registry_opts)
        out.append(
            {
                "source": entry.reference,
                "reference": r.reference,
                "digest": r.digest,
                "bytes_uploaded": r.bytes_uploaded,
                "blobs_pushed": r.blobs_pushed,
                "blobs_skipped": r.blobs_skipped,
                "blobs_mounted": r.blobs_mounted,
                "manifests_pushed": r.manifests_pushed,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Rebuild


def _build_labels(img: Image) -> dict[str, str]:
    """The labels the build itself set: the ``org.opencontainers.image.*`` ones are the
    manifest's annotations (the base's labels are not annotations), others are taken from the
    config as they are (the base's among them change nothing: the config has them anyway)."""
    prefix = "org.opencontainers.image."
    own = {"created", "base.digest", "base.name"}
    labels = {k: v for k, v in img.config.config.labels.items() if not k.startswith(prefix)}
    for k, v in img.manifest.annotations.items():
        if k.startswith(prefix) and k[len(prefix) :] not in own:
            labels[k] = v
    return labels


@contextlib.contextmanager
def _epoch(value: int) -> Iterator[None]:
    """``SOURCE_DATE_EPOCH`` as the original build had it (every time stamp of the image)."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def _extract(img: Image, desc, prefix: str, dest: Path) -> None:
    """The files of one layer under ``prefix`` into ``dest``, with their modes (the layer's
    contents as the build read them from disk); nothing outside ``dest`` is ever written."""
    prefix = prefix.strip("/") + "/"
    stream, raw = open_layer_tar(img, desc)
    dirs: list[tuple[Path, int]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                name = m.name.lstrip("./")
                if not (name + "/").startswith(prefix):
                    continue
                rel = name[len(prefix) :]
                if any(part in ("", "..") for part in rel.split("/")) and rel:
                    raise BundleError(f"layer {desc.digest}: unsafe path {m.name!r}")
                target = dest / rel if rel else dest
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    dirs.append((target, m.mode & 0o7777))
                elif m.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    with open(target, "wb") as f:
                        shutil.copyfileobj(src, f, CHUNK)
                    os.chmod(target, m.mode & 0o7777)
                elif m.issym():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(m.linkname, target)
                elif m.islnk():
                    link = m.linkname.lstrip("./")
                    if not link.startswith(prefix):
                        raise BundleError(f"layer {desc.digest}: hardlink outside {prefix}")
                    os.link(dest / link[len(prefix) :], target)
    finally:
        stream.close()
        raw.close()
    for d, mode in reversed(dirs):
        os.chmod(d, mode)


def _install_files(bundle: Bundle, work: Path) -> Path:
    """Wheels and ``.deb`` files into the local caches (verified, atomic); the lock into
    ``work``. Returns the lock's path."""
    rebuild = bundle.manifest.get("rebuild") or {}
    lock_path = work / "ociforge.lock"
    with bundle.open_file(rebuild["lock"]) as src, open(lock_path, "wb") as f:
        shutil.copyfileobj(src, f, CHUNK)
    wheels = {}
    for lk in read_lockfile(lock_path).values():
        for w in lk.packages:
            wheels[f"sha256:{w.sha256}"] = w
    cache = WheelCache()
    for f in bundle.manifest.get("files", []):
        if f["kind"] == "wheel" and f["digest"] in wheels:
            dest = cache.path_for(wheels[f["digest"]])
        elif f["kind"] == "deb":
            dest = debian.deb_cache_dir() / f"{f['digest'].split(':', 1)[1]}.deb"
        else:
            continue
        if dest.is_file():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bundle-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, bundle.open_file(f["digest"]) as src:
                shutil.copyfileobj(src, out, CHUNK)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return lock_path


def rebuild(
    path: str | os.PathLike,
    to: str,
    *,
    image: str | None = None,
    **registry_opts: Any,
):
    """Redo the model image of the bundle from its inputs alone, offline: the serialized model,
    user code and artifacts (from the image's own layers), the lock and its wheels, the default
    base from its ``.deb`` files. The same ociforge version gives the same digests.
    Returns the :class:`~ociforge.builder.build.BuildResult`."""
    bundle = Bundle(path)
    if not bundle.manifest.get("rebuild"):
        raise BundleError(
            f"{bundle.path} holds no build inputs: export it with --lock to rebuild from it"
        )
    entries = [e for e in bundle.images if image in (None, e.tag, e.reference)]
    if not entries:
        have = ", ".join(e.reference for e in bundle.images)
        raise NotFound(f"{bundle.path} has no image {image!r} (it has: {have})")
    entry = entries[0]
    bundle.verify()
    obj = bundle.image(entry)
    imgs = _platform_images(obj)
    first = imgs[0]
    roles = _roles(first)
    if not roles:
        raise BundleError(f"{entry.reference} is not an image built by ociforge build")
    base_name = first.manifest.annotations.get(BASE_NAME, "")
    if not base_name.startswith(DEFAULT_BASE_PREFIX):
        raise BundleError(
            f"{entry.reference} was built on the base {base_name or '(unnamed)'}; a rebuild from "
            f"a bundle supports ociforge's default base only"
        )

    labels = _build_labels(first)
    created = first.config.created
    epoch = int(dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    with tempfile.TemporaryDirectory(prefix="ociforge-rebuild-") as tmp:
        work = Path(tmp)
        lock_path = _install_files(bundle, work)
        pkg = work / "package"
        _extract(first, roles["model"], MODEL_DIR, pkg)
        if "code" in roles:
            _extract(first, roles["code"], CODE_DIR, pkg / "code")
        files = {}
        for rel, desc in roles["artifacts"].items():
            dest = work / "artifacts" / rel
            _extract(first, desc, f"{APP_DIR}/{rel}", dest)
            files[rel] = str(dest)
        card = json.loads((pkg / "model.json").read_text())
        gpu = (card.get("build") or {}).get("gpu", "cpu")
        with _epoch(epoch):
            return build(
                str(pkg),
                platforms=[str(i.platform) for i in imgs],
                python=base_name[len(DEFAULT_BASE_PREFIX) :],
                to=to,
                name=labels.get("org.opencontainers.image.title", "model"),
                version=labels.get("org.opencontainers.image.version", "0.1.0"),
                gpu=None if gpu == "cpu" else gpu,
                files=files or None,
                compression=mt.layer_compression(roles["model"].media_type),
                lock=lock_path,
                offline=True,
                labels=labels,
                **registry_opts,
            )

"""Bundles: one file that crosses an air gap with everything needed on the other side.

A bundle is an **OCI archive** (an uncompressed tar of an OCI image layout), so skopeo, podman
and ``oci-archive:`` read its images as they are, with more content-addressed blobs beside the
images' own and one more file at the root, ``ociforge-bundle.json``, that names them:

* ``images``: each image or multi-arch index, by its tag in the layout, with the reference it was
  exported from and its digest;
* ``files``: the build inputs of a rebuild, each a blob of the layout by sha256: the wheel lock,
  every locked wheel of every platform, the ``.deb`` files of the default base and of the lock's
  system packages; the model's own
  inputs (the serialized model, user code, artifacts) are the image's layers, listed by role.

Why one OCI archive rather than a tar of layouts plus a wheelhouse: one content-addressed
namespace means one rule for every byte (its name is its sha256, checked before anything is
pushed or used), no file is stored twice, and the images stay readable by every OCI tool.

``import_`` pushes the images into a registry on the closed side, after hashing every blob of the
bundle (a changed byte is refused, naming the blob, before anything is sent); blobs the registry
already has are skipped. ``rebuild`` redoes the model image from the bundle alone, offline, with
the same digests.

A bundle that hashes right can still be hostile: every blob hashes to its own name whoever made
it. So the model's layers are unpacked by :func:`ociforge.oci.untar.extract` (nothing lands
outside the rebuild's work folder: no ``..``, no absolute names, no links out, no duplicates, no
setuid bits, at most ``max_members`` members and ``max_bytes`` bytes, :data:`~ociforge.oci.untar.
MAX_MEMBERS` and :data:`~ociforge.oci.untar.MAX_BYTES` unless set), ``verify`` runs the same
checks without writing, and ``expect_digest`` ties a bundle to its origin: the sha256 of the
bundle file (``export`` prints it) or the digest of one of its images, said on the connected side
and checked here before anything is pushed or built.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bases import base as bases
from ..bases import debian, syspackages
from ..builder.build import build
from ..builder.layers import CODE_IGNORE_FILE
from ..builder.paths import APP_DIR, CODE_DIR, MODEL_DIR
from ..errors import DigestMismatch, InvalidInput, NotFound, OciforgeError
from ..oci import mediatypes as mt
from ..oci.blobstore import BlobStore
from ..oci.digest import CHUNK, validate
from ..oci.image import Image, ImageIndex, open_layer_tar
from ..oci.layer import image_path
from ..oci.manifest import Descriptor, canonical_json
from ..oci.reference import parse as parse_ref
from ..oci.untar import MAX_BYTES, MAX_MEMBERS, Limits, extract
from ..python.lock import read_lockfile
from ..python.wheelcache import WheelCache, sha256_file
from ..python.wheelcache import fetch as fetch_wheels
from ..transports.archive import TarSource, _staging_dir, read_layout_in_tar, tar_directory
from ..transports.layout import atomic_write, write_layout
from ..transports.registry.remote import push
from ..transports.spec import parse
from ..transports.transport import open_source
from . import attached as supply_attached
from . import cacheentries

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
        carried: list[dict] = []  # signatures and SBOMs of the images (attached.py)
        memo: list[dict] = []  # registry-cache entries of the images' layers (cacheentries.py)
        for ref in images:
            obj = open_source(ref, **registry_opts)
            repo, tag = _where(ref)
            name = _layout_tag(repo, tag, taken)
            write_layout(obj, layout, name)
            entries.append(BundleImage(name, ref, repo, tag, obj.digest))
            carried += supply_attached.collect(layout, name, ref, obj, registry_opts)
            memo += cacheentries.collect(layout, name, ref, registry_opts)
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
            supply_attached.KEY: carried,
            cacheentries.KEY: memo,
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
    arches = {img.platform.debian_arch for obj in objs for img in _platform_images(obj)}
    for system in syspackages.read_locks(lock_path):  # the model's system packages
        if system.architecture in arches:
            for pkg, path in syspackages.fetch_debs(system):
                name = f"{pkg.name}_{pkg.version}_{pkg.architecture}.deb"
                digest = _put_file(store, path, pkg.sha256)
                files.append({"kind": "deb", "name": name, "digest": digest})
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


def _checked_manifest(path: Path, manifest: dict) -> list[BundleImage]:
    """The images of a bundle's manifest, after checking every field this module reads (the
    manifest is outside data: a wrong type is an error that says where, never a crash)."""

    def bad(where: str, why: str) -> BundleError:
        return BundleError(f"{path}: invalid {MANIFEST_FILE}: {where} {why}")

    def digest(value: Any, where: str) -> str:
        try:
            return validate(value)
        except InvalidInput:
            raise bad(where, f"is not a sha256 digest: {str(value)[:80]!r}") from None

    images, files = manifest.get("images", []), manifest.get("files", [])
    if not isinstance(images, list) or not isinstance(files, list):
        raise bad("images and files", "must be lists")
    out = []
    for n, i in enumerate(images):
        where = f"images[{n}]"
        if not isinstance(i, dict):
            raise bad(where, "is not an object")
        for key in ("tag", "reference", "repository"):
            if not isinstance(i.get(key), str) or not i[key]:
                raise bad(f"{where}.{key}", "must be a non-empty string")
        if i.get("ref_tag") is not None and not isinstance(i["ref_tag"], str):
            raise bad(f"{where}.ref_tag", "must be a string")
        out.append(
            BundleImage(
                i["tag"],
                i["reference"],
                i["repository"],
                i.get("ref_tag"),
                digest(i.get("digest"), f"{where}.digest"),
            )
        )
    for n, f in enumerate(files):
        if not isinstance(f, dict):
            raise bad(f"files[{n}]", "is not an object")
        for key in ("kind", "name"):
            if not isinstance(f.get(key), str):
                raise bad(f"files[{n}].{key}", "must be a string")
        digest(f.get("digest"), f"files[{n}].digest")
    rebuild = manifest.get("rebuild")
    if rebuild:
        if not isinstance(rebuild, dict):
            raise bad("rebuild", "is not an object")
        digest(rebuild.get("lock"), "rebuild.lock")
    return out


class Bundle:
    """A bundle file opened for reading (members located once, nothing extracted)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.src = TarSource(self.path)
        if not self.src.has_member(MANIFEST_FILE):
            raise BundleError(f"{self.path} is not an ociforge bundle (no {MANIFEST_FILE})")
        try:
            self.manifest = json.loads(self.src.read_member(MANIFEST_FILE))
        except (ValueError, RecursionError) as e:
            raise BundleError(f"{self.path}: invalid {MANIFEST_FILE}: {e}") from None
        if not isinstance(self.manifest, dict):
            raise BundleError(f"{self.path}: invalid {MANIFEST_FILE}: not a JSON object")
        if self.manifest.get("format") != FORMAT:
            raise BundleError(
                f"{self.path}: bundle format {self.manifest.get('format')!r}, this ociforge "
                f"reads format {FORMAT}"
            )
        self.images = _checked_manifest(self.path, self.manifest)

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

    def verify(
        self, *, layers: bool = True, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES
    ) -> int:
        """Hash every blob of the bundle; refuse (naming the blob and what it is) when one does
        not match its name, or when a listed image or file is missing. With ``layers`` (and
        rebuild inputs in the bundle), also read the layers a rebuild unpacks, with the checks
        and limits of the rebuild, writing nothing. Returns bytes hashed."""
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
        if layers and self.manifest.get("rebuild"):
            for entry in self.images:
                seen: set[tuple[str, str]] = set()
                for img in _platform_images(self.image(entry)):
                    limits = Limits(max_members, max_bytes)
                    for label, desc, prefix in _unpacked_layers(img, self.path):
                        if (desc.digest, prefix) not in seen:
                            seen.add((desc.digest, prefix))
                            _extract(img, desc, prefix, None, limits, f"{self.path}: {label}")
        return total

    def vouched(self, expect: str) -> tuple[list[BundleImage], bool]:
        """The images that ``expect`` vouches for, and whether it vouches for the whole bundle:
        all of them when it is the sha256 of the bundle file, those with that digest when it is
        the digest of one of its images (the ``index digest``). Anything else is refused."""
        want = str(expect).strip().lower()
        if re.fullmatch(r"[0-9a-f]{64}", want):
            want = "sha256:" + want
        try:
            validate(want)
        except InvalidInput:
            raise InvalidInput(
                f"expected digest {expect!r}: give sha256:<64 hex digits>, the bundle file's "
                f"(bundle export prints it) or one of its images'"
            ) from None
        images = [e for e in self.images if e.digest == want]
        if images:
            return images, False
        actual = file_digest(self.path)
        if actual == want:
            return list(self.images), True
        have = ", ".join(e.digest for e in self.images) or "none"
        raise BundleError(
            f"{self.path} is not the bundle expected ({want}): the file's sha256 is {actual} "
            f"and its images are {have}; refused, nothing was pushed or built"
        )

    def open_file(self, digest: str):
        return self.src.open_member("blobs/" + digest.replace(":", "/", 1))


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:`` and the sha256 of the bundle file: what ``export`` prints, and what
    ``expect_digest`` can name on the other side of the gap."""
    return "sha256:" + sha256_file(Path(path))


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
    expect_digest: str | None = None,
    require_signature: str | os.PathLike | None = None,
    **registry_opts: Any,
) -> list[dict]:
    """Push every image of the bundle to ``to_registry`` (after verifying every blob; a bad one
    stops the import before anything is sent). Indexes are pushed whole, children first, the tag
    last; blobs the registry has are skipped. With ``expect_digest`` (the bundle file's sha256,
    or an image's digest: then only that image is pushed), anything else is refused before
    anything is sent. Returns one result per image."""
    bundle = Bundle(path)
    entries = bundle.vouched(expect_digest)[0] if expect_digest is not None else bundle.images
    bundle.verify(layers=False)
    carried = supply_attached.entries(bundle.manifest, str(bundle.path))
    memo = cacheentries.items(bundle.manifest)
    if require_signature is not None:  # every image signed with that key, or nothing is pushed
        supply_attached.require_signatures(bundle, entries, require_signature)
    out = []
    for entry in entries:
        obj = bundle.image(entry)
        ref = target_reference(entry, to_registry, prefix)
        r = push(obj, ref, jobs=jobs, progress=progress, **registry_opts)
        supply_attached.push_attached(bundle, entry.tag, ref, carried, jobs=jobs, **registry_opts)
        cacheentries.push_entries(bundle, entry.tag, ref, memo, **registry_opts)
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


def _extract(
    img: Image, desc: Descriptor, prefix: str, dest: Path | None, limits: Limits, what: str
) -> None:
    """The files of one layer under ``prefix`` into ``dest``, with their modes (the layer's
    contents as the build read them from disk), by :func:`ociforge.oci.untar.extract`'s rules:
    nothing lands outside ``dest``; with ``dest`` None the layer is only checked."""
    stream, raw = open_layer_tar(img, desc)
    try:
        extract(stream, dest, prefix, limits=limits, what=f"{what} ({desc.digest})")
    finally:
        stream.close()
        raw.close()


def _unpacked_layers(img: Image, where: Path) -> list[tuple[str, Descriptor, str]]:
    """What a rebuild unpacks from ``img``: (label, layer, prefix in the image) for the model,
    the user's code and each artifact, whose names come from the config's history (outside data:
    each goes through the layer writer's path check and must be a distinct path of its own)."""
    roles = _roles(img)
    if not roles:
        return []
    out = [("model layer", roles["model"], MODEL_DIR)]
    if "code" in roles:
        out.append(("code layer", roles["code"], CODE_DIR))
    names: dict[str, str] = {}
    for name, desc in roles["artifacts"].items():
        try:
            rel = image_path(name, "artifact name")
        except InvalidInput as e:
            raise BundleError(f"{where}: {img.digest}: {e}; refused") from None
        if not rel or rel != name or rel in names:  # the build writes them normalized
            why = (
                "is empty"
                if not rel
                else f"is not a plain relative path (a build writes {rel!r})"
                if rel != name
                else f"is the same path as {names[rel]!r}"
            )
            raise BundleError(f"{where}: {img.digest}: artifact name {name!r} {why}; refused")
        names[rel] = name
        out.append((f"artifact {rel}", desc, f"{APP_DIR}/{rel}"))
    return out


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
    expect_digest: str | None = None,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_BYTES,
    **registry_opts: Any,
):
    """Redo the model image of the bundle from its inputs alone, offline: the serialized model,
    user code and artifacts (from the image's own layers), the lock and its wheels, the default
    base from its ``.deb`` files. The same ociforge version gives the same digests.

    The layers are unpacked into a scratch folder by :func:`ociforge.oci.untar.extract`, at most
    ``max_members`` members and ``max_bytes`` bytes in all. With ``expect_digest`` the bundle
    must be the one expected: its file's sha256, or the digest of the image rebuilt; in that
    second case the rebuild must give that same digest, or nothing is written to ``to``.
    Returns the :class:`~ociforge.builder.build.BuildResult`."""
    bundle = Bundle(path)
    if not bundle.manifest.get("rebuild"):
        raise BundleError(
            f"{bundle.path} holds no build inputs: export it with --lock to rebuild from it"
        )
    candidates, whole = bundle.images, True
    if expect_digest is not None:
        candidates, whole = bundle.vouched(expect_digest)
    entries = [e for e in candidates if image in (None, e.tag, e.reference)]
    if not entries:
        have = ", ".join(e.reference for e in candidates)
        raise NotFound(f"{bundle.path} has no image {image!r} (it has: {have})")
    entry = entries[0]
    bundle.verify(layers=False)  # the layers are checked as they are unpacked
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
    try:
        epoch = int(dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except (ValueError, OverflowError, AttributeError):
        raise BundleError(f"{entry.reference}: invalid creation time {created!r}") from None
    unpacked = _unpacked_layers(first, bundle.path)
    with tempfile.TemporaryDirectory(prefix="ociforge-rebuild-") as tmp:
        work = Path(tmp)
        pkg = work / "package"
        limits = Limits(max_members, max_bytes)
        files = {}
        for n, (label, desc, prefix) in enumerate(unpacked):
            if label == "model layer":
                dest = pkg
            elif label == "code layer":
                dest = pkg / "code"
            else:  # each artifact in a folder of its own: none can reach into another
                dest = work / "artifacts" / str(n) / "artifact"
                files[label[len("artifact ") :]] = str(dest)
            _extract(first, desc, prefix, dest, limits, f"{bundle.path}: {label}")
        if "code" in roles:
            # the code layer ships as the image had it: nothing of it left out a second time
            _write_new(pkg / "code" / CODE_IGNORE_FILE, b"!*\n")
        card = _model_card(pkg)
        lock_path = _install_files(bundle, work)  # into the caches: after the layers passed
        info = card.get("build") if isinstance(card, dict) else None
        gpu = info.get("gpu", "cpu") if isinstance(info, dict) else "cpu"
        if not isinstance(gpu, str):
            raise BundleError(f"{entry.reference}: model.json names the gpu {gpu!r}")
        inputs = {
            "platforms": [str(i.platform) for i in imgs],
            "python": base_name[len(DEFAULT_BASE_PREFIX) :],
            "name": labels.get("org.opencontainers.image.title", "model"),
            "version": labels.get("org.opencontainers.image.version", "0.1.0"),
            "gpu": None if gpu == "cpu" else gpu,
            "files": files or None,
            "compression": mt.layer_compression(roles["model"].media_type),
            "lock": lock_path,
            "offline": True,
            "labels": labels,
            "system_packages": labels.get(syspackages.LABEL, "").split() or None,
        }
        with _epoch(epoch):
            if not whole:
                # the digest vouches for the image, not for the lock and wheels beside it: the
                # rebuild must give that image again before anything is written to ``to``
                staged = build(str(pkg), to=f"oci:{work / 'staged'}:rebuilt", **inputs)
                if staged.digest != entry.digest:
                    raise BundleError(
                        f"the rebuild of {entry.reference} gave {staged.digest}, not the "
                        f"expected {entry.digest}; nothing was written to {to} (another "
                        f"ociforge version gives other digests: expect the bundle file's "
                        f"sha256 to rebuild with it)"
                    )
            # (a second build of the same inputs writes no layer again: every one is memoized)
            return build(str(pkg), to=to, **inputs, **registry_opts)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never through a symlink, never over what is there) with ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise BundleError(f"cannot create {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _model_card(pkg: Path) -> Any:
    """``model.json`` of the unpacked model (a regular file, read without following links)."""
    try:
        fd = os.open(pkg / "model.json", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise BundleError(f"the bundle's model has no readable model.json: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(16 << 20)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"the bundle's model.json is not valid JSON: {e}") from None

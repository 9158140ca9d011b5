"""``docker-archive:FILE[:NAME:TAG]``: the tar that ``docker load`` reads and ``docker save`` writes.

Written in the dual format of Docker 25+ (``manifest.json`` and ``repositories`` for older
loaders, plus an OCI layout for newer ones), one platform per archive. Layers are stored
uncompressed and named by diff_id, as ``docker save`` does: every loader (docker, podman,
skopeo) accepts that, and the diff_id is verified while each layer is decompressed.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import DigestMismatch, InvalidInput
from ..oci import mediatypes as mt
from ..oci.digest import HashingWriter, copy_stream, of_bytes
from ..oci.image import Image, ImageIndex, from_raw
from ..oci.layer import DEFAULT_EPOCH, decompressor
from ..oci.manifest import Descriptor, Index, Manifest, canonical_json, loads
from .archive import TarSource, _staging_dir, read_layout_in_tar
from .layout import REF_NAME, validate_tag


def normalize_name(name: str) -> str:
    """``NAME:TAG`` as docker writes RepoTags; a bare name gets ``:latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _sniff(stream) -> str:
    """Compression of a blob by its magic number (docker load does the same)."""
    head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        return mt.OCI_LAYER_GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return mt.OCI_LAYER_ZSTD
    return mt.OCI_LAYER


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.uname, ti.gname = size, 0o644, DEFAULT_EPOCH, "", ""
    return ti


def write_docker_archive(
    obj: Image | ImageIndex,
    path: str | os.PathLike,
    name: str | None = None,
    *,
    platform=None,
) -> Descriptor:
    """Write one platform of ``obj`` as a docker-loadable archive at ``path`` (atomic).

    ``name`` is ``NAME[:TAG]`` for RepoTags; an index needs ``platform`` unless it holds one image.
    Returns the descriptor of the (uncompressed-layer) manifest stored in the archive.
    """
    dest = Path(path)
    if isinstance(obj, ImageIndex):
        if platform is None:
            images = list(obj.images())
            if len(images) != 1:
                plats = ", ".join(str(p) for p in obj.platforms)
                raise InvalidInput(f"a docker-archive holds one platform; choose one of: {plats}")
            obj = images[0][1]
        else:
            obj = obj.select(platform)
    repo_tag = None
    if name:
        repo_tag = normalize_name(name)
        validate_tag(repo_tag.rsplit(":", 1)[1])
    if dest.is_dir():
        raise InvalidInput(f"{dest} is a directory; a docker-archive is a file")
    stage = _staging_dir(dest)
    try:
        return _write(obj, dest, stage, repo_tag)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write(img: Image, dest: Path, stage: Path, repo_tag: str | None) -> Descriptor:
    diff_ids = img.config.diff_ids
    if len(diff_ids) != len(img.layers):
        raise InvalidInput(
            f"image {img.digest}: {len(img.layers)} layers but {len(diff_ids)} diff_ids"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            layer_descs = []
            written: set[str] = set()
            for desc, diff_id in zip(img.layers, diff_ids, strict=True):
                # Decompress to a spool file (its size must precede it in the tar), checking the diff_id.
                spool = stage / "layer"
                hasher = None
                with img.open_layer(desc) as raw, open(spool, "wb") as out:
                    hasher = HashingWriter(out)
                    copy_stream(decompressor(raw, desc.media_type), hasher)
                if hasher.digest != diff_id:
                    raise DigestMismatch(
                        f"layer {desc.digest} decompresses to {hasher.digest}, but the config says {diff_id}"
                    )
                member = "blobs/sha256/" + diff_id.split(":", 1)[1]
                if member not in written:
                    with open(spool, "rb") as f:
                        tf.addfile(_tarinfo(member, hasher.size), f)
                    written.add(member)
                layer_descs.append(Descriptor(mt.OCI_LAYER, diff_id, hasher.size))
                spool.unlink()
            cfg_member = "blobs/sha256/" + img.config_descriptor.digest.split(":", 1)[1]
            tf.addfile(_tarinfo(cfg_member, len(img.raw_config)), io.BytesIO(img.raw_config))
            manifest = Manifest(
                config=Descriptor(mt.OCI_CONFIG, img.config_descriptor.digest, len(img.raw_config)),
                layers=tuple(layer_descs),
                annotations=dict(img.manifest.annotations),
            )
            raw_manifest = manifest.to_bytes()
            man_desc = Descriptor(mt.OCI_MANIFEST, of_bytes(raw_manifest), len(raw_manifest))
            man_member = "blobs/sha256/" + man_desc.digest.split(":", 1)[1]
            if man_member != cfg_member:
                tf.addfile(_tarinfo(man_member, len(raw_manifest)), io.BytesIO(raw_manifest))
            ann = {}
            if repo_tag:
                ann = {"io.containerd.image.name": repo_tag, REF_NAME: repo_tag.rsplit(":", 1)[1]}
            index = Index(manifests=(man_desc.with_(annotations=ann),))
            docker_manifest = [
                {
                    "Config": cfg_member,
                    "RepoTags": [repo_tag] if repo_tag else [],
                    "Layers": ["blobs/sha256/" + d.split(":", 1)[1] for d in diff_ids],
                }
            ]
            files = {
                "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
                "index.json": index.to_bytes(),
                "manifest.json": canonical_json(docker_manifest),
            }
            if repo_tag:
                repo, tag = repo_tag.rsplit(":", 1)
                files["repositories"] = canonical_json(
                    {repo: {tag: diff_ids[-1].split(":", 1)[1]}} if diff_ids else {}
                )
            for fname, data in files.items():
                tf.addfile(_tarinfo(fname, len(data)), io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return man_desc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _DockerArchiveSource(TarSource):
    """Layers of a classic docker-archive, by the digests of a manifest synthesized for them."""

    def __init__(self, path, by_digest: dict[str, str] | None = None) -> None:
        super().__init__(path)
        self.by_digest = by_digest or {}

    def open_blob(self, desc: Descriptor):
        member = self.by_digest.get(desc.digest)
        if member is not None:
            return self.open_member(member)
        return super().open_blob(desc)


def read_docker_archive(path: str | os.PathLike, name: str | None = None) -> Image:
    """The image named ``name`` (or the only one) in a ``docker save`` archive."""
    src = _DockerArchiveSource(path)
    if src.has_member("oci-layout") and src.has_member("index.json"):
        index = Index.from_json(loads(src.read_member("index.json"), f"{path}: index.json"))
        if name:
            wanted = normalize_name(name)
            for d in index.manifests:
                if d.annotations.get("io.containerd.image.name") in (
                    wanted,
                    "docker.io/library/" + wanted,
                ):
                    return _as_image(from_raw(_blob(src, d), src, d.media_type))
        elif len(index.manifests) == 1:
            return _as_image(read_layout_in_tar(src, None))
    if not src.has_member("manifest.json"):
        raise InvalidInput(f"{path} is not a docker archive (no manifest.json)")
    entries = _entries(loads(src.read_member("manifest.json"), f"{path}: manifest.json"), path)
    if name:
        wanted = normalize_name(name)
        chosen = [e for e in entries if wanted in (e.get("RepoTags") or [])]
        if not chosen:
            tags = [t for e in entries for t in e.get("RepoTags") or []]
            raise InvalidInput(
                f"no image named {wanted} in {path} (has: {', '.join(tags) or 'none'})"
            )
        entry = chosen[0]
    elif len(entries) == 1:
        entry = entries[0]
    else:
        tags = [t for e in entries for t in e.get("RepoTags") or []]
        raise InvalidInput(f"{path} holds several images; name one of: {', '.join(tags)}")
    raw_config = src.read_member(entry["Config"])
    config = loads(raw_config, f"{path}: {entry['Config']}")
    rootfs = (config.get("rootfs") or {}) if isinstance(config, dict) else None
    diff_ids = (rootfs.get("diff_ids") or []) if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidInput(f"{path}: {entry['Config']} is not an image config")
    layers = []
    for member, diff_id in zip(entry["Layers"], diff_ids, strict=False):
        with src.open_member(member) as f:
            media_type = _sniff(f)
            if media_type == mt.OCI_LAYER:
                digest, size = diff_id, src.members[member][1]
            else:
                h = HashingWriter()
                copy_stream(f, h)
                digest, size = h.digest, h.size
        src.by_digest[digest] = member
        layers.append(Descriptor(media_type, digest, size))
    cfg_desc = Descriptor(mt.OCI_CONFIG, of_bytes(raw_config), len(raw_config))
    src.by_digest[cfg_desc.digest] = entry["Config"]
    manifest = Manifest(config=cfg_desc, layers=tuple(layers))
    return Image(manifest.to_bytes(), raw_config, src)


def _entries(obj, path) -> list[dict]:
    """manifest.json's entries, each with a ``Config`` member name, ``Layers`` member names and
    ``RepoTags`` (an archive is outside data: a wrong shape is an error, never a crash)."""
    ok = isinstance(obj, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("Config"), str)
        and isinstance(e.get("Layers"), list)
        and all(isinstance(m, str) for m in e["Layers"])
        and isinstance(e.get("RepoTags") or [], list)
        and all(isinstance(t, str) for t in e.get("RepoTags") or [])
        for e in obj
    )
    if not ok:
        raise InvalidInput(
            f"{path}: invalid manifest.json: a list of {{Config, Layers, RepoTags}} is expected"
        )
    return obj


def _blob(src: TarSource, d: Descriptor) -> bytes:
    with src.open_blob(d) as f:
        return f.read(d.size + 1)


def _as_image(obj) -> Image:
    if isinstance(obj, ImageIndex):
        images = list(obj.images())
        if len(images) != 1:
            raise InvalidInput("docker archive holds an index with several platforms")
        return images[0][1]
    return obj

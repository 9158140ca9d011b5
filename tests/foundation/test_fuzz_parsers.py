"""Property-based fuzzing of every parser that reads outside data: image references, manifests,
indexes and image configs, tar archives (oci-archive, docker-archive, bundles, and the tar
streams a rebuild unpacks) and docker/podman credential files.

The one property: a parser gives a valid result or raises the project's own error
(:class:`~ociforge.errors.OciforgeError`) with a message, never another exception. For the
unpacker, also: nothing outside its destination is written, whatever the stream. Each
``@example`` is an input that once crashed a parser (a regression of its fix). Runs are
derandomized (the same examples on every machine) and sized to take well under a minute here;
``OCIFORGE_FUZZ_SCALE=20`` runs twenty times as many.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ociforge.airgap.bundle import Bundle
from ociforge.errors import OciforgeError
from ociforge.oci.image import Image, ImageIndex, from_raw
from ociforge.oci.manifest import ImageConfig, parse_manifest_bytes
from ociforge.oci.reference import Reference
from ociforge.oci.untar import Limits, extract
from ociforge.transports.archive import TarSource, read_oci_archive
from ociforge.transports.dockerarchive import read_docker_archive
from ociforge.transports.registry import credentials as creds

SCALE = float(os.environ.get("OCIFORGE_FUZZ_SCALE", "1"))  # e.g. 20 for a longer hunt


def fuzz(n: int):
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def ours(call, *args, **kw):
    """``call(*args)``, where only the project's own errors (with a message) may come out."""
    try:
        return call(*args, **kw)
    except OciforgeError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None


DEEP = b"[" * 100_000  # nested past Python's recursion limit: json raises RecursionError
DIGEST = "sha256:" + "a" * 64

# ---------------------------------------------------------------------------------------------
# Image references

ref_parts = st.tuples(
    st.sampled_from(["", "docker://", "docker:///"]),
    st.sampled_from(
        ["", "localhost/", "reg.example:5000/", "[::1]:5000/", "REG.example/", "a..b/"]
    ),
    st.from_regex(r"[a-z0-9._/-]{0,30}", fullmatch=True),
    st.sampled_from(["", ":1", ":latest", ":-x", ":" + "t" * 130, ":"]),
    st.sampled_from(["", "@" + DIGEST, "@sha256:abc", "@md5:" + "a" * 32, "@"]),
).map("".join)


@fuzz(3000)
@given(st.one_of(ref_parts, st.text(max_size=60)))
@example("docker://")
@example("[::1:5000/x")
@example("a" * 300)
def test_reference_parse(text):
    ref = ours(Reference.parse, text)
    if ref is not None:  # a valid result reads back as itself
        assert Reference.parse(str(ref)) == ref
        assert ref.hostname and ref.repository and (ref.tag or ref.digest)


# ---------------------------------------------------------------------------------------------
# Manifests, indexes and image configs

KEYS = [
    "schemaVersion", "mediaType", "config", "layers", "manifests", "annotations", "subject",
    "artifactType", "digest", "size", "platform", "urls", "data", "architecture", "os",
    "variant", "os.version", "os.features", "rootfs", "diff_ids", "history", "created",
    "created_by", "empty_layer", "Env", "Labels", "Cmd", "Entrypoint", "ExposedPorts",
    "Volumes", "User", "WorkingDir",
]  # fmt: skip
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2**63),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(
        [
            DIGEST,
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "amd64",
            "linux",
        ]
    ),
)
json_like = st.recursive(
    leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(KEYS), c, max_size=5),
    max_leaves=12,
)
descriptor = st.fixed_dictionaries(
    {"mediaType": json_like, "digest": st.just(DIGEST) | json_like, "size": st.just(2) | json_like},
    optional={"annotations": json_like, "platform": json_like, "urls": json_like},
)
manifest_like = st.fixed_dictionaries(
    {"schemaVersion": st.just(2) | json_like},
    optional={
        "mediaType": json_like,
        "config": descriptor | json_like,
        "layers": st.lists(descriptor | json_like, max_size=3) | json_like,
        "manifests": st.lists(descriptor | json_like, max_size=3) | json_like,
        "annotations": json_like,
        "subject": descriptor | json_like,
    },
)
config_like = st.fixed_dictionaries(
    {"architecture": st.just("amd64") | json_like, "os": st.just("linux") | json_like},
    optional={
        "config": json_like,
        "rootfs": st.fixed_dictionaries({"diff_ids": json_like}) | json_like,
        "history": st.lists(json_like, max_size=3) | json_like,
        "created": json_like,
        "variant": json_like,
    },
)


class Blobs:
    """Blobs by digest, in memory (what a layout or a registry would hand the parser)."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def open_blob(self, desc):
        return io.BytesIO(self.blobs.get(desc.digest, b""))


def _dump(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _read_all(obj: Image | ImageIndex) -> None:
    """Everything a caller may ask of a parsed object."""
    if isinstance(obj, Image):
        cfg = obj.config
        _ = obj.platform, obj.layers, obj.blobs(), obj.size, cfg.history, cfg.config.env_dict()
    else:
        _ = obj.index.manifests, obj.index.annotations


@fuzz(1500)
@given(st.one_of(manifest_like, config_like, json_like).map(_dump) | st.binary(max_size=40))
@example(DEEP)
@example(b'{"schemaVersion": 2, "config": [], "layers": []}')
@example(b'{"schemaVersion": 2, "mediaType": ["x"]}')
@example(
    b'{"schemaVersion": 2, "manifests": [{"digest": "' + DIGEST.encode() + b'", "size": 1e999}]}'
)
@example(
    b'{"schemaVersion": 2, "manifests": [{"digest": "'
    + DIGEST.encode()
    + b'", "size": 1, "platform": [1]}]}'
)
@example(
    b'{"schemaVersion": 2, "manifests": [{"digest": "'
    + DIGEST.encode()
    + b'", "size": 1, "annotations": ["a"]}]}'
)
@example(b'{"schemaVersion": 2, "manifests": 3}')
def test_manifest_and_index_bytes(raw):
    parsed = ours(parse_manifest_bytes, raw)
    if parsed is not None:
        assert parsed.to_bytes()  # a parsed object serializes again


@fuzz(1000)
@given(manifest_like.map(_dump), st.one_of(config_like, json_like).map(_dump))
@example(b'{"schemaVersion":2,"config":{"digest":"%s","size":2}}' % DIGEST.encode(), DEEP)
@example(b"", b'{"architecture": "amd64", "os": "linux", "config": true}')
@example(b"", b'{"architecture": "amd64", "os": "linux", "history": true}')
@example(b"", b'{"architecture": "amd64", "os": "linux", "config": "text"}')
@example(b"", b'{"architecture": "amd64", "os": "linux", "history": [{"created_by": 1}]}')
@example(b"", b'{"architecture": "amd64", "os": "linux", "rootfs": []}')
@example(b"", b'{"architecture": ["amd64"], "os": "linux"}')
@example(b"", b'{"architecture": "amd64", "os": "linux", "config": {"Env": "A=1", "Labels": []}}')
def test_image_from_raw_manifest_and_config(raw_manifest, raw_config):
    """An image read through a blob source: the manifest, then the config it names (here:
    whatever bytes, under the digest the manifest asks for)."""
    try:
        obj = json.loads(raw_manifest)
        digest = obj["config"]["digest"]
    except (ValueError, KeyError, TypeError):
        digest = DIGEST
    if raw_manifest == b"":  # the config alone
        ours(
            lambda: (
                ImageConfig.from_json(json.loads(raw_config)) if len(raw_config) < 1000 else None
            )
        )
        raw_manifest = b'{"schemaVersion":2,"config":{"digest":"%s","size":2}}' % DIGEST.encode()
    source = Blobs({digest if isinstance(digest, str) else DIGEST: raw_config})
    img = ours(from_raw, raw_manifest, source)
    if img is not None:
        ours(_read_all, img)
    # the config as the image reads it, hashes unchecked: every field is outside data
    ours(
        _read_all,
        Image(
            b'{"schemaVersion":2,"config":{"digest":"%s","size":2}}' % DIGEST.encode(),
            raw_config,
            source,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Tar archives: oci-archive, docker-archive, bundles (the whole file) and tar streams (unpacked)

MEMBERS = [
    "oci-layout", "index.json", "manifest.json", "ociforge-bundle.json", "./index.json",
    "blobs/sha256/" + "a" * 64, "config.json", "layer.tar", "../x", "/abs",
]  # fmt: skip
member_json = st.one_of(
    manifest_like,
    json_like,
    st.lists(
        st.fixed_dictionaries(
            {"Config": st.sampled_from(MEMBERS) | json_like},
            optional={
                "Layers": st.lists(st.sampled_from(MEMBERS)) | json_like,
                "RepoTags": json_like,
            },
        ),
        max_size=2,
    ),
    st.fixed_dictionaries(
        {"format": st.just(1) | json_like},
        optional={
            "images": st.lists(
                st.fixed_dictionaries(
                    {"tag": json_like, "reference": json_like, "repository": json_like},
                    optional={"digest": st.just(DIGEST) | json_like, "ref_tag": json_like},
                ),
                max_size=2,
            )
            | json_like,
            "files": json_like,
            "rebuild": json_like,
        },
    ),
).map(_dump)


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    """A tar of files (``data`` bytes) and folders (``data`` None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@st.composite
def damaged(draw, raw: bytes) -> bytes:
    """``raw`` with, maybe, one byte changed and, maybe, cut short."""
    if raw and draw(st.booleans()):
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


archives = (
    st.lists(st.tuples(st.sampled_from(MEMBERS), member_json | st.binary(max_size=30)), max_size=5)
    .map(_tar)
    .flatmap(damaged)
)
SCRATCH = Path(tempfile.mkdtemp(prefix="ociforge-fuzz-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


@fuzz(800)
@given(archives | st.binary(max_size=1200))
@example(_tar([("manifest.json", b"[1]")]))
@example(_tar([("manifest.json", b'[{"Config": 0}]')]))
@example(_tar([("manifest.json", b'[{"Config": "c", "Layers": []}]'), ("c", b"[]")]))
@example(_tar([("manifest.json", b'{"Config": "c"}')]))
@example(_tar([("manifest.json", b"\xfc")]))
@example(_tar([("oci-layout", b"{}"), ("index.json", b'{"schemaVersion": 2, "manifests": [[]]}')]))
@example(_tar([("oci-layout", b"{}"), ("index.json", DEEP)]))
@example(_tar([("ociforge-bundle.json", b"[]")]))
@example(_tar([("ociforge-bundle.json", b'{"format": 1, "images": [{"tag": 1}]}')]))
@example(
    _tar(
        [
            (
                "ociforge-bundle.json",
                b'{"format": 1, "files": [{"kind": "deb", "name": "x", "digest": "sha256:../../x"}]}',
            )
        ]
    )
)
def test_archive_files(raw):
    path = SCRATCH / "archive.tar"
    path.write_bytes(raw)
    ours(TarSource, path)
    obj = ours(read_oci_archive, path)
    if obj is not None:
        ours(_read_all, obj)
    img = ours(read_docker_archive, path)
    if img is not None:
        ours(_read_all, img)
    ours(Bundle, path)


@st.composite
def tar_streams(draw) -> tuple[bytes, list[str]]:
    """Tar streams with the names, kinds and links a hostile layer would use."""
    names = st.sampled_from(
        ["a", "a/b", "a/b/c", "b", "./a", "/a/b", "../a", "a/../b", "a//b", "", ".", "x/y/z"]
    )
    targets = st.sampled_from(
        ["a", "b", "a/b", ".", "..", "../..", "/", "/etc/passwd", "a/..", "x/../..", "", "c"]
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for _ in range(draw(st.integers(0, 6))):
            ti = tarfile.TarInfo(draw(names))
            kind = draw(st.sampled_from("fdslc"))
            ti.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o7777, 0o000]))
            data = None
            if kind == "f":
                body = draw(st.binary(max_size=20))
                ti.size, data = len(body), io.BytesIO(body)
            elif kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "s":
                ti.type, ti.linkname = tarfile.SYMTYPE, draw(targets)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.LNKTYPE, draw(targets)
            else:
                ti.type = tarfile.CHRTYPE
            tf.addfile(ti, data)
    return draw(damaged(buf.getvalue()))


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return out


@fuzz(1500)
@given(tar_streams(), st.sampled_from(["", "a", "/a/b"]))
@example(_tar([("a", b"x")])[:700], "")
@example(_tar([("a/b", None), ("a", b"x")]), "a")  # a folder inside dest, then dest as a file
def test_unpacking_tar_streams_stays_inside(raw, prefix):
    """Whatever the stream: the project's errors only, the same verdict checked or written, and
    after a write nothing outside the destination changed and no link leads out of it."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        box = Path(tmp)
        (box / "sentinel").mkdir()
        (box / "sentinel" / "victim").write_text("original")
        before = _snapshot(box)
        dest = box / "work" / "dest"
        checked = ours(extract, io.BytesIO(raw), None, prefix, limits=Limits(max_members=50))
        written = ours(extract, io.BytesIO(raw), dest, prefix, limits=Limits(max_members=50))
        assert (checked is None) == (written is None)
        after = _snapshot(box)
        assert {k: v for k, v in after.items() if not k.startswith("work")} == before
        real = os.path.realpath(dest)
        for rel in after:
            p = box / rel
            if rel.startswith("work/dest/") and p.is_symlink():
                assert os.path.realpath(p).startswith(real + os.sep) or os.path.realpath(p) == real
        with contextlib.suppress(FileNotFoundError):  # modes of 0o000 must not stop the cleanup
            for dirpath, _dirs, _files in os.walk(box):
                os.chmod(dirpath, 0o755)


# ---------------------------------------------------------------------------------------------
# Credential files (docker's config.json, podman's auth.json): read, and read-modify-write

hosts = st.sampled_from(
    ["registry.example.com", "https://registry.example.com/v1/", "docker.io", "localhost:5000",
     "https://index.docker.io/v1/", "registry.example.com/team", ""]
)  # fmt: skip
cred_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    st.sampled_from(["dXNlcjpwdw==", "bm9jb2xvbg==", "!!!", "osxkeychain", "../../bin/sh", "-x"]),
)
cred_value = st.recursive(
    cred_leaf,
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(["auth", "username", "password", "identitytoken", "registrytoken"])
            | hosts,
            c,
            max_size=4,
        )
    ),
    max_leaves=12,
)
cred_files = st.one_of(
    st.dictionaries(
        st.sampled_from(["auths", "credHelpers", "credsStore"]),
        cred_value | st.dictionaries(hosts, cred_value, max_size=3),
        max_size=3,
    ).map(_dump),
    cred_value.map(_dump),
    st.binary(max_size=40),
)


@fuzz(1500)
@given(cred_files, st.sampled_from(["registry.example.com", "docker.io", "localhost:5000"]))
@example(b'{"credHelpers": 1}', "registry.example.com")
@example(b'{"auths": []}', "registry.example.com")
@example(b'{"auths": {"localhost:5000": {"auth": {}}}}', "localhost:5000")
@example(b'{"credHelpers": {"registry.example.com": null}}', "registry.example.com")
@example(DEEP, "docker.io")
def test_credential_files(raw, registry):
    path = SCRATCH / "config.json"
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(SCRATCH / "no-helpers")  # no docker-credential-* can be found
    try:
        path.write_bytes(raw)
        cred = ours(creds._from_file, path, registry, "team/m")
        assert cred is None or isinstance(cred, creds.Credential)
        ours(creds.store, registry, creds.Credential("u", "p"), path)
        path.write_bytes(raw)
        ours(creds.erase, registry, path)
    finally:
        os.environ["PATH"] = old_path

"""Pull and push images over the OCI distribution API, with no Docker daemon.

:func:`pull` is lazy: it fetches the manifest (and the config of an image) and returns an
:class:`~ociforge.oci.image.Image` or :class:`~ociforge.oci.image.ImageIndex` whose source,
:class:`RegistrySource`, downloads a layer only when a destination opens it. Downloads stream
into the blob cache, are verified against their digest before they are kept, and resume with a
``Range`` request when the connection drops.

:func:`push` uploads every blob the registry lacks (several at once, bounded by ``jobs``), mounts
blobs that already live in another repository of the same registry, and only then puts the
manifests, children before parents and the tag last: a failed push never leaves a tag pointing at
an incomplete image.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO

import requests

from ...cachedir import default_cache_dir
from ...errors import DigestMismatch, InvalidInput, OciforgeError
from ...oci import mediatypes as mt
from ...oci.blobstore import BlobStore
from ...oci.digest import of_bytes
from ...oci.image import Image, ImageIndex, from_raw, image_blobs, walk_manifests
from ...oci.manifest import Descriptor, parse_manifest_bytes
from ...oci.platform import Platform
from ...oci.reference import Reference, parse
from ..progress import NullProgress, Progress, human
from . import bloblocations
from . import credentials as creds
from .auth import repository_scope
from .client import Client, RegistryError, RetryPolicy
from .upload import DEFAULT_CHUNK, Uploader

MAX_MANIFEST = 4 << 20  # what containerd and the reference registry accept
ACCEPT = ", ".join([*mt.ALL_MANIFESTS, "*/*;q=0.1"])

__all__ = ["PushResult", "RegistrySource", "RetryPolicy", "pull", "push", "resolve_credential"]


def resolve_credential(auth, ref: Reference) -> creds.Credential | None:
    """``auth`` as given (Credential, ``(user, password)``, ``"user:password"``) or found on disk."""
    if auth is None:
        return creds.find(ref.registry, ref.repository)
    if isinstance(auth, creds.Credential):
        return auth
    if isinstance(auth, tuple) and len(auth) == 2:
        return creds.Credential(str(auth[0]), str(auth[1]), source="the caller")
    if isinstance(auth, str):
        return creds.Credential.parse(auth, source="the caller")
    if auth is False:
        return None
    raise InvalidInput("auth must be a Credential, (username, password), 'user:password' or None")


def _client(ref: Reference, *, insecure, ca_bundle, auth, scopes, retry, pool=8) -> Client:
    return Client(
        ref.registry,
        api_host=ref.api_host,
        loopback=ref.is_loopback,
        insecure=insecure,
        ca_bundle=ca_bundle,
        credential=resolve_credential(auth, ref),
        scopes=scopes,
        retry=retry,
        pool=pool,
    )


# ---------------------------------------------------------------------------------------------
# Pull


class RegistrySource:
    """Blobs and manifests of one repository, fetched on demand and cached in a blob store."""

    def __init__(self, client: Client, ref: Reference, store: BlobStore) -> None:
        self.client = client
        self.ref = ref
        self.repository = ref.repository
        self.store = store
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self.downloaded = 0  # bytes fetched from the registry (not from the cache)

    @property
    def registry(self) -> str:
        return self.ref.registry

    def knows(self, digest: str) -> bool:
        """True for blobs named by a manifest this source fetched (so they live in its repo)."""
        return digest in self._known

    def note(self, raw: bytes) -> None:
        try:
            parsed = parse_manifest_bytes(raw)
        except InvalidInput:
            return
        descs = getattr(parsed, "layers", ()) + (
            (parsed.config,) if hasattr(parsed, "config") else ()
        )
        with self._lock:
            self._known.update(d.digest for d in descs)

    def get_manifest(self, identifier: str) -> tuple[bytes, str]:
        """Raw bytes and media type of a manifest or index, by tag or digest."""
        resp = self.client.request(
            "GET",
            f"/v2/{self.repository}/manifests/{identifier}",
            stream=True,
            what=f"fetching manifest {self.ref.name}:{identifier}"
            if ":" not in identifier
            else f"fetching manifest {self.ref.name}@{identifier}",
            headers={"Accept": ACCEPT},
        )
        try:
            length = int(resp.headers.get("Content-Length") or 0)
            if length > MAX_MANIFEST:
                raise InvalidInput(
                    f"{self.ref.name}:{identifier}: manifest is {human(length)}, over the "
                    f"{human(MAX_MANIFEST)} limit"
                )
            raw = resp.raw.read(MAX_MANIFEST + 1, decode_content=True)
        finally:
            resp.close()
        if len(raw) > MAX_MANIFEST:
            raise InvalidInput(f"{self.ref.name}:{identifier}: manifest over {human(MAX_MANIFEST)}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if identifier.startswith("sha256:") and of_bytes(raw) != identifier:
            raise DigestMismatch(
                f"{self.ref.name}@{identifier}: the registry sent a manifest hashing to {of_bytes(raw)}"
            )
        self.note(raw)
        return raw, media_type

    def fetch_manifest(self, desc: Descriptor) -> bytes:
        raw, _ = self.get_manifest(desc.digest)
        return raw

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """The blob's bytes, from the cache or downloaded (and verified) into it first."""
        if not self.store.has(desc.digest):
            self._download(desc)
        return self.store.open_blob(desc.digest)

    def _download(self, desc: Descriptor) -> None:
        url = f"/v2/{self.repository}/blobs/{desc.digest}"
        policy = self.client.retry
        failures = 0
        with self.store.writer() as w:
            while True:
                offset = w.tell()
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                resp = None
                try:
                    resp = self.client.request(
                        "GET",
                        url,
                        stream=True,
                        headers=headers,
                        ok=(200, 206),
                        what=f"downloading blob {desc.digest} from {self.ref.name}",
                    )
                    skip = offset if (offset and resp.status_code == 200) else 0
                    for chunk in resp.iter_content(1 << 16):  # small reads: a cut loses little
                        if skip:
                            cut = min(skip, len(chunk))
                            chunk, skip = chunk[cut:], skip - cut
                            if not chunk:
                                continue
                        w.write(chunk)
                        self.downloaded += len(chunk)
                        if w.tell() > desc.size:
                            raise DigestMismatch(
                                f"blob {desc.digest} from {self.ref.name}: registry sent more than "
                                f"its {desc.size} bytes; not kept"
                            )
                    if w.tell() < desc.size:
                        raise requests.exceptions.ChunkedEncodingError("response ended early")
                    break
                except (
                    requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout,
                ) as e:
                    failures = failures + 1 if w.tell() == offset else 1
                    if failures >= policy.attempts:
                        raise OciforgeError(
                            f"downloading blob {desc.digest} from {self.ref.name} failed: {e}"
                        ) from None
                    time.sleep(policy.delay(failures))
                finally:
                    if resp is not None:
                        resp.close()
            try:
                w.commit(desc.digest)
            except DigestMismatch as e:
                raise DigestMismatch(f"blob from {self.ref.name}: {e}") from None


def pull(
    ref: str | Reference,
    *,
    insecure: bool = False,
    ca_bundle: str | None = None,
    auth=None,
    platform: Platform | str | None = None,
    retry: RetryPolicy | None = None,
    cache: BlobStore | str | None = None,
) -> Image | ImageIndex:
    """The image or index ``ref`` names; layers are downloaded only when something opens them.

    With ``platform``, an index is resolved to the matching image (normalized platforms, nested
    indexes, attestations skipped). A ``ref`` with a digest is verified against it.
    """
    r = parse(ref)
    client = _client(
        r,
        insecure=insecure,
        ca_bundle=ca_bundle,
        auth=auth,
        scopes=[repository_scope(r.repository, "pull")],
        retry=retry,
    )
    store = cache if isinstance(cache, BlobStore) else BlobStore(cache or default_cache_dir())
    source = RegistrySource(client, r, store)
    raw, media_type = source.get_manifest(r.identifier)
    obj = from_raw(raw, source, media_type)
    if platform is not None and isinstance(obj, ImageIndex):
        obj = obj.select(platform)
    return obj


# ---------------------------------------------------------------------------------------------
# Push


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str
    bytes_uploaded: int = 0
    blobs_pushed: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0

    def summary(self) -> str:
        return (
            f"pushed {self.reference}@{self.digest}: {human(self.bytes_uploaded)} sent, "
            f"{self.blobs_pushed} blobs uploaded, {self.blobs_mounted} mounted, "
            f"{self.blobs_skipped} already there"
        )


def _registry_sources(source, depth: int = 0) -> Iterator[RegistrySource]:
    """Registry sources reachable from an image's source (through layered and index sources)."""
    if depth > 8:
        return
    if isinstance(source, RegistrySource):
        yield source
        return
    for sub in getattr(source, "sources", ()) or ():
        yield from _registry_sources(sub, depth + 1)
    for child in (getattr(source, "children", None) or {}).values():
        yield from _registry_sources(getattr(child, "source", None), depth + 1)


def _blobs(
    obj, dest: Reference
) -> list[tuple[Descriptor, Callable[[], BinaryIO], tuple[str, ...]]]:
    """Each blob once, with an opener and the repositories of ``dest``'s registry to mount from."""
    out, sources = [], {}
    for img, d, opener in image_blobs(obj):
        if id(img) not in sources:
            found = _registry_sources(img.source)
            sources[id(img)] = [s for s in found if s.registry == dest.registry]
        live = [s.repository for s in sources[id(img)] if s.knows(d.digest)]
        remembered = bloblocations.repositories(dest.registry, d.digest)
        mounts = tuple(r for r in dict.fromkeys(live + remembered) if r != dest.repository)[:3]
        out.append((d, opener, mounts))
    return out


def push(
    obj: Image | ImageIndex,
    ref: str | Reference,
    *,
    insecure: bool = False,
    ca_bundle: str | None = None,
    auth=None,
    jobs: int = 4,
    progress: Progress | None = None,
    retry: RetryPolicy | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> PushResult:
    """Push ``obj`` (every platform of an index) to ``ref``; the tag is written last."""
    r = parse(ref)
    if jobs < 1:
        raise InvalidInput(f"jobs must be at least 1, not {jobs}")
    progress = progress or NullProgress()
    blobs = _blobs(obj, r)
    mount_repos = sorted({o for _d, _o, origins in blobs for o in origins})
    scopes = [repository_scope(r.repository, "pull,push")]
    scopes += [repository_scope(o, "pull") for o in mount_repos]
    client = _client(
        r,
        insecure=insecure,
        ca_bundle=ca_bundle,
        auth=auth,
        scopes=scopes,
        retry=retry,
        pool=jobs + 2,
    )
    top_digest = obj.digest
    if r.digest and r.digest != top_digest:
        raise InvalidInput(f"{r} names digest {r.digest} but the image's digest is {top_digest}")
    try:
        client.ping()
        uploader = Uploader(client, r.repository, chunk_size=chunk_size, progress=progress)
        progress.begin(f"pushing {r}", len(blobs), sum(d.size for d, _o, _m in blobs))
        counts = {"pushed": 0, "skipped": 0, "mounted": 0}
        sent = 0
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ociforge-push") as pool:
            futures = [pool.submit(uploader.push, d, opener, mounts) for d, opener, mounts in blobs]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()
            for f in futures:
                outcome = f.result()
                counts[outcome.outcome] += 1
                sent += outcome.bytes_sent
        manifests = 0
        for desc, raw in walk_manifests(obj):
            top = desc.digest == top_digest
            if not top and _manifest_exists(client, r, desc):
                continue
            _put_manifest(client, r, desc, raw, r.tag if (top and r.tag) else desc.digest)
            manifests += 1
    finally:
        client.close()
    bloblocations.record(r.registry, r.repository, (d.digest for d, _o, _m in blobs))
    result = PushResult(
        reference=str(r),
        digest=top_digest,
        bytes_uploaded=sent,
        blobs_pushed=counts["pushed"],
        blobs_skipped=counts["skipped"],
        blobs_mounted=counts["mounted"],
        manifests_pushed=manifests,
    )
    progress.finish(result.summary())
    return result


def _manifest_exists(client: Client, r: Reference, desc: Descriptor) -> bool:
    resp = client.request(
        "HEAD",
        f"/v2/{r.repository}/manifests/{desc.digest}",
        ok=(200, 404),
        headers={"Accept": ACCEPT},
        what=f"checking manifest {desc.digest}",
    )
    resp.close()
    return resp.status_code == 200


def _put_manifest(
    client: Client, r: Reference, desc: Descriptor, raw: bytes, identifier: str
) -> None:
    media_type = desc.media_type or json.loads(raw).get("mediaType") or mt.OCI_MANIFEST
    where = f"{r.name}:{identifier}" if identifier == r.tag else f"{r.name}@{identifier}"
    try:
        resp = client.request(
            "PUT",
            f"/v2/{r.repository}/manifests/{identifier}",
            ok=(201, 200, 204),
            headers={"Content-Type": media_type},
            body=raw,
            what=f"pushing manifest {where}",
        )
    except RegistryError as e:
        if len(raw) > MAX_MANIFEST:
            raise RegistryError(
                f"{e} (the manifest is {human(len(raw))}; registries commonly refuse manifests "
                f"over {human(MAX_MANIFEST)})",
                status=e.status,
                code=e.code,
                message=e.message,
            ) from None
        raise
    resp.close()
    got = resp.headers.get("Docker-Content-Digest")
    if got and got != desc.digest:
        raise RegistryError(
            f"{r.registry} stored manifest {where} as {got}, expected {desc.digest}"
        )

"""``ociforge.build``: a Python model in, a multi-arch serving image out. The one build path.

Layers, from least to most often changed, so a rebuild after a model change writes and pushes
one small layer plus configs, manifests and the index:

    base image layers (reused by digest, never read)
    → dependency wheel layers (per big wheel, or grouped; shared across models and platforms)
    → the bytecode of the modules the server imports at start
    → the ociforge runtime layer (the same on every platform)
    → the user's own code (modules the model imports from the project, as source)
    → artifact layers (one per ``files`` entry; same files, same digest)
    → the serialized model (``model.pkl`` + ``model.json``)

Nothing runs inside the target: wheels are resolved and installed for each platform directly,
so an arm64 image builds as fast as an amd64 one on any machine.

:func:`build` reads as its steps: check the inputs → package the model → bases and targets →
the layers of its own → resolve and fetch the wheels → each platform's layers and image → the
index → write.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ociforge_runtime import local

from ..bases import syspackages
from ..cache.memo import open_cache
from ..cachedir import default_cache_dir
from ..deploy import facts_of, manifests, to_yaml
from ..errors import BuildError, InvalidInput
from ..model.imports import UserCode, auto_requirements, classify, referenced_modules
from ..model.package import (
    package_dir,
    package_model,
    read_package,
    startup_imports,
    with_build_info,
)
from ..oci.blobstore import BlobStore
from ..oci.image import Image, ImageIndex, append, make_index, store_source
from ..oci.layer import Layer, source_date_epoch, write_layer
from ..oci.layercache import attach, memoized
from ..oci.manifest import rfc3339
from ..oci.platform import Platform, parse_platforms
from ..oci.reference import Reference
from ..python.bytecode import CompilePool, Source, entry_sources
from ..python.install import can_compile_for, wheel_layers
from ..python.lock import Lock, find_lock, read_lockfile
from ..python.resolve import remembered, resolve, variant_note
from ..python.target import Target
from ..python.wheelcache import Fetching, fetch
from ..transports.spec import check_writable, recorded_name
from ..transports.spec import parse as parse_spec
from ..transports.transport import write_to
from . import cachestep, config, layers
from . import supply as supply_chain
from .cachestep import LazyWheels
from .offline import preflight, remembered_locks
from .paths import ANNOTATION_PREFIX, CODE_DIR
from .plan import (
    bases_for,
    host_python,
    requirement_list,
    resolve_options,
    runtime_requirements,
    targets_for,
)
from .verify import check_can_verify, verify_images

# ``grpc=True``: the runtime's OIP v2 gRPC server (ociforge_runtime/grpc_server.py) needs these;
# its messages were generated for protobuf >= 6.31.1 (ociforge_runtime/_proto); its
# grpc.health.v1.Health service (Kubernetes' native gRPC probes) is grpcio-health-checking's.
GRPC_PORT = 8081
GRPC_REQUIREMENTS = [
    "grpcio>=1.66,<2",
    "protobuf>=6.31.1,<7",
    "grpcio-health-checking>=1.66,<2",
]


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
    sboms: dict[str, str] = field(default_factory=dict)  # per platform: the SBOM referrer's digest
    signed: list[str] = field(default_factory=list)  # the digests signed with sign_key
    # verify=True: per platform, "verified" or "not verified: what it answered"
    verified: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "platforms": [str(p) for p in self.platforms],
            "layers": self.layers,
            "size": self.size,
            "requirements": self.requirements,
            "sboms": self.sboms,
            "signed": self.signed,
            "verified": self.verified,
        }

    def manifests(self, kind: str, *, repository: str | None = None, **options: Any) -> str:
        """Ready-to-apply YAML to run this image on ``kind`` (``kserve``, ``seldon``,
        ``kubernetes``), pinned by digest: see :mod:`ociforge.deploy`. ``repository``
        (``REGISTRY/REPO``) is where the cluster pulls from, needed when the build went to a
        local destination; ``options`` are :func:`ociforge.deploy.manifests`' (``protocol``,
        ``weights``, ``namespace``, ``replicas``, ``name``)."""
        spec = parse_spec(self.reference)
        if repository is None and spec.kind != "docker":
            raise InvalidInput(
                f"{self.reference} is local: pass repository='REGISTRY/REPO' (where it is pushed)"
            )
        repo = Reference.parse(repository or spec.path).name
        return to_yaml(manifests(facts_of(self.image, f"{repo}@{self.digest}"), kind, **options))


def test(
    model: Any, sample: Any, *, batch_size: int | None = None, metadata: dict | None = None
) -> Any:
    """Run ``sample`` through the same decode → predict → encode path the server uses, locally."""
    return local.test(model, sample, batch_size=batch_size, card=metadata)


def test_batch(
    model: Any, samples: list, *, batch_size: int | None = None, metadata: dict | None = None
) -> Any:
    """The batch route's answer for ``samples``, computed locally."""
    return local.test_batch(model, samples, batch_size=batch_size, card=metadata)


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
    cache: str | bool | os.PathLike | None = None,
    bytecode: bool | None = None,
    sbom: bool | str = True,
    sign_key: str | os.PathLike | None = None,
    grpc: bool = False,
    check_libraries: bool = True,
    system_packages: Sequence[str] | None = None,
    verify: bool = False,
    **registry_opts: Any,
) -> BuildResult:
    """Build ``model`` into an image for every platform and write it to ``to``.

    ``requirements`` is a list, a requirements file, or ``"auto"`` (the model's imports mapped to
    installed distributions at their exact versions). ``gpu`` is a CUDA variant (``"cu121"``) or
    ``"cpu"``; None takes the variant from what the requirements resolve to (CUDA builds make a
    CUDA image, said on stderr; otherwise cpu).
    ``files`` maps paths relative to the working directory in the image to local files or folders.
    ``python_path`` (with ``python`` and ``libc``, e.g. ``"glibc 2.36"``) declares the Python of a
    base where it cannot be found from the image's files and config.
    ``test_sample`` runs :func:`test` first and refuses to build when it fails. ``lock`` is a lock
    file from ``ociforge lock`` (a build from it resolves nothing); ``offline`` touches no network
    (with no lock, it installs the resolution remembered for the same requirements and targets,
    however old).
    ``sbom`` (``True``: SPDX, ``"cyclonedx"``, ``False``) attaches an SBOM to each platform image
    of a registry or layout destination as an OCI referrer; ``sign_key`` (a cosign key file, its
    password from ``$COSIGN_PASSWORD``) signs the index and each image. Neither changes a digest.
    ``grpc`` also serves the Open Inference Protocol over gRPC on port 8081 (``GRPC_PORT``): it
    adds grpcio and protobuf to the image, ``OCIFORGE_GRPC=1`` to its environment and the port
    to its exposed ports. Images without it carry no gRPC libraries.
    ``check_libraries`` checks that every shared library the wheels' ELF files need is in a
    layer (:mod:`ociforge.builder.libraries`): one a module imported at start needs and none
    provides fails the build; False skips the check.
    ``cache`` (``"REGISTRY/REPO"``, or ``"oci:DIR"`` for an air-gapped site) is where memo
    entries of the build's reusable layers are looked up before anything is fetched, and left
    after the image is written (:mod:`ociforge.cache`); with a registry destination and no
    ``cache``, the destination's repository is the cache (``cache=False``: none). Offline builds
    use no cache. Whoever builds must be able to push to the cache repository.
    ``system_packages`` (``["libgl1"]``) are Debian packages of the base's suite, resolved for
    each platform with their dependencies, less what the base holds, and installed into one
    layer directly above the base (:mod:`ociforge.bases.syspackages`); the lock records them.
    ``verify`` starts each platform's image once written, under bubblewrap (qemu-user for another
    architecture, as ``ociforge run`` does), and asks it ``test_sample``: an answer other than
    the local test's raises :class:`~ociforge.builder.verify.VerificationFailed` naming the
    platform and the answer (what was written stays; its ``result.verified`` says which were).
    """
    plats = _check_inputs(
        platforms, compression, to, offline, lock, base, python, gpu, system_packages
    )
    sbom_fmt, key = supply_chain.check(to, sbom, sign_key)
    check_can_verify(verify, test_sample, plats)
    card = {**dict(metadata or {}), "name": name, "version": version}
    epoch = source_date_epoch()
    packaged = _package(model, requirements, batch_size, card, test_sample, plats, gpu, epoch)
    # ``cache``: a registry repository or oci:DIR (a path object: the local store, as before)
    store = BlobStore(cache if isinstance(cache, os.PathLike) else default_cache_dir())
    memo = (
        None
        if isinstance(cache, os.PathLike)
        else open_cache(cache, to, store, offline=offline, registry_opts=registry_opts)
    )
    attach(store, memo)
    bases = bases_for(base, plats, python, registry_opts, offline, memo=memo)
    # every platform's system packages resolved (or found in the lock) before any download
    system = syspackages.plan(system_packages, bases, lock=lock, offline=offline)
    targets = targets_for(bases, python, python_path, libc, gpu)
    all_reqs = packaged.requirements + runtime_requirements() + (GRPC_REQUIREMENTS if grpc else [])
    recalled = (  # offline with no lock: what an online build resolved, or a list of what is missing
        remembered_locks(all_reqs, targets, base=base, python=python or host_python(), gpu=gpu)
        if offline and lock is None
        else None
    )
    own = _own_layers(packaged, files, store, compression)
    labels_ = config.labels(card, name, version, labels)
    if system:
        labels_[syspackages.LABEL] = " ".join(syspackages.names_of(system_packages))
    pool = CompilePool()
    side = ThreadPoolExecutor(1, thread_name_prefix="ociforge-bytecode")
    checks = ThreadPoolExecutor(1, thread_name_prefix="ociforge-check")
    fetched: dict[Target, Sequence[Path]] = {}
    try:
        # the base's part of the check, while the resolver works (not with a registry cache,
        # where the check is most often remembered and reads no base layer)
        if check_libraries and memo is None:
            for base_img, _name in bases.values():
                checks.submit(cachestep.scan_base, base_img)
        locks, fetched = _resolve_and_fetch(
            all_reqs, targets, lock, offline, own, bytecode, pool, recalled, gpu is None,
            lazy=memo is not None,
        )  # fmt: skip
        targets, locks, fetched, taken = _take_variants(targets, locks, fetched)
        if taken is not None and package_dir(model) is None:  # model.json says which variant
            packaged.files = with_build_info(packaged.files, gpu=taken)
            own.model = write_layer(layers.model_entries(packaged.files), store, compression)
        images, report = [], {}
        for p, target in targets.items():
            sys_layer = (
                syspackages.system_layer(system[p], store, compression, epoch)
                if p in system
                else None
            )
            base_img, base_name = bases[p]
            # the library check reads the wheels while their layers are written (its own thread);
            # its failure is raised before the image is made, so nothing reaches the destination
            checked = None
            if check_libraries:
                checked = checks.submit(
                    cachestep.check_libraries,
                    target, locks[target], fetched[target], base_img, own.roots, offline=offline,
                    provided=sys_layer.provided if sys_layer is not None else None,
                    store=store, memo=memo,
                )  # fmt: skip
            named = _platform_layers(
                target, locks[target], fetched[target], own, store, compression, bytecode,
                offline, pool, side,
            )  # fmt: skip
            if sys_layer is not None:  # directly above the base
                named.insert(0, (sys_layer.history, sys_layer.layer))
            if checked is not None:
                checked.result()
            images.append(
                _platform_image(
                    base_img,
                    base_name,
                    target,
                    named,
                    labels_,
                    epoch,
                    store,
                    grpc,
                    source=memo.source(store) if memo is not None else None,
                )  # fmt: skip
            )
            report[str(p)] = [
                {"digest": layer.digest, "size": layer.size, "what": n}
                | ({"files": own.code_files} if layer is own.code else {})
                for n, layer in named
            ]
    except BaseException:
        for files in fetched.values():  # downloads not started yet are not needed now
            if isinstance(files, LazyWheels):
                files.cancel()
        raise
    finally:
        side.shutdown(wait=True)
        checks.shutdown(wait=True)
        pool.close()
        attach(store, None)
    index = make_index(images, annotations=_index_annotations(labels_, epoch))
    written = write_to(index, to, **registry_opts)
    if memo is not None:  # after the image: an entry's blobs are there before the entry
        memo.publish()
    supplied = supply_chain.attach_all(
        to=to, index=index, images=images, bases=bases, targets=targets, locks=locks,
        report=report, base_arg=base, python=python, host_python=host_python(), name=name,
        version=version, epoch=epoch, fmt=sbom_fmt, key=key, registry_opts=registry_opts,
        system=system,
    )  # fmt: skip
    result = BuildResult(
        reference=written.reference,
        digest=written.digest,
        platforms=plats,
        layers=report,
        size=_stored_size(images),
        image=index,
        requirements=all_reqs,
        locks=locks,
        written=written,
        sboms=supplied.sboms,
        signed=supplied.signed,
    )
    if verify:
        verify_images(result, images, test_sample, packaged.expected)
    return result


# ---------------------------------------------------------------------------------------------
# The steps, in the order build() takes them


def _check_inputs(
    platforms, compression: str, to: str, offline: bool, lock, base, python, gpu,
    system_packages=None,
) -> list[Platform]:  # fmt: skip
    """Everything that can be refused before any work: platforms, compression, the destination,
    and (offline) every input the caches must hold, in one list of what is missing."""
    plats = parse_platforms(list(platforms))
    if not plats:
        raise InvalidInput("build: no platforms given")
    if compression not in ("gzip", "zstd", "none"):
        raise InvalidInput(f"unknown compression {compression!r} (gzip, zstd or none)")
    check_writable(to)
    if offline:
        preflight(plats, lock=lock, base=base, python=python or host_python(), gpu=gpu,
                  system_packages=system_packages)  # fmt: skip
    return plats


@dataclass
class Packaged:
    """The model as the image carries it: its package files, the user's modules beside it, and
    the requirements it needs."""

    files: dict[str, bytes]
    user_code: list[UserCode]
    requirements: list[str]
    expected: Any = None  # the local test's answer to the test sample


def _package(
    model: Any,
    requirements,
    batch_size: int | None,
    card: dict,
    test_sample: Any,
    plats: list[Platform],
    gpu: str | None,
    epoch: int,
) -> Packaged:
    """Test the model on the sample, pickle it (or read a package folder as it is), and find its
    own modules and, with ``requirements="auto"``, the distributions it imports."""
    packaged = package_dir(model)
    expected = None
    if test_sample is not None and packaged is None:
        try:
            expected = test(model, test_sample, batch_size=batch_size, metadata=card)
        except local.LocalTestError as e:
            raise BuildError(f"the model's test on the sample failed ({e}); not building") from None
    user_code: list[UserCode] = []
    if packaged is not None:  # a serialized model (e.g. from a bundle): its bytes as they are
        pkg, user_code = read_package(packaged)
    else:
        build_info = {
            "created": rfc3339(epoch),
            "platforms": [str(p) for p in plats],
            "gpu": gpu or "cpu",
        }
        pkg = package_model(model, batch_size, card, build_info)
    if requirements == "auto":
        reqs, found_code = auto_requirements(pkg["model.pkl"])
        user_code = user_code if packaged is not None else found_code
        print("requirements='auto' resolved to: " + (", ".join(reqs) or "(none)"), file=sys.stderr)
    else:
        reqs = requirement_list(requirements)
        if packaged is None:
            user_code, _third = classify(referenced_modules(pkg["model.pkl"]))
    return Packaged(pkg, user_code, reqs, expected)


@dataclass
class OwnLayers:
    """The layers every platform shares (runtime, code, artifacts, model), and what the bytecode
    step needs to know of the runtime's and the user's sources."""

    runtime: Layer
    code: Layer | None
    code_names: list[str]
    code_files: list[str]  # what the code layer holds, below the code folder
    artifacts: list[tuple[str, Layer]]
    model: Layer
    own_files: dict[str, Source]  # the runtime's and the user's modules, by image path
    roots: list[str]  # where the startup imports begin
    code_hash: str  # a key over the runtime's and the user's sources


def _own_layers(
    packaged: Packaged, files: Mapping[str, str] | None, store: BlobStore, compression: str
) -> OwnLayers:
    runtime_entries = layers.runtime_entries()
    code_entries = layers.code_entries(packaged.user_code)
    runtime = memoized(  # a fresh machine finds it in the registry cache
        store,
        layers.entries_key(runtime_entries, compression),
        lambda: write_layer(runtime_entries, store, compression),
    )
    code = write_layer(code_entries, store, compression) if code_entries else None
    artifacts = layers.artifact_layers(files, store, compression)
    model_layer = write_layer(layers.model_entries(packaged.files), store, compression)
    own = runtime_entries + code_entries
    own_files = entry_sources(own)
    return OwnLayers(
        runtime=runtime,
        code=code,
        code_names=[u.name for u in packaged.user_code],
        code_files=layers.listing(code_entries, CODE_DIR),
        artifacts=artifacts,
        model=model_layer,
        own_files=own_files,
        roots=layers.startup_roots(own_files, startup_imports(packaged.files)),
        code_hash=layers.entries_key(own, compression),
    )


def _resolve_and_fetch(
    reqs: list[str],
    targets: dict[Platform, Target],
    lock_path,
    offline: bool,
    own: OwnLayers,
    bytecode: bool | None,
    pool: CompilePool,
    recalled: dict[Target, Lock] | None = None,
    infer_variant: bool = False,
    lazy: bool = False,
) -> tuple[dict[Target, Lock], dict[Target, Sequence[Path]]]:
    """A lock per target (from the lock file, remembered (``recalled``, offline), or resolved)
    and its wheels (fetched, or coming: :func:`_wheel_files`). The bytecode of the startup
    closure gets a head start from this Python's packages meanwhile. (Going on with it while the
    wheels download behind the layers made the cold build slower: it took the layers' CPU.)"""
    resolves = (
        lock_path is None
        and not offline
        and not remembered(reqs, list(targets.values()), resolve_options())
    )
    warm = layers.start_prewarm(targets, bytecode, own.own_files, own.roots, pool, resolves)
    try:
        locks = recalled or _locks(reqs, list(targets.values()), lock_path, offline, infer_variant)
        # downloading waits on the network too: the head start goes on meanwhile
        fetched = _wheel_files({t: locks[t] for t in targets.values()}, offline, lazy)
    finally:
        pool.stop_optional()
        if warm is not None:
            warm.join()
    return locks, fetched


def _wheel_files(
    locks: dict[Target, Lock], offline: bool, on_demand: bool
) -> dict[Target, Sequence[Path]]:
    """Each target's wheel files. Offline: all verified in the cache now, so a missing or rotten
    wheel is a clear error before any layer. ``on_demand`` (a registry cache): each wheel fetched
    when something opens it (a layer found in the cache needs none). Else all fetched in the
    background, biggest first, and each wheel layer starts as soon as its own wheels are there
    (the cold build's download no longer comes before every layer)."""
    if offline:
        return {t: fetch(lk, offline=True) for t, lk in locks.items()}
    if on_demand:
        return {t: LazyWheels(lk.packages, fetch) for t, lk in locks.items()}
    every = [w for lk in locks.values() for w in lk.packages]  # the order fetch's errors follow
    first = [w for lk in locks.values() for w in sorted(lk.packages, key=lambda w: -(w.size or 0))]
    ahead = Fetching(every, first=first)
    return {t: LazyWheels(lk.packages, ahead.paths, ahead.cancel) for t, lk in locks.items()}


def _locks(
    reqs: list[str], targets: list[Target], lock_path, offline: bool, infer_variant: bool = False
) -> dict[Target, Lock]:
    if lock_path is not None:
        locks = read_lockfile(lock_path)
        return {t: find_lock(locks, t, infer_variant) for t in targets}
    if offline:
        raise BuildError(
            "offline=True needs a lock file: run `ociforge fetch` (or `ociforge lock`) on a "
            "connected machine and pass its lock"
        )
    return resolve(reqs, targets, resolve_options(infer_variant))


def _take_variants(
    targets: dict[Platform, Target],
    locks: dict[Target, Lock],
    fetched: dict[Target, list[Path]],
) -> tuple[dict[Platform, Target], dict[Target, Lock], dict[Target, list[Path]], str | None]:
    """With no ``gpu`` named, each platform builds the variant its lock holds (a resolution of
    CUDA builds means CUDA was asked for), said in one line on stderr; the CUDA variant taken,
    or None."""
    taken = None
    new_targets, new_locks, new_fetched = {}, {}, {}
    for p, t in targets.items():
        lk = locks[t]
        note = variant_note(t, lk)
        if note:
            print(note, file=sys.stderr)
            taken = lk.target.variant
        nt = replace(t, variant=lk.target.variant)  # this base's interpreter and paths
        new_targets[p], new_locks[nt], new_fetched[nt] = nt, lk, fetched[t]
    return new_targets, new_locks, new_fetched, taken


def _platform_layers(
    target: Target,
    lock: Lock,
    wheel_files: list[Path],
    own: OwnLayers,
    store: BlobStore,
    compression: str,
    bytecode: bool | None,
    offline: bool,
    pool: CompilePool,
    side: ThreadPoolExecutor,
) -> list[tuple[str, Layer]]:
    """The layers above one platform's base, each with the history line that says what it is."""
    compile_ = can_compile_for(target) if bytecode is None else bytecode
    if compile_ and not can_compile_for(target):
        raise BuildError(
            f"bytecode=True, but this is Python {host_python()} and the image has Python "
            f"{target.python}: build with that Python or bytecode=None"
        )
    # the bytecode compiles in worker processes while the wheel layers compress here
    pycs: Future | None = (
        side.submit(
            layers.startup_bytecode_layer,
            target,
            lock,
            wheel_files,
            own.own_files,
            own.roots,
            own.code_hash,
            store,
            compression,
            pool,
        )
        if compile_
        else None
    )
    wheels = wheel_layers(lock, target, store, compression, offline=offline, paths=wheel_files)
    bytecode_layer = pycs.result() if pycs is not None else None
    named: list[tuple[str, Layer]] = [
        (f"wheels {w.descriptor.annotations.get('org.ociforge.wheels', '')}", w) for w in wheels
    ]
    if bytecode_layer is not None:
        named.append(("bytecode of the modules loaded at start", bytecode_layer))
    named.append(("ociforge runtime", own.runtime))
    if own.code is not None:
        named.append(("model code: " + ", ".join(own.code_names), own.code))
    named.extend((f"artifact {rel}", layer) for rel, layer in own.artifacts)
    named.append(("model", own.model))
    return named


def _platform_image(
    base: Image,
    base_name: str,
    target: Target,
    named: list[tuple[str, Layer]],
    labels_: dict[str, str],
    epoch: int,
    store: BlobStore,
    grpc: bool = False,
    source=None,
) -> Image:
    """One platform's image: its layers appended on its base, with the runtime's config."""
    changes = config.runtime_config(base, target, labels_)
    if grpc:
        changes = replace(
            changes,
            env={**(changes.env or {}), "OCIFORGE_GRPC": "1", "GRPC_PORT": str(GRPC_PORT)},
            exposed_ports=[*(changes.exposed_ports or []), f"{GRPC_PORT}/tcp"],
        )
    return append(
        base,
        [layer for _n, layer in named],
        source or store_source(store),
        changes=changes,
        history=[n for n, _l in named],
        annotations=config.annotations(labels_),
        created=epoch,
        store=store,
        base_name=recorded_name(base_name),  # a registry reference; never a local path
    )


def _index_annotations(labels_: dict[str, str], epoch: int) -> dict[str, str]:
    out = config.annotations(labels_)
    out[f"{ANNOTATION_PREFIX}created"] = rfc3339(epoch)
    return out


def _stored_size(images: list[Image]) -> int:
    """Stored bytes of everything the images reference, each blob counted once."""
    seen: dict[str, int] = {}
    for img in images:
        for d in img.blobs():
            seen[d.digest] = d.size
    return sum(seen.values())
